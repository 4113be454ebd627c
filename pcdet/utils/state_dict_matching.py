"""Compare a stored state dict with a model's: key differences, shape differences, spconv layout changes.

Sparse-conv weights are transposed between spconv layouts when the stored shape differs from the model's:
spconv 1.x ``(kz, ky, kx, Cin, Cout)``, 2.x native ``(kz, ky, kx, Cout, Cin)``, 2.x implicit-gemm / this
toolbox ``(Cout, kz, ky, kx, Cin)``. With Cin == Cout the 1.x and native layouts have the same shape; 1.x is
assumed (OpenPCDet's model-zoo checkpoints were saved with spconv 1.x).

Nothing here touches the model's parameters: callers decide from the result whether to load.
"""
import sys

# permutations of a stored 5-D weight tried in order when its shape differs from the model's
SPCONV_PERMUTATIONS = (
    (4, 0, 1, 2, 3),  # 1.x (k, k, k, Cin, Cout)  -> (Cout, k, k, k, Cin)
    (3, 0, 1, 2, 4),  # native (k, k, k, Cout, Cin) -> (Cout, k, k, k, Cin)
    (0, 1, 2, 4, 3),  # 1.x -> native (model built with the native layout)
    (1, 2, 3, 0, 4),  # (Cout, k, k, k, Cin) -> native
)
DDP_PREFIX = 'module.'


def strip_ddp_prefix(state):
    """State dict without the ``module.`` prefix that a DDP-wrapped model's ``state_dict()`` carries."""
    if state and all(k.startswith(DDP_PREFIX) for k in state):
        return type(state)((k[len(DDP_PREFIX):], v) for k, v in state.items())
    return state


def spconv_weight_keys(model):
    """State-dict keys of sparse-conv weights; empty without importing spconv when it was never imported."""
    if 'spconv' not in sys.modules:  # a model with sparse convs has imported spconv while being built
        return set()
    from pcdet.utils.spconv_utils import find_all_spconv_keys
    return find_all_spconv_keys(model)


def convert_spconv_weight(val, target_shape):
    """``val`` permuted into ``target_shape`` by one of the known spconv layout changes, or None."""
    if val.dim() != 5 or len(target_shape) != 5:
        return None
    for perm in SPCONV_PERMUTATIONS:
        if tuple(val.shape[i] for i in perm) == tuple(target_shape):
            return val.permute(*perm).contiguous()
    return None


class StateDictMatch:
    """How a stored state dict fits a model.

    Attributes:
        model_state: the model's current state dict.
        fitting: ``{key: tensor}`` stored tensors with the model's shape (spconv weights already converted).
        missing: model keys absent from the file. unexpected: stored keys absent from the model.
        mis_shaped: ``[(key, stored shape, model shape)]``.
    """

    def __init__(self, model, stored_state):
        self.model_state = model.state_dict()
        spconv_keys = spconv_weight_keys(model)
        self.fitting, self.mis_shaped = {}, []
        for key, val in stored_state.items():
            if key not in self.model_state:
                continue
            target_shape = self.model_state[key].shape
            if key in spconv_keys and val.shape != target_shape:
                converted = convert_spconv_weight(val, target_shape)
                val = converted if converted is not None else val
            if val.shape == target_shape:
                self.fitting[key] = val
            else:
                self.mis_shaped.append((key, tuple(val.shape), tuple(target_shape)))
        self.missing = [k for k in self.model_state if k not in stored_state]
        self.unexpected = [k for k in stored_state if k not in self.model_state]

    @property
    def exact(self):
        return not (self.missing or self.unexpected or self.mis_shaped)

    def describe(self, what, limit=20):
        """Multi-line message: ``what`` does not match, then each kind of difference (first ``limit`` keys)."""
        def head(items):
            return f'{items[:limit]}' + (f' ... ({len(items) - limit} more)' if len(items) > limit else '')
        lines = [f'{what} does not match the model ({len(self.fitting)}/{len(self.model_state)} tensors fit)']
        if self.missing:
            lines.append(f'  missing keys ({len(self.missing)}): {head(self.missing)}')
        if self.unexpected:
            lines.append(f'  unexpected keys ({len(self.unexpected)}): {head(self.unexpected)}')
        if self.mis_shaped:
            shown = [f'{k} (checkpoint {s}, model {m})' for k, s, m in self.mis_shaped]
            lines.append(f'  mis-shaped keys ({len(shown)}): ' + ', '.join(shown[:limit])
                         + (f' ... ({len(shown) - limit} more)' if len(shown) > limit else ''))
        return '\n'.join(lines)
