"""KITTI 3D object dataset (OpenPCDet's ``KittiDataset``) and the info / GT-database preparation CLI.

Layout under the root: ``{training,testing}/{velodyne,calib,image_2[,planes]}``, ``training/label_2``,
``ImageSets/{train,val,test}.txt``. Prepare (from the repo root or anywhere)::

    python -m pcdet.datasets.kitti.kitti_dataset create_kitti_infos tools/cfgs/dataset_configs/kitti_dataset.yaml \
        [--data_path DIR] [--workers N]

writes ``kitti_infos_{train,val,trainval[,test]}.pkl``, ``kitti_dbinfos_train.pkl`` and ``gt_database/`` into
the root (keys listed in ``get_infos`` / ``create_groundtruth_database``).
"""
import copy
import pickle
from concurrent import futures
from pathlib import Path

import numpy as np

from ...utils import box_utils, calibration_kitti, common_utils, object3d_kitti
from ..dataset import DatasetTemplate
from . import kitti_utils


class KittiDataset(DatasetTemplate):
    """KITTI frames listed in ``INFO_PATH[mode]`` infos; split files from ``DATA_SPLIT[mode]``."""

    def __init__(self, dataset_cfg, class_names, training=True, root_path=None, logger=None):
        super().__init__(dataset_cfg=dataset_cfg, class_names=class_names, training=training, root_path=root_path,
                         logger=logger)
        self.split = self.dataset_cfg.DATA_SPLIT[self.mode]
        self._set_split_paths(self.split)
        self.kitti_infos = []
        self.include_kitti_data(self.mode)

    def _set_split_paths(self, split):
        self.split = split
        self.root_split_path = self.root_path / ('training' if split != 'test' else 'testing')
        split_file = self.root_path / 'ImageSets' / f'{split}.txt'
        self.sample_id_list = [x.strip() for x in split_file.read_text().splitlines() if x.strip()] \
            if split_file.exists() else None

    def set_split(self, split):
        """Point the dataset at another split (``train``, ``val``, ``test`` ...) for info creation."""
        self._set_split_paths(split)

    def include_kitti_data(self, mode):
        """Load the infos of ``INFO_PATH[mode]`` (missing files are skipped, malformed ones are errors)."""
        if self.logger is not None:
            self.logger.info('Loading KITTI dataset')
        for rel_path in self.dataset_cfg.INFO_PATH[mode]:
            info_path = self.root_path / rel_path
            if not info_path.exists():
                continue
            self.kitti_infos.extend(load_infos(info_path))
        if self.logger is not None:
            self.logger.info('Total samples for KITTI dataset: %d', len(self.kitti_infos))

    # ---- per-frame files -------------------------------------------------------------------------------------
    def get_lidar(self, idx):
        """(N, 4) float32 [x, y, z, reflectance], LiDAR frame."""
        return kitti_utils.read_points_bin(self.root_split_path / 'velodyne' / f'{idx}.bin')

    def get_image_shape(self, idx):
        """(2,) int32 [H, W] of image_2."""
        return kitti_utils.read_image_shape(self.root_split_path / 'image_2' / f'{idx}.png')

    def get_label(self, idx):
        return object3d_kitti.get_objects_from_label(str(self.root_split_path / 'label_2' / f'{idx}.txt'))

    def get_calib(self, idx):
        return calibration_kitti.Calibration(str(self.root_split_path / 'calib' / f'{idx}.txt'))

    def get_road_plane(self, idx):
        """(4,) float32 road plane in the rect camera frame, or None without ``planes/<idx>.txt``."""
        return kitti_utils.read_road_plane(self.root_split_path / 'planes' / f'{idx}.txt')

    @staticmethod
    def get_fov_flag(pts_rect, img_shape, calib):
        return kitti_utils.get_fov_flag(pts_rect, img_shape, calib)

    # ---- info creation ---------------------------------------------------------------------------------------
    def get_infos(self, num_workers=4, has_label=True, count_inside_pts=True, sample_id_list=None):
        """Info dicts of the current split: ``point_cloud {num_features, lidar_idx}``, ``image {image_idx,
        image_shape}``, ``calib {P2, R0_rect, Tr_velo_to_cam}`` (4x4) and with labels ``annos`` (see
        ``kitti_utils.objects_to_annos``) incl. ``num_points_in_gt`` (FOV points in each box, -1 for DontCare)."""

        def process_single_scene(sample_idx):
            calib = self.get_calib(sample_idx)
            info = {'point_cloud': {'num_features': 4, 'lidar_idx': sample_idx},
                    'image': {'image_idx': sample_idx, 'image_shape': self.get_image_shape(sample_idx)},
                    'calib': kitti_utils.calib_to_info(calib)}
            if has_label:
                annos = kitti_utils.objects_to_annos(self.get_label(sample_idx), calib)
                if count_inside_pts:
                    points = self.get_lidar(sample_idx)
                    fov_flag = self.get_fov_flag(calib.lidar_to_rect(points[:, 0:3]), info['image']['image_shape'],
                                                 calib)
                    pts_fov = points[fov_flag]
                    num_points_in_gt = -np.ones(len(annos['name']), dtype=np.int32)
                    n_obj = len(annos['gt_boxes_lidar'])
                    # OpenPCDet's count: FOV points in the box hull, no margin (the GT database crop has one)
                    corners = box_utils.boxes_to_corners_3d(annos['gt_boxes_lidar'])
                    for k in range(n_obj):
                        num_points_in_gt[k] = int(box_utils.in_hull(pts_fov[:, 0:3], corners[k]).sum())
                    annos['num_points_in_gt'] = num_points_in_gt
                info['annos'] = annos
            return info

        sample_id_list = sample_id_list if sample_id_list is not None else self.sample_id_list
        if sample_id_list is None:
            raise FileNotFoundError(f'{self.root_path / "ImageSets" / (self.split + ".txt")}: split file not found')
        if num_workers <= 1:
            return [process_single_scene(idx) for idx in sample_id_list]
        with futures.ThreadPoolExecutor(num_workers) as executor:
            return list(executor.map(process_single_scene, sample_id_list))

    def create_groundtruth_database(self, info_path=None, used_classes=None, split='train'):
        """Write ``gt_database/<idx>_<Class>_<i>.bin`` (points of the full scan inside each GT box, xyz relative
        to the box centre, float32 (n, 4)) and ``kitti_dbinfos_<split>.pkl`` = {class: [db_info]} with keys
        name, path, image_idx, gt_idx, box3d_lidar (7,), num_points_in_gt, difficulty, bbox (4,), score."""
        from ...ops.roiaware_pool3d import roiaware_pool3d_utils

        database_save_path = self.root_path / ('gt_database' if split == 'train' else f'gt_database_{split}')
        db_info_save_path = self.root_path / f'kitti_dbinfos_{split}.pkl'
        database_save_path.mkdir(parents=True, exist_ok=True)
        all_db_infos = {}
        for info in load_infos(info_path):
            sample_idx = info['point_cloud']['lidar_idx']
            points = self.get_lidar(sample_idx)
            annos = info['annos']
            names, gt_boxes = annos['name'], annos['gt_boxes_lidar']
            if len(gt_boxes) == 0:
                continue
            point_indices = np.asarray(roiaware_pool3d_utils.points_in_boxes_cpu(points[:, 0:3], gt_boxes))
            for i in range(gt_boxes.shape[0]):
                filename = f'{sample_idx}_{names[i]}_{i}.bin'
                gt_points = points[point_indices[i] > 0]
                gt_points[:, :3] -= gt_boxes[i, :3]
                gt_points.astype(np.float32).tofile(str(database_save_path / filename))
                if used_classes is None or names[i] in used_classes:
                    db_info = {'name': names[i], 'path': str(Path(database_save_path.name) / filename),
                               'image_idx': sample_idx, 'gt_idx': i, 'box3d_lidar': gt_boxes[i],
                               'num_points_in_gt': gt_points.shape[0], 'difficulty': annos['difficulty'][i],
                               'bbox': annos['bbox'][i], 'score': annos['score'][i]}
                    all_db_infos.setdefault(names[i], []).append(db_info)
        for name, infos in all_db_infos.items():
            if self.logger is not None:
                self.logger.info('Database %s: %d', name, len(infos))
        with open(db_info_save_path, 'wb') as f:
            pickle.dump(all_db_infos, f)
        return all_db_infos

    # ---- evaluation ------------------------------------------------------------------------------------------
    @staticmethod
    def generate_prediction_dicts(batch_dict, pred_dicts, class_names, output_path=None):
        """Model outputs -> KITTI annos, one dict per frame (see ``kitti_utils.predictions_to_kitti``) plus
        ``frame_id``; with ``output_path`` also ``<output_path>/<frame_id>.txt`` in KITTI result format."""
        annos = []
        for index, box_dict in enumerate(pred_dicts):
            image_shape = batch_dict['image_shape'][index]
            image_shape = image_shape.cpu().numpy() if hasattr(image_shape, 'cpu') else np.asarray(image_shape)
            single = kitti_utils.predictions_to_kitti(box_dict, batch_dict['calib'][index], image_shape, class_names)
            frame_id = str(batch_dict['frame_id'][index])
            single['frame_id'] = frame_id
            annos.append(single)
            if output_path is not None:
                Path(output_path).mkdir(parents=True, exist_ok=True)
                kitti_utils.write_kitti_result(Path(output_path) / f'{frame_id}.txt', single)
        return annos

    def evaluation(self, det_annos, class_names, **kwargs):
        """Official KITTI metric of ``det_annos`` against the loaded infos -> (result_str, result_dict)."""
        if len(self.kitti_infos) == 0 or 'annos' not in self.kitti_infos[0]:
            return f'no annotations in the {self.split} infos: nothing to evaluate', {}
        from .kitti_object_eval_python import eval as kitti_eval

        eval_det_annos = copy.deepcopy(det_annos)
        eval_gt_annos = [copy.deepcopy(info['annos']) for info in self.kitti_infos]
        return kitti_eval.get_official_eval_result(eval_gt_annos, eval_det_annos, class_names)

    # ---- samples ---------------------------------------------------------------------------------------------
    def __len__(self):
        if self._merge_all_iters_to_one_epoch:
            return len(self.kitti_infos) * self.total_epochs
        return len(self.kitti_infos)

    def __getitem__(self, index):
        """One processed sample (see ``DatasetTemplate.prepare_data``) plus ``frame_id``, ``calib``,
        ``image_shape`` (2,) int32; ``road_plane`` (4,) in eval when the planes file exists."""
        if self._merge_all_iters_to_one_epoch:
            index = index % len(self.kitti_infos)
        info = copy.deepcopy(self.kitti_infos[index])
        sample_idx = info['point_cloud']['lidar_idx']
        img_shape = np.asarray(info['image']['image_shape'], dtype=np.int32)
        calib = self.get_calib(sample_idx)
        get_item_list = self.dataset_cfg.get('GET_ITEM_LIST', ['points'])
        input_dict = {'frame_id': sample_idx, 'calib': calib}
        if 'annos' in info:
            annos = common_utils.drop_info_with_name(info['annos'], name='DontCare')
            boxes_camera = np.concatenate([annos['location'], annos['dimensions'], annos['rotation_y'][:, None]],
                                          axis=1).astype(np.float32)
            input_dict['gt_names'] = annos['name']
            input_dict['gt_boxes'] = _camera_boxes_to_lidar(boxes_camera, calib)
            if 'gt_boxes2d' in get_item_list:
                input_dict['gt_boxes2d'] = annos['bbox']
            road_plane = self.get_road_plane(sample_idx)
            if road_plane is not None:
                input_dict['road_plane'] = road_plane
        if 'points' in get_item_list:
            points = self.get_lidar(sample_idx)
            if self.dataset_cfg.get('FOV_POINTS_ONLY', True):
                points = points[self.get_fov_flag(calib.lidar_to_rect(points[:, 0:3]), img_shape, calib)]
            input_dict['points'] = points
        data_dict = self.prepare_data(data_dict=input_dict)
        data_dict['image_shape'] = img_shape
        return data_dict


