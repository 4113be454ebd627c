"""Small shared helpers (OpenPCDet names): numpy/torch geometry, info filtering, logging, seeding, dist info.

Geometry functions accept numpy arrays or torch tensors on any device and return the same kind; nothing here
moves data between devices.
"""
import logging
import random

import numpy as np
import torch


def check_numpy_to_torch(x):
    """Return ``(tensor, is_numpy)``; numpy input becomes a float32 CPU tensor (OpenPCDet behaviour)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x).float(), True
    return x, False


def limit_period(val, offset=0.5, period=np.pi):
    """Wrap angles into ``[-offset * period, (1 - offset) * period)``.

    Args:
        val: ndarray or tensor of angles (radians), any shape; dtype and device are kept.
        offset: 0.5 gives a range centred on 0, 0 gives ``[0, period)``.
        period: wrap period (radians).
    """
    if isinstance(val, np.ndarray) or np.isscalar(val):
        return val - np.floor(val / period + offset) * period
    return val - torch.floor(val / period + offset) * period


def rotate_points_along_z(points, angle):
    """Rotate points counter-clockwise (seen from +z) about the z axis of their own frame.

    Args:
        points: (B, N, 3 + C) ndarray or tensor; only x, y change, extra columns are copied.
        angle: (B,) angle per batch element (radians), counter-clockwise from +x.
    Returns:
        (B, N, 3 + C) of the same kind (numpy in -> numpy out as float32, OpenPCDet behaviour).
    """
    points, is_numpy = check_numpy_to_torch(points)
    angle, _ = check_numpy_to_torch(angle)
    angle = angle.to(dtype=points.dtype, device=points.device)
    cosa, sina = torch.cos(angle), torch.sin(angle)
    zeros, ones = angle.new_zeros(points.shape[0]), angle.new_ones(points.shape[0])
    # Row-vector convention: p' = p @ R with R = [[c, s, 0], [-s, c, 0], [0, 0, 1]] (the transpose of the
    # usual column-vector rotation matrix), so x' = x c - y s, y' = x s + y c.
    rot_matrix = torch.stack((
        cosa, sina, zeros,
        -sina, cosa, zeros,
        zeros, zeros, ones,
    ), dim=1).view(-1, 3, 3)
    points_rot = torch.matmul(points[:, :, 0:3], rot_matrix)
    points_rot = torch.cat((points_rot, points[:, :, 3:]), dim=-1)
    return points_rot.numpy() if is_numpy else points_rot


def mask_points_by_range(points, limit_range):
    """Boolean mask of points inside the x/y extent of ``limit_range`` (bounds inclusive; z not tested).

    Args:
        points: (N, 3 + C) ndarray or tensor, LiDAR frame.
        limit_range: [x_min, y_min, z_min, x_max, y_max, z_max].
    Returns:
        (N,) bool mask of the same kind as ``points``.
    """
    return ((points[:, 0] >= limit_range[0]) & (points[:, 0] <= limit_range[3])
            & (points[:, 1] >= limit_range[1]) & (points[:, 1] <= limit_range[4]))


def get_voxel_centers(voxel_coords, downsample_times, voxel_size, point_cloud_range):
    """Centres of voxels in the LiDAR frame.

    Args:
        voxel_coords: (N, 3) int tensor [z, y, x] (drop the batch column first).
        downsample_times: stride of the voxel grid relative to ``voxel_size``.
        voxel_size: [vx, vy, vz] metres; point_cloud_range: [x_min, y_min, z_min, x_max, y_max, z_max].
    Returns:
        (N, 3) float32 tensor [x, y, z] on the device of ``voxel_coords``.
    """
    assert voxel_coords.shape[1] == 3, f'voxel_coords must be (N, 3) [z, y, x], got {tuple(voxel_coords.shape)}'
    voxel_centers = voxel_coords[:, [2, 1, 0]].float()
    voxel_size = torch.tensor(voxel_size, device=voxel_centers.device).float() * downsample_times
    pc_range = torch.tensor(point_cloud_range[0:3], device=voxel_centers.device).float()
    return (voxel_centers + 0.5) * voxel_size + pc_range


def drop_info_with_name(info, name):
    """Return a copy of annotation dict ``info`` without the entries whose ``info['name']`` equals ``name``."""
    keep_indices = [i for i, x in enumerate(info['name']) if x != name]
    return {key: info[key][keep_indices] for key in info.keys()}


def keep_arrays_by_name(gt_names, used_classes):
    """Indices (int64 ndarray) of the entries of ``gt_names`` that are in ``used_classes``."""
    return np.array([i for i, x in enumerate(gt_names) if x in used_classes], dtype=np.int64)


def get_dist_info(return_gpu_per_machine=False):
    """``(rank, world_size[, gpus_per_machine])``; ``(0, 1)`` when torch.distributed is not initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    else:
        rank, world_size = 0, 1
    if return_gpu_per_machine:
        return rank, world_size, torch.cuda.device_count()
    return rank, world_size


def create_logger(log_file=None, rank=0, log_level=logging.INFO):
    """The ``pcdet`` logger writing to the console and optionally ``log_file``.

    Ranks other than 0 only log errors. Calling it again replaces the handlers of the previous call, so
    repeated calls (tests, eval after train) do not duplicate lines.
    """
    logger = logging.getLogger('pcdet')
    logger.setLevel(log_level if rank == 0 else logging.ERROR)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter('%(asctime)s  %(levelname)5s  %(message)s')
    console = logging.StreamHandler()
    console.setLevel(log_level if rank == 0 else logging.ERROR)
    console.setFormatter(formatter)
    logger.addHandler(console)
    if log_file is not None:
        file_handler = logging.FileHandler(filename=log_file)
        file_handler.setLevel(log_level if rank == 0 else logging.ERROR)
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    logger.propagate = False  # handlers above already print; the root logger would print twice
    return logger


def set_random_seed(seed):
    """Seed python, numpy and torch (CPU and, lazily, every CUDA device) and make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)  # queued until CUDA initialises; a no-op without CUDA
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def worker_init_fn(worker_id, seed=666):
    """DataLoader worker seeding: worker ``i`` gets ``seed + i`` (use ``functools.partial(.., seed=s)``)."""
    if seed is not None:
        random.seed(seed + worker_id)
        np.random.seed(seed + worker_id)
        torch.manual_seed(seed + worker_id)
        torch.cuda.manual_seed_all(seed + worker_id)


class PicklableWithoutLogger:
    """Mixin: pickling (DataLoader workers, spawn) drops the ``logger`` attribute, which holds file handles."""

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop('logger', None)
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self.logger = None


class AverageMeter:
    """Running average of a scalar: ``val`` (last), ``sum``, ``count``, ``avg``."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count
