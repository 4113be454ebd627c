"""Per-sample processing queue built from ``DATA_PROCESSOR`` (OpenPCDet's ``DataProcessor``).

Each entry's ``NAME`` is a method: ``mask_points_and_boxes_outside_range``, ``shuffle_points``,
``transform_points_to_voxels``, ``transform_points_to_voxels_placeholder``, ``calculate_grid_size``,
``sample_points``. Frames: LiDAR. ``point_cloud_range`` = [x_min, y_min, z_min, x_max, y_max, z_max].
"""
from functools import partial

import numpy as np
import torch

from ...utils import box_utils, common_utils

PROCESSOR_NAMES = ('mask_points_and_boxes_outside_range', 'shuffle_points', 'transform_points_to_voxels',
                   'transform_points_to_voxels_placeholder', 'calculate_grid_size', 'sample_points')


class VoxelGeneratorWrapper:
    """spconv 2.x CPU voxeliser (``spconv.pytorch.utils.PointToVoxel``), created once per processor."""

    def __init__(self, vsize_xyz, coors_range_xyz, num_point_features, max_num_points_per_voxel, max_num_voxels):
        from ...utils.spconv_utils import import_spconv

        import_spconv()  # applies the CPU shim before spconv's utils are used
        from spconv.pytorch.utils import PointToVoxel

        self.num_point_features = num_point_features
        self.max_num_points_per_voxel = max_num_points_per_voxel
        self._generator = PointToVoxel(vsize_xyz=list(vsize_xyz), coors_range_xyz=list(coors_range_xyz),
                                       num_point_features=num_point_features, max_num_voxels=max_num_voxels,
                                       max_num_points_per_voxel=max_num_points_per_voxel)

    def generate(self, points):
        """points (N, C) float32 -> voxels (V, P, C) float32, coords (V, 3) int32 [z, y, x], num_points (V,) int32."""
        if points.shape[0] == 0:
            return (np.zeros((0, self.max_num_points_per_voxel, self.num_point_features), dtype=np.float32),
                    np.zeros((0, 3), dtype=np.int32), np.zeros((0,), dtype=np.int32))
        voxels, coords, num_points = self._generator(torch.from_numpy(np.ascontiguousarray(points)))
        # PointToVoxel returns views of its internal buffers, which the next call overwrites: copy them out
        return voxels.numpy().copy(), coords.numpy().astype(np.int32), num_points.numpy().astype(np.int32)