def _camera_boxes_to_lidar(boxes_camera, calib):
    """(M, 7) KITTI camera boxes -> (M, 7) float32 LiDAR boxes (empty-safe)."""
    if len(boxes_camera) == 0:
        return np.zeros((0, 7), dtype=np.float32)
    return box_utils.boxes3d_kitti_camera_to_lidar(boxes_camera, calib).astype(np.float32)


def load_infos(info_path):
    """Load an info pkl: a list of info dicts (each with ``point_cloud``); errors name the file."""
    info_path = Path(info_path)
    try:
        with open(info_path, 'rb') as f:
            infos = pickle.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f'info file not found: {info_path}') from None
    except Exception as exc:  # unpickling raises many types (UnpicklingError, EOFError, ValueError, ...)
        raise ValueError(f'{info_path}: not a readable pickle file ({type(exc).__name__}: {exc})') from exc
    if not isinstance(infos, list):
        raise ValueError(f'{info_path}: expected a list of info dicts, got {type(infos).__name__}')
    for i, info in enumerate(infos):
        if not isinstance(info, dict) or 'point_cloud' not in info or 'lidar_idx' not in info['point_cloud']:
            raise ValueError(f'{info_path}: entry {i} is not a KITTI info dict (needs point_cloud.lidar_idx), '
                             f'got {type(info).__name__}')
    return infos


