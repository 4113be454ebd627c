"""Registry of distillation losses: ``DISTILL.LOSSES[i].NAME`` -> class (see ``base.py`` for the interface)."""
from pcdet.utils.registry import lookup, make_registry

from .base import DistillLoss  # noqa: F401  (base class, for subclassing)
from .fg_mimic_loss import FGMimicLoss
from .fitnet_loss import FitNetLoss
from .logit_kd_loss import LogitKDLoss
from .pointdistiller_loss import PointDistillerLoss

__all__ = make_registry([
    ('PointDistillerLoss', PointDistillerLoss),
    ('FitNetLoss', FitNetLoss),
    ('LogitKDLoss', LogitKDLoss),
    ('FGMimicLoss', FGMimicLoss),
], what='distillation loss registry')


def get_loss_class(name, where):
    """Look a loss up by name; ``KeyError`` naming ``where`` (``DISTILL.LOSSES[i]``) and listing the valid names."""
    return lookup(__all__, name, 'distillation loss', cfg_key=f'{where} NAME')

