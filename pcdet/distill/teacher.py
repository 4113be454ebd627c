"""Build, load (strictly) and freeze the teacher detector of a distillation experiment.

The teacher is an ordinary detector described by its own YAML (``TEACHER.CFG_FILE``). Where that path is
relative it is looked up, in order, in: the ``cfg_dir`` argument of ``build_distiller`` (the experiment YAML's
directory; ``tools/train.py`` passes it), ``TEACHER.CFG_DIR`` in the config, ``ROOT_DIR/tools/cfgs/
<EXP_GROUP_PATH>`` (set by OpenPCDet-style train scripts), then the working directory.
"""
import os

import torch
from torch.nn.modules.batchnorm import _BatchNorm

TEACHER_DEFAULTS = {'CFG_FILE': None, 'CKPT': None, 'MODE': 'eval', 'BN': 'eval', 'EARLY_STOP': True,
                    'ALLOW_RANDOM_INIT': False, 'CFG_DIR': None}


def resolve_teacher_cfg(cfg, cfg_dir=None):
    """Absolute path of ``TEACHER.CFG_FILE`` (see module docstring); ``FileNotFoundError`` lists the tries."""
    rel = cfg.TEACHER.get('CFG_FILE')
    if not rel:
        raise ValueError('TEACHER.CFG_FILE is missing in the experiment config')
    if os.path.isabs(rel):
        candidates = [rel]
    else:
        dirs = [cfg_dir, cfg.TEACHER.get('CFG_DIR')]
        if cfg.get('ROOT_DIR') is not None and cfg.get('EXP_GROUP_PATH'):
            dirs.append(os.path.join(str(cfg.ROOT_DIR), 'tools', 'cfgs', str(cfg.EXP_GROUP_PATH)))
        dirs.append(os.getcwd())
        candidates = [os.path.join(str(d), rel) for d in dirs if d]
    for path in candidates:
        if os.path.isfile(path):
            return os.path.abspath(path)
    raise FileNotFoundError(f'TEACHER.CFG_FILE {rel!r} not found; tried {candidates} (pass cfg_dir= to '
                            'build_distiller or set TEACHER.CFG_DIR)')


def _state_dict_of(checkpoint, path):
    if isinstance(checkpoint, dict) and 'model_state' in checkpoint:
        state = checkpoint['model_state']
    elif isinstance(checkpoint, dict) and all(torch.is_tensor(v) for v in checkpoint.values()):
        state = checkpoint
    else:
        raise ValueError(f'teacher checkpoint {path}: no "model_state" entry and not a plain state_dict')
    # Checkpoints written from a DDP-wrapped model carry a "module." prefix.
    return {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state.items()}


def load_teacher_checkpoint(teacher, path, logger=None):
    """Load ``path`` into ``teacher`` strictly.

    Raises ``RuntimeError`` listing missing, unexpected and mis-shaped keys (a checkpoint of another
    architecture or width); logs ``teacher loaded X/X tensors from <path>`` on success.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'teacher checkpoint not found: {path}')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001  legacy OpenPCDet checkpoints pickle numpy scalars
        if logger is not None:
            logger.warning(f'teacher checkpoint {path} is not weights_only-loadable ({type(err).__name__}); '
                           'loading it with full unpickling (trust the source of this file)')
        checkpoint = torch.load(path, map_location='cpu', weights_only=False)
    state = _state_dict_of(checkpoint, path)
    own = teacher.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mis_shaped = sorted(f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                        for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or mis_shaped:
        def head(items):
            return f'{len(items)} {items[:20]}' + (' ...' if len(items) > 20 else '')
        raise RuntimeError(f'teacher checkpoint {path} does not match the teacher architecture from '
                           f'TEACHER.CFG_FILE: missing keys {head(missing)}; unexpected keys {head(unexpected)}; '
                           f'mis-shaped keys {head(mis_shaped)}')
    teacher.load_state_dict(state, strict=True)
    if logger is not None:
        logger.info(f'teacher loaded {len(state)}/{len(own)} tensors from {path}')
    return len(state)


def set_teacher_mode(teacher, mode, bn):
    """Put the teacher in ``mode`` ('eval' | 'train') with its BatchNorm layers in ``bn`` ('eval' | 'train')."""
    teacher.train(mode == 'train')
    for module in teacher.modules():
        if isinstance(module, _BatchNorm):
            module.train(bn == 'train')


def freeze(teacher):
    """No teacher parameter takes gradients (so nothing can update it, whatever optimiser sees it)."""
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def check_same_data(student_cfg, teacher_cfg):
    """The teacher must see the student's voxels: compare the geometry keys of both DATA_CONFIGs.

    TODO(distill): a teacher with its own voxelisation (different range / voxel size) needs a second
    voxelisation of the raw ``points`` in the Distiller (SparseKD's ``DIFF_VOXEL``); until then this raises.
    """
    def geometry(cfg):
        data = cfg.get('DATA_CONFIG', {}) or {}
        procs = [p for p in (data.get('DATA_PROCESSOR') or []) if p.get('NAME') == 'transform_points_to_voxels']
        voxel = [list(p.get('VOXEL_SIZE', [])) for p in procs]
        return list(data.get('POINT_CLOUD_RANGE', []) or []), voxel
    if geometry(student_cfg) != geometry(teacher_cfg):
        raise NotImplementedError(
            f'teacher DATA_CONFIG geometry {geometry(teacher_cfg)} differs from the student\'s '
            f'{geometry(student_cfg)}; a teacher with its own voxelisation is not supported yet')
