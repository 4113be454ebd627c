"""Record named features of a detector during its forward pass.

Names are ``batch_dict`` keys (``pillar_features``, ``spatial_features_2d``, ...; an optional ``batch_dict:``
prefix is accepted) or ``module:<dotted.path>`` (the output of ``model.get_submodule(path)``, captured with a
forward hook: ``module:backbone_2d.blocks.0``, ``module:dense_head.conv_cls``). Module paths are checked at build
time against ``named_modules()``; batch keys are checked on the first batch (they only exist once the modules
ran). Both errors list the available names.
"""
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

MODULE_PREFIX = 'module:'
BATCH_PREFIX = 'batch_dict:'


def canonical_name(name):
    """``batch_dict:x`` -> ``x``; other names unchanged."""
    return name[len(BATCH_PREFIX):] if name.startswith(BATCH_PREFIX) else name


class FeatureRecorder:
    """Captures the named features of one model.

    Args:
        model: the detector (nn.Module).
        names: iterable of feature names (see module docstring).
        side: 'student' or 'teacher' (error messages).
    """

    def __init__(self, model, names, side):
        self.side = side
        names = sorted({canonical_name(n) for n in names})
        self.keys = [n for n in names if not n.startswith(MODULE_PREFIX)]
        self.paths = [n[len(MODULE_PREFIX):] for n in names if n.startswith(MODULE_PREFIX)]
        modules = dict(model.named_modules())
        missing = [p for p in self.paths if p not in modules or p == '']
        if missing:
            raise KeyError(f'{side} model has no module {missing}; available module paths: '
                           f'{[p for p in modules if p]}')
        self._outputs = {}
        self._active = False
        self._handles = [modules[p].register_forward_hook(self._hook(p)) for p in self.paths]

    def _hook(self, path):
        def hook(module, inputs, output):
            if self._active:
                self._outputs[MODULE_PREFIX + path] = output
        return hook

    def start(self):
        """Clear previous records and capture module outputs until ``collect``."""
        self._outputs = {}
        self._active = True

    def complete(self, batch_dict):
        """True when every named feature has been produced (used to stop the teacher early)."""
        return all(k in batch_dict for k in self.keys) and len(self._outputs) == len(self.paths)

    def collect(self, batch_dict, detach=False):
        """Stop capturing and return {name: tensor}; raises ``KeyError`` listing what exists when one is absent."""
        self._active = False
        out = {}
        for key in self.keys:
            if key not in batch_dict:
                raise KeyError(f'{self.side} batch_dict has no key {key!r} after the forward pass; available keys: '
                               f'{sorted(batch_dict)}')
            out[key] = batch_dict[key]
        for path in self.paths:
            name = MODULE_PREFIX + path
            if name not in self._outputs:
                raise KeyError(f'{self.side} module {path!r} did not run during the forward pass')
            out[name] = self._outputs[name]
        self._outputs = {}
        if detach:
            out = {k: (v.detach() if hasattr(v, 'detach') else v) for k, v in out.items()}
        return out

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _module_out_channels(module):
    for sub in reversed(list(module.modules())):
        if isinstance(sub, _BatchNorm):
            return sub.num_features
        if isinstance(sub, nn.Linear):
            return sub.out_features
        if isinstance(getattr(sub, 'out_channels', None), int):   # nn.ConvNd and spconv convolutions
            return sub.out_channels
    return None


def infer_channels(model, name, side):
    """Channel count of a named feature, read from the model (no forward pass).

    ``module:<path>``: the last BatchNorm / Linear / conv inside that module. Batch keys: the OpenPCDet
    attributes of the producing module (``vfe.get_output_feature_dim()``, ``map_to_bev_module.num_bev_features``,
    ``backbone_2d.num_bev_features``, ``backbone_3d.num_point_features`` for ``encoded_spconv_tensor`` and
    PointNet2MSG's ``point_features``). Raises ``ValueError`` asking for
    ``STUDENT_CHANNELS`` / ``TEACHER_CHANNELS`` when it cannot tell.
    """
    name = canonical_name(name)
    found = None
    if name.startswith(MODULE_PREFIX):
        found = _module_out_channels(model.get_submodule(name[len(MODULE_PREFIX):]))
    elif name in ('pillar_features', 'voxel_features') and getattr(model, 'vfe', None) is not None:
        found = model.vfe.get_output_feature_dim()
    elif name == 'spatial_features' and getattr(model, 'map_to_bev_module', None) is not None:
        found = model.map_to_bev_module.num_bev_features
    elif name == 'spatial_features_2d' and getattr(model, 'backbone_2d', None) is not None:
        found = model.backbone_2d.num_bev_features
    elif name in ('encoded_spconv_tensor', 'point_features') and getattr(model, 'backbone_3d', None) is not None:
        found = model.backbone_3d.num_point_features   # VoxelBackBone8x's output / PointNet2MSG's FP output
    if found is None:
        raise ValueError(f'cannot infer the channel count of {side} feature {name!r}; set '
                         f'{side.upper()}_CHANNELS in its loss block')
    return int(found)
