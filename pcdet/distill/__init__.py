"""Knowledge distillation for voxel detectors: ``build_distiller`` turns an experiment YAML into a Distiller.

Experiment YAML (see docs/ARCHITECTURE.md)::

    _BASE_CONFIG_: pointpillar_4x.yaml     # the student
    TEACHER: {CFG_FILE: pointpillar.yaml, CKPT: null, MODE: eval, BN: eval}
    DISTILL:
      LOSSES:
        - {NAME: PointDistillerLoss, WEIGHT: 2.0, STUDENT_FEATURE: pillar_features, ...}

TEACHER keys: CFG_FILE (relative -> see ``teacher.resolve_teacher_cfg``), CKPT (``teacher_ckpt`` argument /
``--teacher_ckpt`` overrides), MODE / BN ('eval' default: BN statistics frozen), EARLY_STOP (True: run the teacher
only up to its last recorded feature), ALLOW_RANDOM_INIT (False: a teacher without checkpoint is an error),
CFG_DIR (directory for a relative CFG_FILE when ``cfg_dir`` is not passed).
Each loss block: NAME (registry in ``losses``), optional TAG (name in logs / ``Distiller.losses``; default NAME,
suffixed ``_<i>`` when repeated), WEIGHT, and the loss's own keys (unknown keys are errors).
"""
import copy
import json


def _log(logger, msg):
    if logger is not None:
        logger.info(msg)


def build_distiller(cfg, student, logger, teacher_ckpt=None, cfg_dir=None, unsafe_load=False):
    """Build the Distiller of an experiment config.

    Args:
        cfg: EasyDict of the experiment YAML (student MODEL / DATA_CONFIG plus TEACHER and DISTILL blocks).
        student: the built student detector (``build_network``); its ``dataset`` provides the geometry.
        logger: logging.Logger (or None).
        teacher_ckpt: path overriding ``TEACHER.CKPT``.
        cfg_dir: directory of the experiment YAML (for a relative ``TEACHER.CFG_FILE``).
        unsafe_load: read a teacher checkpoint that needs globals outside the allow-list (``--unsafe_load``).

    Returns:
        Distiller with the frozen teacher on the student's device.
    """
    from easydict import EasyDict

    from pcdet.config import cfg_from_yaml_file
    from pcdet.models import build_network

    from .teacher import check_same_data, freeze, load_teacher_checkpoint, resolve_teacher_cfg

    if 'TEACHER' not in cfg or 'DISTILL' not in cfg:
        raise KeyError('build_distiller: the experiment config needs TEACHER and DISTILL blocks')
    tcfg_block = teacher_settings(cfg)
    distill_losses(cfg)  # before the teacher is built: a config error shows at once

    # Teacher: own config, same dataset geometry, strict checkpoint, frozen.
    teacher_cfg_path = resolve_teacher_cfg(cfg, cfg_dir)
    teacher_cfg = EasyDict()
    cfg_from_yaml_file(teacher_cfg_path, teacher_cfg)
    check_same_data(cfg, teacher_cfg)
    dataset = getattr(student, 'dataset', None)
    if dataset is None:
        raise ValueError('build_distiller: the student has no .dataset (built without build_network?)')
    teacher = build_network(model_cfg=teacher_cfg.MODEL, num_class=len(teacher_cfg.CLASS_NAMES), dataset=dataset)
    ckpt = teacher_ckpt or tcfg_block['CKPT']
    if ckpt:
        load_teacher_checkpoint(teacher, ckpt, logger, allow_unsafe=unsafe_load)
    elif not tcfg_block['ALLOW_RANDOM_INIT']:
        raise ValueError('no teacher checkpoint: set TEACHER.CKPT or pass --teacher_ckpt '
                         '(TEACHER.ALLOW_RANDOM_INIT: True allows a random teacher, for tests only)')
    elif logger is not None:
        logger.warning('TEACHER.ALLOW_RANDOM_INIT: the teacher has random weights')
    freeze(teacher)
    try:
        teacher.to(next(student.parameters()).device)
    except StopIteration:
        pass
    teacher_info = dict(tcfg_block, CFG_FILE=teacher_cfg_path, CKPT=ckpt)
    distiller = make_distiller(cfg, student, teacher, logger, teacher_info=teacher_info)
    return distiller


