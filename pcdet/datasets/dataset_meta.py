"""The attributes of a dataset that ``build_network`` reads, without any data (benchmarks, export, tests)."""
from types import SimpleNamespace

import numpy as np


class DatasetMeta:
    """Geometry and class names of a dataset, under the attribute names OpenPCDet's detectors read.

    Attributes: ``class_names`` (list), ``point_cloud_range`` (6,) float32 [x0, y0, z0, x1, y1, z1] in the LiDAR
    frame (m), ``voxel_size`` (3,) float32 (m), ``grid_size`` (3,) int64 [nx, ny, nz], ``max_points_per_voxel``,
    ``max_voxels`` (None: no cap), ``point_feature_encoder.num_point_features``, ``depth_downsample_factor``
    (None), ``training``.
    """

    def __init__(self, point_cloud_range, voxel_size, class_names=('Car', 'Pedestrian', 'Cyclist'),
                 num_point_features=4, max_points_per_voxel=32, max_voxels=None, training=True):
        self.class_names = list(class_names)
        self.point_cloud_range = np.array(point_cloud_range, dtype=np.float32)
        self.voxel_size = np.array(voxel_size, dtype=np.float32)
        extent = self.point_cloud_range[3:6] - self.point_cloud_range[0:3]
        self.grid_size = np.round(extent / self.voxel_size).astype(np.int64)
        self.max_points_per_voxel = int(max_points_per_voxel)
        self.max_voxels = max_voxels
        self.point_feature_encoder = SimpleNamespace(num_point_features=int(num_point_features))
        self.depth_downsample_factor = None
        self.training = training

    @classmethod
    def from_cfg(cls, cfg, training=True):
        """From a full config (``CLASS_NAMES`` and ``DATA_CONFIG`` with a ``transform_points_to_voxels`` step)."""
        data = cfg.DATA_CONFIG
        steps = [p for p in data.get('DATA_PROCESSOR', []) if p.NAME == 'transform_points_to_voxels']
        if not steps:
            raise KeyError('DATA_CONFIG.DATA_PROCESSOR has no transform_points_to_voxels step: no voxel size')
        vox = steps[0]
        max_voxels = vox.get('MAX_NUMBER_OF_VOXELS', {}).get('train' if training else 'test')
        used = data.get('POINT_FEATURE_ENCODING', {}).get('used_feature_list', ['x', 'y', 'z', 'intensity'])
        return cls(data.POINT_CLOUD_RANGE, vox.VOXEL_SIZE, cfg.CLASS_NAMES, num_point_features=len(used),
                   max_points_per_voxel=vox.get('MAX_POINTS_PER_VOXEL', 32), max_voxels=max_voxels,
                   training=training)