def create_kitti_infos(dataset_cfg, class_names, data_path, save_path, workers=4):
    """Write the train/val/trainval(/test) infos and the train GT database (OpenPCDet's function)."""
    data_path, save_path = Path(data_path), Path(save_path)
    dataset = KittiDataset(dataset_cfg=dataset_cfg, class_names=class_names, root_path=data_path, training=False)
    filenames = {split: save_path / f'kitti_infos_{split}.pkl' for split in ('train', 'val', 'trainval', 'test')}
    print('---------------Start to generate data infos---------------')
    split_infos = {}
    for split in ('train', 'val'):
        dataset.set_split(split)
        split_infos[split] = dataset.get_infos(num_workers=workers, has_label=True, count_inside_pts=True)
        _dump(split_infos[split], filenames[split], f'Kitti info {split} file is saved to')
    _dump(split_infos['train'] + split_infos['val'], filenames['trainval'], 'Kitti info trainval file is saved to')
    if (data_path / 'testing').is_dir() and (data_path / 'ImageSets' / 'test.txt').is_file():
        dataset.set_split('test')
        infos = dataset.get_infos(num_workers=workers, has_label=False, count_inside_pts=False)
        _dump(infos, filenames['test'], 'Kitti info test file is saved to')
    print('---------------Start create groundtruth database for data augmentation---------------')
    dataset.set_split('train')
    dataset.create_groundtruth_database(filenames['train'], split='train')
    print('---------------Data preparation Done---------------')


