"""Registry of distillation losses: ``DISTILL.LOSSES[i].NAME`` -> class (see ``base.py`` for the interface)."""
from .base import DistillLoss  # noqa: F401  (base class, for subclassing)
from .fg_mimic_loss import FGMimicLoss
from .fitnet_loss import FitNetLoss
from .logit_kd_loss import LogitKDLoss
from .pointdistiller_loss import PointDistillerLoss

__all__ = {
    'PointDistillerLoss': PointDistillerLoss,
    'FitNetLoss': FitNetLoss,
    'LogitKDLoss': LogitKDLoss,
    'FGMimicLoss': FGMimicLoss,
}


def get_loss_class(name, where):
    """Look a loss up by name; ``KeyError`` naming ``where`` and listing the valid names otherwise."""
    if name not in __all__:
        raise KeyError(f'{where}: unknown loss NAME {name!r}; valid names: {sorted(__all__)}')
    return __all__[name]

