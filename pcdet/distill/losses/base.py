"""Common plumbing of the distillation losses: option resolution and the loss interface.

A distillation loss is an ``nn.Module`` that owns its trainable adapters (so the optimiser and DDP see them
through ``Distiller.losses``) and computes one unweighted scalar from recorded features:

    loss(student_feats, teacher_feats, batch_dict) -> (value: 0-dim tensor, extra_tb: dict[str, float])

``student_feats`` / ``teacher_feats`` map feature names (``batch_dict`` keys or ``module:<dotted.path>``) to the
recorded tensors; teacher tensors are already detached. ``batch_dict`` is the student's batch (inputs such as
``voxel_coords``, ``voxel_num_points`` and ``gt_boxes`` are read from it). The ``Distiller`` multiplies the value
by ``WEIGHT``.
"""
import copy

import torch.nn as nn

# Keys every loss block accepts (handled by the Distiller, not by the loss itself).
COMMON_KEYS = ('NAME', 'TAG', 'WEIGHT')


def resolve_options(loss_cfg, defaults, where):
    """Merge a loss block of the experiment YAML over the loss defaults.

    Args:
        loss_cfg: dict-like, one entry of ``DISTILL.LOSSES``.
        defaults: dict of the loss-specific keys and their defaults (``None`` = derived later).
        where: text naming the block in error messages, e.g. ``DISTILL.LOSSES[0] (PointDistillerLoss)``.

    Returns:
        dict with every default key plus ``WEIGHT``; unknown keys raise ``KeyError`` listing the valid ones.
    """
    from pcdet.config import check_known_keys
    check_known_keys(loss_cfg, set(defaults) | set(COMMON_KEYS), '', context=where)
    opts = copy.deepcopy(dict(defaults))
    for key, value in loss_cfg.items():
        if key not in ('NAME', 'TAG'):
            opts[key] = copy.deepcopy(value)
    return opts


def check_choice(opts, key, choices, where):
    """Raise ``ValueError`` naming ``where`` and ``key`` when ``opts[key]`` is not one of ``choices``."""
    if opts[key] not in choices:
        raise ValueError(f'{where}: {key}={opts[key]!r} is not one of {list(choices)}')


class DistillLoss(nn.Module):
    """Base class: subclasses set the recorded feature names and implement ``forward``.

    Attributes:
        where: text naming the config block, for error messages.
        opts: fully resolved options (logged at start and stored in checkpoints).
        student_features / teacher_features: names to record on each side.
        weight: float loss weight applied by the Distiller.
    """

    DEFAULTS = {}

    def __init__(self, loss_cfg, where):
        super().__init__()
        self.where = where
        self.opts = resolve_options(loss_cfg, dict(self.DEFAULTS, WEIGHT=self.DEFAULT_WEIGHT), where)
        self.weight = float(self.opts['WEIGHT'])
        self.student_features = []
        self.teacher_features = []

    DEFAULT_WEIGHT = 1.0

    @classmethod
    def check_applies(cls, loss_cfg, student, where):
        """Raise ``ValueError`` naming the loss and the detector when this loss cannot work on ``student`` (called
        before the loss is built, so the message is about the method, not a missing channel count)."""

    def resolve_channels(self, channels_of):
        """Fill ``STUDENT_CHANNELS`` / ``TEACHER_CHANNELS`` (None in the config: inferred from the models by
        ``channels_of(side, feature name)``) and return them as ``(c_student, c_teacher)`` ints."""
        o = self.opts
        for side in ('student', 'teacher'):
            key = f'{side.upper()}_CHANNELS'
            o[key] = int(o[key] or channels_of(side, o[f'{side.upper()}_FEATURE']))
        return o['STUDENT_CHANNELS'], o['TEACHER_CHANNELS']

    def feature(self, feats, name, side):
        """Fetch a recorded feature with a clear error (recorders guarantee presence; this guards misuse)."""
        if name not in feats:
            raise KeyError(f'{self.where}: {side} feature {name!r} was not recorded; recorded: {sorted(feats)}')
        return feats[name]

    def batch_value(self, batch_dict, key):
        """Read an input of the batch (e.g. ``voxel_coords``) with an error listing the available keys."""
        if key not in batch_dict:
            raise KeyError(f'{self.where}: batch_dict has no key {key!r}; available keys: {sorted(batch_dict)}')
        return batch_dict[key]