def _dump(obj, path, message):
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'wb') as f:
        pickle.dump(obj, f)
    tmp.replace(path)
    print(f'{message} {path}')


def main(argv=None):
    import argparse

    from easydict import EasyDict

    from ...config import cfg_from_yaml_file
    from ..dataset import resolve_data_path

    parser = argparse.ArgumentParser(description='KITTI data preparation (infos + GT database)')
    parser.add_argument('func', choices=['create_kitti_infos'], help='what to run')
    parser.add_argument('cfg_file', help='dataset config, e.g. tools/cfgs/dataset_configs/kitti_dataset.yaml')
    parser.add_argument('--data_path', default=None, help='KITTI root (default: DATA_PATH of the config)')
    parser.add_argument('--workers', type=int, default=4, help='threads reading frames')
    args = parser.parse_args(argv)
    dataset_cfg = cfg_from_yaml_file(args.cfg_file, EasyDict())
    data_path = Path(args.data_path).resolve() if args.data_path else resolve_data_path(dataset_cfg.DATA_PATH)
    if not (data_path / 'training').is_dir():
        raise SystemExit(f'{data_path}: not a KITTI root (no training/ directory); pass --data_path')
    create_kitti_infos(dataset_cfg=dataset_cfg, class_names=['Car', 'Pedestrian', 'Cyclist'], data_path=data_path,
                       save_path=data_path, workers=args.workers)


if __name__ == '__main__':
    main()
