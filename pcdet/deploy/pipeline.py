"""Raw LiDAR points -> a batch the detector (PyTorch or ONNX Runtime) takes, with the dataset's own processor.

Used by the deployment benchmark and tests to voxelise frames outside a dataset: the ``DATA_PROCESSOR`` queue
of the config (range crop, shuffle (off at test time), ``transform_points_to_voxels``) and the dataset's
``collate_batch``, exactly as ``KittiDataset`` runs them at evaluation (no augmentation at test time).
``read_kitti_points`` reads a frame as ``KittiDataset`` does, with its camera field-of-view crop.
"""
from pathlib import Path

import numpy as np


def read_kitti_points(split_dir, frame_id, fov_only=True):
    """(N, 4) float32 [x, y, z, reflectance] LiDAR points of ``<split_dir>/velodyne/<frame_id>.bin``; with
    ``fov_only`` only those projecting into ``image_2`` (KITTI's ``FOV_POINTS_ONLY``, needs calib and image_2)."""
    from pcdet.datasets.kitti import kitti_utils
    from pcdet.utils import calibration_kitti
    split_dir = Path(split_dir)
    points = kitti_utils.read_points_bin(split_dir / 'velodyne' / f'{frame_id}.bin')
    if fov_only:
        calib = calibration_kitti.Calibration(str(split_dir / 'calib' / f'{frame_id}.txt'))
        image_shape = kitti_utils.read_image_shape(split_dir / 'image_2' / f'{frame_id}.png')
        points = points[kitti_utils.get_fov_flag(calib.lidar_to_rect(points[:, 0:3]), image_shape, calib)]
    return points


def build_test_processor(cfg):
    """The test-mode ``DataProcessor`` of a full config (``DATA_CONFIG.DATA_PROCESSOR``, ``POINT_CLOUD_RANGE``)."""
    from pcdet.datasets.processor.data_processor import DataProcessor
    data = cfg.DATA_CONFIG
    used = data.get('POINT_FEATURE_ENCODING', {}).get('used_feature_list', ['x', 'y', 'z', 'intensity'])
    return DataProcessor(data.DATA_PROCESSOR, point_cloud_range=np.asarray(data.POINT_CLOUD_RANGE, np.float32),
                         training=False, num_point_features=len(used))


def points_to_batch(points_list, processor, device='cpu'):
    """Voxelise LiDAR frames and collate them into one batch on ``device``.

    Args:
        points_list: list of (N_i, 4) float32 [x, y, z, intensity] LiDAR-frame points, one per sample.
        processor: from ``build_test_processor``.
    Returns:
        batch_dict with ``voxels`` (V, P, 4), ``voxel_num_points`` (V,), ``voxel_coords`` (V, 4) [b, z, y, x],
        ``points`` (N, 5) [b, x, y, z, i] as float tensors (``load_data_to_gpu``), ``batch_size`` = len(list).
    """
    from pcdet.datasets.dataset import DatasetTemplate
    from pcdet.models import load_data_to_gpu
    samples = []
    for points in points_list:
        sample = processor.forward({'points': np.asarray(points, dtype=np.float32), 'use_lead_xyz': True})
        sample.pop('use_lead_xyz', None)
        samples.append(sample)
    return load_data_to_gpu(DatasetTemplate.collate_batch(samples), device=device)
