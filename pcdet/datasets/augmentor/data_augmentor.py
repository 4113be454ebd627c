"""Training-time augmentation queue built from ``DATA_AUGMENTOR.AUG_CONFIG_LIST`` (OpenPCDet's ``DataAugmentor``).

Each entry's ``NAME`` is a method of ``DataAugmentor``; entries named in ``DISABLE_AUG_LIST`` are skipped.
All geometry is in the LiDAR frame; see ``augmentor_utils`` for the transforms.
"""
from functools import partial

import numpy as np

from ...utils.common_utils import PicklableWithoutLogger
from . import augmentor_utils, database_sampler

AUGMENTOR_NAMES = ('gt_sampling', 'random_world_flip', 'random_world_rotation', 'random_world_scaling')


class DataAugmentor(PicklableWithoutLogger):
    """Apply the configured augmentations to a data dict.

    Args:
        root_path: dataset root (``Path``); the GT database paths are relative to it.
        augmentor_configs: ``DATA_AUGMENTOR`` (EasyDict with ``AUG_CONFIG_LIST`` and optional ``DISABLE_AUG_LIST``)
            or a plain list of augmentor configs.
        class_names: ``CLASS_NAMES``.
    """

    def __init__(self, root_path, augmentor_configs, class_names, logger=None):
        self.root_path = root_path
        self.class_names = class_names
        self.logger = logger
        self.data_augmentor_queue = []
        self._build(augmentor_configs)

    def _build(self, augmentor_configs):
        if isinstance(augmentor_configs, list):
            aug_config_list, disabled = augmentor_configs, []
        else:
            aug_config_list = augmentor_configs.AUG_CONFIG_LIST
            disabled = augmentor_configs.get('DISABLE_AUG_LIST', []) or []
        self.data_augmentor_queue = []
        for cur_cfg in aug_config_list:
            if cur_cfg.NAME in disabled:
                continue
            if cur_cfg.NAME not in AUGMENTOR_NAMES:
                raise KeyError(f'DATA_AUGMENTOR.AUG_CONFIG_LIST: unknown NAME {cur_cfg.NAME!r} '
                               f'(valid: {", ".join(AUGMENTOR_NAMES)})')
            self.data_augmentor_queue.append(getattr(self, cur_cfg.NAME)(config=cur_cfg))

    def disable_augmentation(self, augmentor_configs):
        """Rebuild the queue from ``augmentor_configs`` (used by DisableAugmentationHook for the last epochs)."""
        self._build(augmentor_configs)

    def gt_sampling(self, config=None):
        return database_sampler.DataBaseSampler(root_path=self.root_path, sampler_cfg=config,
                                                class_names=self.class_names, logger=self.logger)

    def random_world_flip(self, data_dict=None, config=None):
        """Flip along each axis of ``ALONG_AXIS_LIST`` (``x``: y -> -y; ``y``: x -> -x), p = 0.5 each."""
        if data_dict is None:
            for axis in config['ALONG_AXIS_LIST']:
                if axis not in ('x', 'y'):
                    raise ValueError(f'random_world_flip.ALONG_AXIS_LIST: axis must be x or y, got {axis!r}')
            return partial(self.random_world_flip, config=config)
        gt_boxes, points = data_dict['gt_boxes'], data_dict['points']
        for axis in config['ALONG_AXIS_LIST']:
            flip = getattr(augmentor_utils, f'random_flip_along_{axis}')
            gt_boxes, points, enable, mat = flip(gt_boxes, points)
            data_dict[f'flip_{axis}'] = enable
            _compose(data_dict, mat)
        data_dict['gt_boxes'], data_dict['points'] = gt_boxes, points
        return data_dict

    def random_world_rotation(self, data_dict=None, config=None):
        """Rotate about z by U(``WORLD_ROT_ANGLE``) radians (a scalar r means [-r, r]); stores ``noise_rot``."""
        if data_dict is None:
            return partial(self.random_world_rotation, config=config)
        rot_range = config['WORLD_ROT_ANGLE']
        if not isinstance(rot_range, (list, tuple)):
            rot_range = [-rot_range, rot_range]
        gt_boxes, points, noise_rot, mat = augmentor_utils.global_rotation(
            data_dict['gt_boxes'], data_dict['points'], rot_range=rot_range)
        data_dict['gt_boxes'], data_dict['points'], data_dict['noise_rot'] = gt_boxes, points, noise_rot
        _compose(data_dict, mat)
        return data_dict

    def random_world_scaling(self, data_dict=None, config=None):
        """Scale xyz and box sizes by U(``WORLD_SCALE_RANGE``); stores ``noise_scale``."""
        if data_dict is None:
            return partial(self.random_world_scaling, config=config)
        gt_boxes, points, noise_scale, mat = augmentor_utils.global_scaling(
            data_dict['gt_boxes'], data_dict['points'], config['WORLD_SCALE_RANGE'])
        data_dict['gt_boxes'], data_dict['points'], data_dict['noise_scale'] = gt_boxes, points, noise_scale
        _compose(data_dict, mat)
        return data_dict

    def forward(self, data_dict):
        """Run the queue.

        Args:
            data_dict: ``points`` (N, 3 + C) float32, ``gt_boxes`` (M, 7) float32 LiDAR, ``gt_names`` (M,) str,
                ``gt_boxes_mask`` (M,) bool, optional ``road_plane`` (4,), ``calib``.
        Returns:
            data_dict with augmented ``points``/``gt_boxes``, boxes outside ``gt_boxes_mask`` dropped, heading
            wrapped to [-pi, pi), ``lidar_aug_matrix`` (4, 4) float32 (p_aug = M @ p_orig), the drawn
            ``flip_x``/``noise_rot``/``noise_scale``; ``road_plane`` removed.
        """
        data_dict.setdefault('lidar_aug_matrix', np.eye(4))
        for cur_augmentor in self.data_augmentor_queue:
            data_dict = cur_augmentor(data_dict=data_dict)
        if 'gt_boxes_mask' in data_dict:  # gt_sampling applies it itself; without gt_sampling do it here
            mask = data_dict.pop('gt_boxes_mask')
            data_dict['gt_boxes'], data_dict['gt_names'] = data_dict['gt_boxes'][mask], data_dict['gt_names'][mask]
        data_dict.pop('road_plane', None)
        data_dict['lidar_aug_matrix'] = np.asarray(data_dict['lidar_aug_matrix'], dtype=np.float32)
        return data_dict


def _compose(data_dict, mat3):
    """Left-multiply the (3, 3) linear map of the augmentation just applied into ``lidar_aug_matrix``."""
    m = np.eye(4)
    m[:3, :3] = mat3
    data_dict['lidar_aug_matrix'] = m @ np.asarray(data_dict['lidar_aug_matrix'], dtype=np.float64)
