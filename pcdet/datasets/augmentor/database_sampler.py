"""GT sampling ("copy-paste") augmentation from the GT database (OpenPCDet's ``DataBaseSampler``).

The database is ``kitti_dbinfos_train.pkl`` (``{class: [db_info]}``) plus ``gt_database/*.bin`` (float32
``(n, NUM_POINT_FEATURES)`` points inside one GT box, xyz relative to the box centre), both written by
``create_kitti_infos``. All boxes are LiDAR ``(M, 7) [x, y, z, dx, dy, dz, heading]``.
"""
import pickle
from pathlib import Path

import numpy as np

from ...utils import box_utils
from ...utils.common_utils import PicklableWithoutLogger


class DataBaseSampler(PicklableWithoutLogger):
    """Paste GT objects from other frames into a training frame.

    Config keys (``sampler_cfg``): ``DB_INFO_PATH`` (list, relative to ``root_path``), ``PREPARE``
    (``filter_by_min_points: ['Car:5', ...]``, ``filter_by_difficulty: [-1]``), ``SAMPLE_GROUPS``
    (``['Car:20', ...]``), ``NUM_POINT_FEATURES``, ``DATABASE_WITH_FAKELIDAR`` (must be False),
    ``REMOVE_EXTRA_WIDTH`` (3,), ``LIMIT_WHOLE_SCENE``, ``USE_ROAD_PLANE``.
    """

    def __init__(self, root_path, sampler_cfg, class_names, logger=None):
        self.root_path = Path(root_path)
        self.class_names = class_names
        self.sampler_cfg = sampler_cfg
        self.logger = logger
        if sampler_cfg.get('DATABASE_WITH_FAKELIDAR', False):
            raise ValueError('gt_sampling.DATABASE_WITH_FAKELIDAR: True is not supported; regenerate the GT database '
                             'with create_kitti_infos (boxes in the LiDAR frame)')
        self.db_infos = {name: [] for name in class_names}
        for rel_path in sampler_cfg.DB_INFO_PATH:
            db_info_path = self.root_path / rel_path
            if not db_info_path.is_file():
                raise FileNotFoundError(f'gt_sampling.DB_INFO_PATH: {db_info_path} not found '
                                        f'(run create_kitti_infos first)')
            infos = _load_pickle(db_info_path)
            if not isinstance(infos, dict):
                raise ValueError(f'{db_info_path}: expected a dict {{class: [db_info]}}, got {type(infos).__name__}')
            for name in class_names:
                self.db_infos[name].extend(infos.get(name, []))

        for func_name, val in sampler_cfg.get('PREPARE', {}).items():
            if func_name not in ('filter_by_min_points', 'filter_by_difficulty'):
                raise KeyError(f'gt_sampling.PREPARE: unknown filter {func_name!r} '
                               f'(valid: filter_by_difficulty, filter_by_min_points)')
            self.db_infos = getattr(self, func_name)(self.db_infos, val)

        self.limit_whole_scene = sampler_cfg.get('LIMIT_WHOLE_SCENE', False)
        self.sample_groups = {}
        self.sample_class_num = {}
        for group in sampler_cfg.SAMPLE_GROUPS:
            class_name, sample_num = _split_name_num(group, 'gt_sampling.SAMPLE_GROUPS')
            if class_name not in class_names:
                continue
            self.sample_class_num[class_name] = sample_num
            # pointer past the end: the first draw shuffles (see sample_with_fixed_number)
            self.sample_groups[class_name] = {
                'sample_num': sample_num,
                'pointer': len(self.db_infos[class_name]),
                'indices': np.arange(len(self.db_infos[class_name])),
            }

    def filter_by_difficulty(self, db_infos, removed_difficulty):
        """Drop db entries whose KITTI difficulty is in ``removed_difficulty`` (e.g. [-1])."""
        new_db_infos = {key: [info for info in dinfos if info['difficulty'] not in removed_difficulty]
                        for key, dinfos in db_infos.items()}
        if self.logger is not None:
            for key in db_infos:
                self.logger.info('Database filter by difficulty %s: %d => %d', key, len(db_infos[key]),
                                 len(new_db_infos[key]))
        return new_db_infos

    def filter_by_min_points(self, db_infos, min_gt_points_list):
        """Keep db entries of each listed class (``'Car:5'``) with at least that many points."""
        for item in min_gt_points_list:
            name, min_num = _split_name_num(item, 'gt_sampling.PREPARE.filter_by_min_points')
            if min_num > 0 and name in db_infos:
                before = len(db_infos[name])
                db_infos[name] = [info for info in db_infos[name] if info['num_points_in_gt'] >= min_num]
                if self.logger is not None:
                    self.logger.info('Database filter by min points %s: %d => %d', name, before, len(db_infos[name]))
        return db_infos

    def sample_with_fixed_number(self, class_name, sample_group):
        """Next ``sample_num`` entries of a per-class permutation, reshuffled (numpy global RNG) when used up."""
        sample_num = int(sample_group['sample_num'])
        pointer, indices = sample_group['pointer'], sample_group['indices']
        if pointer >= len(self.db_infos[class_name]):
            indices = np.random.permutation(len(self.db_infos[class_name]))
            pointer = 0
        sampled = [self.db_infos[class_name][idx] for idx in indices[pointer: pointer + sample_num]]
        sample_group['pointer'] = pointer + sample_num
        sample_group['indices'] = indices
        return sampled

    @staticmethod
    def put_boxes_on_road_planes(gt_boxes, road_planes, calib):
        """Move boxes vertically so that their bottoms lie on the road plane.

        Args:
            gt_boxes: (N, 7) LiDAR boxes (modified in place and returned).
            road_planes: (4,) [a, b, c, d] plane ``a x + b y + c z + d = 0`` in the rect camera frame.
            calib: ``Calibration``.
        Returns:
            gt_boxes, mv_height (N,) the amount each box was lowered (metres, LiDAR z).
        """
        a, b, c, d = road_planes
        center_cam = calib.lidar_to_rect(gt_boxes[:, 0:3])
        center_cam[:, 1] = (-d - a * center_cam[:, 0] - c * center_cam[:, 2]) / b  # road height under the box
        cur_lidar_height = calib.rect_to_lidar(center_cam)[:, 2]
        mv_height = gt_boxes[:, 2] - gt_boxes[:, 5] / 2 - cur_lidar_height
        gt_boxes[:, 2] -= mv_height
        return gt_boxes, mv_height

    def _collision_free(self, sampled_boxes, existed_boxes):
        """(S,) bool: no rotated-BEV overlap with existing boxes nor with another sampled box."""
        from ...ops.iou3d_nms import iou3d_nms_utils

        iou_existing = iou3d_nms_utils.boxes_bev_iou_cpu(sampled_boxes[:, 0:7], existed_boxes[:, 0:7])
        iou_sampled = iou3d_nms_utils.boxes_bev_iou_cpu(sampled_boxes[:, 0:7], sampled_boxes[:, 0:7])
        iou_sampled[range(len(sampled_boxes)), range(len(sampled_boxes))] = 0
        hit_existing = iou_existing.max(axis=1) if iou_existing.shape[1] > 0 else np.zeros(len(sampled_boxes))
        return (hit_existing + iou_sampled.max(axis=1)) == 0

    def __call__(self, data_dict):
        """Sample objects into ``data_dict`` (training only).

        Reads ``points`` (N, 3 + C), ``gt_boxes`` (M, 7), ``gt_names`` (M,), ``gt_boxes_mask`` (M,) bool (boxes
        of ``CLASS_NAMES``), and with ``USE_ROAD_PLANE`` ``road_plane`` (4,) and ``calib``. Writes ``points``,
        ``gt_boxes``, ``gt_names`` with the masked GT boxes first, then the sampled ones; drops ``gt_boxes_mask``
        and ``road_plane``.
        """
        gt_boxes = data_dict['gt_boxes']
        gt_names = data_dict['gt_names'].astype(str)
        use_road_plane = self.sampler_cfg.get('USE_ROAD_PLANE', False)
        if use_road_plane and data_dict.get('road_plane') is None:
            raise ValueError(f'gt_sampling.USE_ROAD_PLANE is True but frame {data_dict.get("frame_id")} has no road '
                             f'plane (planes/<frame>.txt missing); set USE_ROAD_PLANE: False for this dataset')
        existed_boxes = gt_boxes[:, 0:7]  # collisions are tested against every GT box, also other classes
        sampled_dicts, sampled_boxes_list, mv_heights = [], [], []
        for class_name, sample_group in self.sample_groups.items():
            if self.limit_whole_scene:
                num_gt = int(np.sum(class_name == gt_names))
                sample_group['sample_num'] = int(self.sample_class_num[class_name]) - num_gt
            if int(sample_group['sample_num']) <= 0 or len(self.db_infos[class_name]) == 0:
                continue
            sampled = self.sample_with_fixed_number(class_name, sample_group)
            boxes = np.stack([x['box3d_lidar'][0:7] for x in sampled], axis=0).astype(np.float32)
            mv_height = np.zeros(len(boxes), dtype=np.float32)
            if use_road_plane:
                boxes, mv_height = self.put_boxes_on_road_planes(boxes, data_dict['road_plane'], data_dict['calib'])
            valid = np.nonzero(self._collision_free(boxes, existed_boxes))[0]
            sampled_dicts += [sampled[i] for i in valid]
            sampled_boxes_list.append(boxes[valid])
            mv_heights.append(mv_height[valid])
            existed_boxes = np.concatenate((existed_boxes, boxes[valid]), axis=0)

        mask = data_dict.pop('gt_boxes_mask')
        data_dict['gt_boxes'], data_dict['gt_names'] = gt_boxes[mask], data_dict['gt_names'][mask]
        data_dict.pop('road_plane', None)
        if len(sampled_dicts) > 0:
            data_dict = self.add_sampled_boxes_to_scene(data_dict, np.concatenate(sampled_boxes_list, axis=0),
                                                        sampled_dicts, np.concatenate(mv_heights, axis=0))
        return data_dict

    def add_sampled_boxes_to_scene(self, data_dict, sampled_gt_boxes, sampled_dicts, mv_height):
        """Load the sampled objects' points, remove scene points inside the (enlarged) sampled boxes, append.

        Args:
            sampled_gt_boxes: (S, 7) float32 placed boxes; sampled_dicts: S db_infos; mv_height: (S,) float32.
        """
        points = data_dict['points']
        num_features = int(self.sampler_cfg.NUM_POINT_FEATURES)
        obj_points_list = []
        for idx, info in enumerate(sampled_dicts):
            file_path = self.root_path / info['path']
            obj_points = np.fromfile(str(file_path), dtype=np.float32)
            if obj_points.size % num_features != 0:
                raise ValueError(f'{file_path}: {obj_points.size} float32 values is not a multiple of '
                                 f'gt_sampling.NUM_POINT_FEATURES={num_features}')
            obj_points = obj_points.reshape(-1, num_features)
            obj_points[:, :3] += info['box3d_lidar'][:3]
            obj_points[:, 2] -= mv_height[idx]
            obj_points_list.append(obj_points)
        obj_points = np.concatenate(obj_points_list, axis=0)
        sampled_names = np.array([x['name'] for x in sampled_dicts])

        extra = self.sampler_cfg.get('REMOVE_EXTRA_WIDTH', [0.0, 0.0, 0.0])
        large_boxes = box_utils.enlarge_box3d(sampled_gt_boxes[:, 0:7], extra_width=extra)
        points = box_utils.remove_points_in_boxes3d(points, large_boxes)
        data_dict['points'] = np.concatenate([obj_points[:, :points.shape[-1]], points], axis=0).astype(np.float32)
        data_dict['gt_names'] = np.concatenate([data_dict['gt_names'], sampled_names], axis=0)
        data_dict['gt_boxes'] = np.concatenate([data_dict['gt_boxes'][:, 0:7], sampled_gt_boxes], axis=0)
        return data_dict


def _split_name_num(item, key):
    """``'Car:15'`` -> ``('Car', 15)``; a malformed item names the config key."""
    parts = str(item).split(':')
    if len(parts) != 2 or not parts[1].strip().lstrip('-').isdigit():
        raise ValueError(f'{key}: expected "Class:number", got {item!r}')
    return parts[0].strip(), int(parts[1])


def _load_pickle(path):
    try:
        with open(path, 'rb') as f:
            return pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as exc:
        raise ValueError(f'{path}: not a readable pickle file ({type(exc).__name__}: {exc})') from exc
