"""Build, load (strictly) and freeze the teacher detector of a distillation experiment.

The teacher is an ordinary detector described by its own YAML (``TEACHER.CFG_FILE``). Where that path is
relative it is looked up, in order, in: the ``cfg_dir`` argument of ``build_distiller`` (the experiment YAML's
directory; ``tools/train.py`` passes it), ``TEACHER.CFG_DIR`` in the config, ``ROOT_DIR/tools/cfgs/
<EXP_GROUP_PATH>`` (set by OpenPCDet-style train scripts), then where every config is looked up (the working
directory, the repository root, ``tools/``: ``pcdet.config.find_config_file``).
"""
import os

from torch.nn.modules.batchnorm import _BatchNorm

TEACHER_DEFAULTS = {'CFG_FILE': None, 'CKPT': None, 'MODE': 'eval', 'BN': 'eval', 'EARLY_STOP': True,
                    'ALLOW_RANDOM_INIT': False, 'CFG_DIR': None}


def resolve_teacher_cfg(cfg, cfg_dir=None):
    """Absolute path of ``TEACHER.CFG_FILE`` (see module docstring; ``pcdet.config.find_config_file``)."""
    from pcdet.config import find_config_file
    rel = cfg.TEACHER.get('CFG_FILE')
    if not rel:
        raise ValueError('TEACHER.CFG_FILE is missing in the experiment config')
    extra = [cfg.TEACHER.get('CFG_DIR')]
    if cfg.get('ROOT_DIR') is not None and cfg.get('EXP_GROUP_PATH'):
        extra.append(os.path.join(str(cfg.ROOT_DIR), 'tools', 'cfgs', str(cfg.EXP_GROUP_PATH)))
    return str(find_config_file(rel, cfg_dir, extra, what='TEACHER.CFG_FILE (pass cfg_dir= to build_distiller '
                                                          'or set TEACHER.CFG_DIR)'))


def load_teacher_checkpoint(teacher, path, logger=None, allow_unsafe=False):
    """Load ``path`` into ``teacher`` strictly, through the one checkpoint loader
    (``pcdet.utils.checkpoint_utils.load_model_state``: weights-only, DDP prefix, spconv 1.x layouts).

    Raises ``CheckpointMismatchError`` listing missing, unexpected and mis-shaped keys (a checkpoint of another
    architecture or width); logs ``teacher loaded X/X tensors from <path>`` on success.
    """
    from pcdet.utils.checkpoint_utils import CheckpointMismatchError, load_model_state
    try:
        match = load_model_state(teacher, str(path), strict=True, logger=logger, allow_unsafe=allow_unsafe)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f'teacher checkpoint: {err} (the architecture from TEACHER.CFG_FILE)') \
            from None
    if logger is not None:
        logger.info(f'teacher loaded {len(match.fitting)}/{len(match.model_state)} tensors from {path}')
    return len(match.fitting)


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
