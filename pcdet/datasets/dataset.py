"""``DatasetTemplate``: the shared per-sample pipeline and batch collation (OpenPCDet names and keys).

Pipeline of ``prepare_data`` (training steps marked):
(train) augmentation (``DataAugmentor``, incl. gt_sampling) -> (train) heading wrapped with
``limit_period(offset=0.5, period=2 pi)`` -> keep boxes of ``CLASS_NAMES`` -> class column appended (1-based)
-> point feature encoder -> data processor -> (train) if no box is left, a random other index is loaded instead.
"""
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch.utils.data as torch_data

from ..utils import common_utils
from .augmentor.data_augmentor import DataAugmentor
from .processor.data_processor import DataProcessor
from .processor.point_feature_encoder import PointFeatureEncoder

# Without such a cap a split with no usable box would recurse forever.
MAX_RESAMPLE_TRIES = 100


def resolve_data_path(data_path):
    """``DATA_PATH`` as an absolute ``Path``: as given from the CWD if it exists, else relative to ``<repo>/tools``
    (OpenPCDet's ``../data/kitti`` is written for running from ``tools/``)."""
    from ..config import resolve_path
    return Path(resolve_path(data_path))


class DatasetTemplate(common_utils.PicklableWithoutLogger, torch_data.Dataset):
    """Base of every dataset.

    Args:
        dataset_cfg: ``DATA_CONFIG`` (EasyDict). class_names: ``CLASS_NAMES``. training: train or test mode.
        root_path: dataset root; default ``DATA_PATH`` resolved with ``resolve_data_path``.
    Attributes:
        point_cloud_range (6,) float32, grid_size (3,) int64 [nx, ny, nz] or None, voxel_size [vx, vy, vz] or None,
        point_feature_encoder, data_augmentor (training only), data_processor, depth_downsample_factor (None).
    """

    def __init__(self, dataset_cfg=None, class_names=None, training=True, root_path=None, logger=None):
        super().__init__()
        self.dataset_cfg = dataset_cfg
        self.training = training
        self.class_names = class_names
        self.logger = logger
        if dataset_cfg is None or class_names is None:
            return
        self.root_path = Path(root_path) if root_path is not None else resolve_data_path(dataset_cfg.DATA_PATH)
        self.point_cloud_range = np.array(dataset_cfg.POINT_CLOUD_RANGE, dtype=np.float32)
        if self.point_cloud_range.shape != (6,):
            raise ValueError(f'DATA_CONFIG.POINT_CLOUD_RANGE must have 6 values, got {dataset_cfg.POINT_CLOUD_RANGE}')
        self.point_feature_encoder = PointFeatureEncoder(dataset_cfg.POINT_FEATURE_ENCODING,
                                                         point_cloud_range=self.point_cloud_range)
        aug_cfg = dataset_cfg.get('DATA_AUGMENTOR', None)
        self.data_augmentor = DataAugmentor(self.root_path, aug_cfg, class_names, logger=logger) \
            if training and aug_cfg is not None else None
        self.data_processor = DataProcessor(dataset_cfg.get('DATA_PROCESSOR', []),
                                            point_cloud_range=self.point_cloud_range, training=training,
                                            num_point_features=self.point_feature_encoder.num_point_features)
        self.grid_size = self.data_processor.grid_size
        self.voxel_size = self.data_processor.voxel_size
        self.depth_downsample_factor = self.data_processor.depth_downsample_factor
        self.total_epochs = 0
        self._merge_all_iters_to_one_epoch = False
        self._resample_tries = 0

    @property
    def mode(self):
        return 'train' if self.training else 'test'

    def merge_all_iters_to_one_epoch(self, merge=True, epochs=None):
        """Make one "epoch" cover ``epochs`` passes (``__len__`` multiplies, indices wrap)."""
        self._merge_all_iters_to_one_epoch = merge
        self.total_epochs = epochs if merge else 0

    def __len__(self):
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError

    @staticmethod
    def generate_prediction_dicts(batch_dict, pred_dicts, class_names, output_path=None):
        raise NotImplementedError

    def prepare_data(self, data_dict):
        """Run the pipeline of the module docstring on one sample.

        Args:
            data_dict: ``points`` (N, 3 + C) float32 LiDAR; optional ``gt_boxes`` (M, 7) float32 LiDAR,
                ``gt_names`` (M,) str (required in training), ``road_plane`` (4,), ``calib``, ``frame_id``.
        Returns:
            data_dict with ``points`` (N', num_point_features) float32, ``use_lead_xyz``, ``gt_boxes`` (M', 8)
            float32 (column 7 = 1-based class index), the processor outputs (``voxels``, ``voxel_coords``,
            ``voxel_num_points``), and in training ``lidar_aug_matrix`` (4, 4) plus the drawn augmentation
            parameters. ``gt_names`` is removed.
        """
        if self.training:
            if 'gt_boxes' not in data_dict:
                raise KeyError(f'frame {data_dict.get("frame_id")}: gt_boxes are required in training '
                               f'(the info has no annos: is the split a test split?)')
            gt_boxes_mask = np.array([n in self.class_names for n in data_dict['gt_names']], dtype=np.bool_)
            calib = data_dict.get('calib')
            if self.data_augmentor is not None:
                data_dict = self.data_augmentor.forward(data_dict={**data_dict, 'gt_boxes_mask': gt_boxes_mask})
            if calib is not None:
                data_dict['calib'] = calib
            data_dict.setdefault('lidar_aug_matrix', np.eye(4, dtype=np.float32))
            if len(data_dict['gt_boxes']) > 0:
                data_dict['gt_boxes'][:, 6] = common_utils.limit_period(
                    data_dict['gt_boxes'][:, 6], offset=0.5, period=2 * np.pi)

        if data_dict.get('gt_boxes') is not None:
            selected = common_utils.keep_arrays_by_name(data_dict['gt_names'], self.class_names)
            gt_boxes = data_dict['gt_boxes'][selected][:, 0:7]
            gt_names = data_dict['gt_names'][selected]
            gt_classes = np.array([self.class_names.index(n) + 1 for n in gt_names], dtype=np.float32)
            data_dict['gt_boxes'] = np.concatenate((gt_boxes, gt_classes.reshape(-1, 1)), axis=1).astype(np.float32)
            data_dict['gt_names'] = gt_names

        if data_dict.get('points') is not None:
            data_dict = self.point_feature_encoder.forward(data_dict)
        data_dict = self.data_processor.forward(data_dict=data_dict)

        if self.training and len(data_dict['gt_boxes']) == 0:
            self._resample_tries += 1
            if self._resample_tries > MAX_RESAMPLE_TRIES:
                self._resample_tries = 0
                raise RuntimeError(f'no sample with a box of {self.class_names} inside POINT_CLOUD_RANGE after '
                                   f'{MAX_RESAMPLE_TRIES} random resamples (last frame {data_dict.get("frame_id")})')
            return self.__getitem__(np.random.randint(self.__len__()))
        self._resample_tries = 0
        data_dict.pop('gt_names', None)
        return data_dict

    @staticmethod
    def collate_batch(batch_list, _unused=False):
        """Collate samples into a batch dict of numpy arrays (OpenPCDet keys).

        ``points`` (sum N, 1 + C) and ``voxel_coords`` (sum V, 4) get the sample index as first column;
        ``voxels`` (sum V, P, C) and ``voxel_num_points`` (sum V,) are concatenated; ``gt_boxes`` becomes
        (B, max(1, M_max), 8) zero-padded; ``calib`` stays a list of ``Calibration``; every other key is
        stacked (``frame_id`` (B,) str, ``image_shape`` (B, 2) int32, ``use_lead_xyz`` (B,), ``flip_x``,
        ``noise_rot``, ``noise_scale`` (B,), ``lidar_aug_matrix`` (B, 4, 4), ``road_plane`` (B, 4)). Adds
        ``batch_size`` (int).
        """
        data_dict = defaultdict(list)
        for cur_sample in batch_list:
            for key, val in cur_sample.items():
                data_dict[key].append(val)
        batch_size = len(batch_list)
        ret = {}
        for key, val in data_dict.items():
            if len(val) != batch_size:
                raise ValueError(f'collate_batch: key {key!r} is present in {len(val)} of {batch_size} samples')
            if key in ('voxels', 'voxel_num_points'):
                ret[key] = np.concatenate(val, axis=0)
            elif key in ('points', 'voxel_coords'):
                ret[key] = np.concatenate([np.pad(coor, ((0, 0), (1, 0)), mode='constant', constant_values=i)
                                           for i, coor in enumerate(val)], axis=0)
            elif key == 'gt_boxes':
                max_gt = max(1, max(len(x) for x in val))
                batch_gt_boxes3d = np.zeros((batch_size, max_gt, val[0].shape[-1]), dtype=np.float32)
                for k in range(batch_size):
                    batch_gt_boxes3d[k, :len(val[k])] = val[k]
                ret[key] = batch_gt_boxes3d
            elif key == 'gt_boxes2d':
                max_boxes = max(1, max(len(x) for x in val))
                batch_boxes2d = np.zeros((batch_size, max_boxes, 4), dtype=np.float32)
                for k in range(batch_size):
                    batch_boxes2d[k, :len(val[k])] = val[k]
                ret[key] = batch_boxes2d
            elif key == 'calib':
                ret[key] = list(val)
            else:
                ret[key] = np.stack(val, axis=0)
        ret['batch_size'] = batch_size
        return ret