def make_distiller(cfg, student, teacher, logger=None, teacher_info=None):
    """Distiller from built models: losses of ``cfg.DISTILL.LOSSES``, feature names validated, settings logged.

    Args:
        cfg: config with ``DISTILL`` (and optionally ``TEACHER`` MODE / BN / EARLY_STOP; defaults eval / eval / True).
        student, teacher: built detectors; the teacher should already be loaded and frozen.
        teacher_info: dict logged and stored under ``resolved['TEACHER']``.
    """
    from .distiller import Distiller
    from .losses import get_loss_class
    from .recorders import infer_channels

    loss_blocks = distill_losses(cfg)
    tblock = teacher_settings(cfg)
    teacher_info = teacher_info or tblock

    def channels_of(side, name):
        return infer_channels(student if side == 'student' else teacher, name, side)

    dataset = getattr(student, 'dataset', None)
    pc_range = getattr(dataset, 'point_cloud_range', None)
    context = {'point_cloud_range': None if pc_range is None else [float(v) for v in pc_range]}
    names = [blk.get('NAME') for blk in loss_blocks]
    losses, resolved_losses = {}, []
    for i, blk in enumerate(loss_blocks):
        where = f'DISTILL.LOSSES[{i}] ({blk.get("NAME")})'
        cls = get_loss_class(blk.get('NAME'), where)
        tag = blk.get('TAG') or (blk['NAME'] if names.count(blk['NAME']) == 1 else f'{blk["NAME"]}_{i}')
        if tag in losses:
            raise KeyError(f'{where}: TAG {tag!r} used twice')
        cls.check_applies(blk, student, where)
        loss = cls(blk, where, channels_of, context)
        losses[tag] = loss
        resolved_losses.append(dict(NAME=blk['NAME'], TAG=tag, **loss.opts))
    resolved = {'TEACHER': teacher_info, 'LOSSES': resolved_losses}
    distiller = Distiller(student, teacher, losses, teacher_mode=tblock['MODE'], teacher_bn=tblock['BN'],
                          early_stop=bool(tblock['EARLY_STOP']), resolved=copy.deepcopy(resolved))
    n_adapt = sum(p.numel() for p in distiller.losses.parameters())
    _log(logger, f'distillation settings (resolved): {json.dumps(resolved, default=str)}')
    _log(logger, f'teacher: {teacher_info.get("CFG_FILE")}, mode={tblock["MODE"]}, BN={tblock["BN"]}, frozen; '
                 f'{n_adapt} adapter parameters in {len(losses)} loss(es)')
    return distiller


def teacher_settings(cfg):
    """The ``TEACHER`` block with its defaults (``teacher.TEACHER_DEFAULTS``), checked once for both builders:
    unknown keys (with the nearest valid one) and MODE / BN values are errors."""
    from pcdet.config import check_known_keys

    from .teacher import TEACHER_DEFAULTS
    block = cfg.get('TEACHER') or {}
    check_known_keys(block, TEACHER_DEFAULTS, 'TEACHER.')
    settings = dict(TEACHER_DEFAULTS, **block)
    for key in ('MODE', 'BN'):
        if settings[key] not in ('eval', 'train'):
            raise ValueError(f'TEACHER.{key}={settings[key]!r} is not one of ["eval", "train"]')
    return settings


def distill_losses(cfg):
    """``DISTILL.LOSSES`` (a non-empty list; ``DISTILL`` holds nothing else), checked once for both builders."""
    from pcdet.config import check_known_keys
    distill = cfg.get('DISTILL') or {}
    check_known_keys(distill, {'LOSSES'}, 'DISTILL.')
    if not distill.get('LOSSES'):
        raise KeyError(f'DISTILL: needs a non-empty LOSSES list (got keys {sorted(distill)})')
    return distill['LOSSES']


__all__ = ['build_distiller', 'make_distiller']
