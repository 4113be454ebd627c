"""Training-time data augmentation: ``DataAugmentor`` (queue), ``DataBaseSampler`` (gt_sampling)."""
from .data_augmentor import DataAugmentor
from .database_sampler import DataBaseSampler

__all__ = {'DataAugmentor': DataAugmentor, 'DataBaseSampler': DataBaseSampler}