class DataProcessor:
    """Run the ``DATA_PROCESSOR`` queue on a data dict.

    Attributes:
        grid_size (3,) int64 [nx, ny, nz] and voxel_size [vx, vy, vz] (set by the voxel steps, else None).
    """

    def __init__(self, processor_configs, point_cloud_range, training, num_point_features):
        self.point_cloud_range = np.asarray(point_cloud_range, dtype=np.float32)
        self.training = training
        self.num_point_features = num_point_features
        self.mode = 'train' if training else 'test'
        self.grid_size = self.voxel_size = None
        self.depth_downsample_factor = None
        self.voxel_generator = None
        self.data_processor_queue = []
        for cur_cfg in processor_configs:
            if cur_cfg.NAME not in PROCESSOR_NAMES:
                raise KeyError(f'DATA_PROCESSOR: unknown NAME {cur_cfg.NAME!r} (valid: {", ".join(PROCESSOR_NAMES)})')
            self.data_processor_queue.append(getattr(self, cur_cfg.NAME)(config=cur_cfg))

    def __getstate__(self):
        # the spconv generator holds native buffers: rebuild it lazily in each DataLoader worker
        d = dict(self.__dict__)
        d['voxel_generator'] = None
        return d

    def mask_points_and_boxes_outside_range(self, data_dict=None, config=None):
        """Drop points outside the x/y range (inclusive); in training also boxes (by centre by default)."""
        if data_dict is None:
            return partial(self.mask_points_and_boxes_outside_range, config=config)
        if data_dict.get('points') is not None:
            mask = common_utils.mask_points_by_range(data_dict['points'], self.point_cloud_range)
            data_dict['points'] = data_dict['points'][mask]
        if data_dict.get('gt_boxes') is not None and config.REMOVE_OUTSIDE_BOXES and self.training:
            mask = box_utils.mask_boxes_outside_range_numpy(
                data_dict['gt_boxes'], self.point_cloud_range, min_num_corners=config.get('min_num_corners', 1),
                use_center_to_filter=config.get('USE_CENTER_TO_FILTER', True))
            data_dict['gt_boxes'] = data_dict['gt_boxes'][mask]
        return data_dict

    def shuffle_points(self, data_dict=None, config=None):
        """Permute the points (numpy global RNG) when ``SHUFFLE_ENABLED[mode]``."""
        if data_dict is None:
            return partial(self.shuffle_points, config=config)
        if config.SHUFFLE_ENABLED[self.mode]:
            points = data_dict['points']
            data_dict['points'] = points[np.random.permutation(points.shape[0])]
        return data_dict

    def _set_grid(self, voxel_size):
        grid_size = (self.point_cloud_range[3:6] - self.point_cloud_range[0:3]) / np.array(voxel_size)
        self.grid_size = np.round(grid_size).astype(np.int64)
        self.voxel_size = voxel_size

    def transform_points_to_voxels_placeholder(self, data_dict=None, config=None):
        """Only set ``grid_size``/``voxel_size`` (models that voxelise themselves)."""
        if data_dict is None:
            self._set_grid(config.VOXEL_SIZE)
            return partial(self.transform_points_to_voxels_placeholder, config=config)
        return data_dict

    def calculate_grid_size(self, data_dict=None, config=None):
        """Only set ``grid_size``/``voxel_size``."""
        if data_dict is None:
            self._set_grid(config.VOXEL_SIZE)
            return partial(self.calculate_grid_size, config=config)
        return data_dict

    def transform_points_to_voxels(self, data_dict=None, config=None):
        """Voxelise ``points`` (N, C) into ``voxels`` (V, P, C') float32, ``voxel_coords`` (V, 3) int32 [z, y, x],
        ``voxel_num_points`` (V,) int32; C' = C - 3 when ``use_lead_xyz`` is False. At most
        ``MAX_NUMBER_OF_VOXELS[mode]`` voxels of ``MAX_POINTS_PER_VOXEL`` points; an empty cloud gives V = 0."""
        if data_dict is None:
            self._set_grid(config.VOXEL_SIZE)
            return partial(self.transform_points_to_voxels, config=config)
        if self.voxel_generator is None:
            self.voxel_generator = VoxelGeneratorWrapper(
                vsize_xyz=config.VOXEL_SIZE, coors_range_xyz=self.point_cloud_range,
                num_point_features=self.num_point_features, max_num_points_per_voxel=config.MAX_POINTS_PER_VOXEL,
                max_num_voxels=config.MAX_NUMBER_OF_VOXELS[self.mode])
        points = data_dict['points']
        voxels, coordinates, num_points = self.voxel_generator.generate(points)
        if not data_dict['use_lead_xyz']:
            voxels = voxels[..., 3:]  # xyz were only needed to place the points
        data_dict['voxels'] = voxels
        data_dict['voxel_coords'] = coordinates
        data_dict['voxel_num_points'] = num_points
        return data_dict

    def sample_points(self, data_dict=None, config=None):
        """Resample ``points`` to exactly ``NUM_POINTS[mode]`` (-1: unchanged).

        Downsampling keeps every far point (>= 40 m) when possible and draws the rest from near points;
        upsampling keeps all points and adds repeats (whole copies first, so it works for any shortfall,
        unlike OpenPCDet which fails below half the target). An empty cloud stays empty.
        """
        if data_dict is None:
            return partial(self.sample_points, config=config)
        num_points = config.NUM_POINTS[self.mode]
        points = data_dict['points']
        if num_points == -1 or len(points) == 0:
            return data_dict
        if num_points < len(points):
            near = np.linalg.norm(points[:, 0:3], axis=1) < 40.0
            far_idxs, near_idxs = np.nonzero(~near)[0], np.nonzero(near)[0]
            if num_points > len(far_idxs):
                near_choice = np.random.choice(near_idxs, num_points - len(far_idxs), replace=False)
                choice = np.concatenate((near_choice, far_idxs), axis=0)
            else:
                choice = np.random.choice(np.arange(len(points)), num_points, replace=False)
        else:
            reps, rest = divmod(num_points, len(points))
            choice = np.concatenate([np.tile(np.arange(len(points)), reps),
                                     np.random.choice(len(points), rest, replace=False)])
        np.random.shuffle(choice)
        data_dict['points'] = points[choice]
        return data_dict

    def forward(self, data_dict):
        """Apply the queue in order; see the individual steps for the keys read and written."""
        for cur_processor in self.data_processor_queue:
            data_dict = cur_processor(data_dict=data_dict)
        return data_dict
