"""Datasets registry and ``build_dataloader`` (OpenPCDet API).

``__all__`` maps ``DATA_CONFIG.DATASET`` names to classes; an unknown name raises ``KeyError`` listing them.
"""
from functools import partial

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from ..utils import common_utils
from .dataset import DatasetTemplate
from .kitti.kitti_dataset import KittiDataset

__all__ = {
    'DatasetTemplate': DatasetTemplate,
    'KittiDataset': KittiDataset,
}


def build_dataloader(dataset_cfg, class_names, batch_size, dist, root_path=None, workers=4, seed=None, logger=None,
                     training=True, merge_all_iters_to_one_epoch=False, total_epochs=0):
    """Build ``(dataset, dataloader, sampler)``.

    Args:
        dataset_cfg: ``DATA_CONFIG``; ``DATASET`` names the class in ``__all__``.
        batch_size: per process. dist: use a ``DistributedSampler`` (shuffled in training, in order for eval).
        workers: DataLoader worker processes. seed: worker ``i`` is seeded ``seed + i``, and the training shuffle
            draws from its own generator seeded with ``seed`` (None: neither; the shuffle then draws from the global
            torch RNG). The own generator keeps the sample order of a seed independent of whatever else consumed
            the global RNG before (a distillation run builds a teacher and adapters that a plain run does not).
        merge_all_iters_to_one_epoch / total_epochs: one long epoch covering ``total_epochs`` passes.
    Returns:
        dataset, DataLoader (``collate_fn = dataset.collate_batch``), sampler (None when not distributed).
    """
    name = dataset_cfg.DATASET
    if name not in __all__:
        raise KeyError(f'DATA_CONFIG.DATASET: unknown dataset {name!r} (valid: {", ".join(sorted(__all__))})')
    dataset = __all__[name](dataset_cfg=dataset_cfg, class_names=class_names, root_path=root_path,
                            training=training, logger=logger)
    if merge_all_iters_to_one_epoch:
        dataset.merge_all_iters_to_one_epoch(merge=True, epochs=total_epochs)
    if dist:
        rank, world_size = common_utils.get_dist_info()
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=training)
    else:
        sampler = None
    shuffle = (sampler is None) and training
    generator = torch.Generator().manual_seed(seed) if shuffle and seed is not None else None
    dataloader = DataLoader(
        dataset, batch_size=batch_size, pin_memory=torch.cuda.is_available(), num_workers=workers,
        shuffle=shuffle, collate_fn=dataset.collate_batch, drop_last=False, sampler=sampler, generator=generator,
        timeout=0, worker_init_fn=partial(common_utils.worker_init_fn, seed=seed))
    return dataset, dataloader, sampler
