"""KittiDataset on the 13 real KITTI sample frames: infos, GT database, samples, batches, predictions, CLI.

The checks recompute the expected values independently with plain numpy (calibration parsed from the txt
files here, camera->LiDAR conversion and point-in-rotated-box written out below).
"""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from easydict import EasyDict

from pcdet.config import cfg_from_yaml_file
from pcdet.datasets import build_dataloader
from pcdet.datasets.kitti.kitti_dataset import KittiDataset, create_kitti_infos

REPO = Path(__file__).resolve().parent.parent
CFG_FILE = REPO / 'tools' / 'cfgs' / 'dataset_configs' / 'kitti_dataset.yaml'
CLASSES = ['Car', 'Pedestrian', 'Cyclist']
INFO_KEYS = {'point_cloud', 'image', 'calib', 'annos'}
ANNO_KEYS = {'name', 'truncated', 'occluded', 'alpha', 'bbox', 'dimensions', 'location', 'rotation_y', 'score',
             'difficulty', 'index', 'gt_boxes_lidar', 'num_points_in_gt'}
DB_KEYS = {'name', 'path', 'image_idx', 'gt_idx', 'box3d_lidar', 'num_points_in_gt', 'difficulty', 'bbox', 'score'}
MARGIN = 1e-2  # OpenPCDet's CPU points-in-boxes margin on the box sides (see roiaware_pool3d_utils)


def make_root(tmp_path_factory, samples):
    root = tmp_path_factory.mktemp('kitti_ds') / 'kitti'
    root.mkdir()
    for name in ('training', 'ImageSets'):
        (root / name).symlink_to(samples / name, target_is_directory=True)
    return root


def dataset_cfg(pillar=True):
    cfg = cfg_from_yaml_file(str(CFG_FILE), EasyDict())
    if pillar:  # PointPillars' range and voxel: fast to voxelise
        cfg.POINT_CLOUD_RANGE = [0, -39.68, -3, 69.12, 39.68, 1]
        voxel = cfg.DATA_PROCESSOR[2]
        voxel.VOXEL_SIZE, voxel.MAX_POINTS_PER_VOXEL = [0.16, 0.16, 4], 32
    return cfg


@pytest.fixture(scope='module')
def kitti_root(tmp_path_factory, kitti_samples_dir):
    root = make_root(tmp_path_factory, kitti_samples_dir)
    create_kitti_infos(dataset_cfg(False), CLASSES, root, root, workers=2)
    return root


def load(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


# ---- independent numpy geometry ---------------------------------------------------------------------------------
def read_calib(path):
    mats = {}
    for line in Path(path).read_text().splitlines():
        if ':' in line:
            key, vals = line.split(':', 1)
            mats[key] = np.array([float(v) for v in vals.split()])
    p2 = mats['P2'].reshape(3, 4)
    r0 = np.eye(4)
    r0[:3, :3] = mats['R0_rect'].reshape(3, 3)
    v2c = np.eye(4)
    v2c[:3, :4] = mats['Tr_velo_to_cam'].reshape(3, 4)
    return p2, r0 @ v2c  # lidar -> rect (4, 4)


def fov_mask(points, p2, lidar_to_rect, h, w):
    rect = np.hstack([points[:, :3].astype(np.float64), np.ones((len(points), 1))]) @ lidar_to_rect.T
    img = rect @ p2.T
    u, v = img[:, 0] / rect[:, 2], img[:, 1] / rect[:, 2]
    depth = img[:, 2] - p2[2, 3]
    return (u >= 0) & (u < w) & (v >= 0) & (v < h) & (depth >= 0)


def label_boxes_lidar(label_path, lidar_to_rect):
    """Non-DontCare label objects -> (names, (n, 7) LiDAR boxes) by explicit formulas."""
    names, boxes = [], []
    rect_to_lidar = np.linalg.inv(lidar_to_rect)
    for line in Path(label_path).read_text().splitlines():
        f = line.split()
        if not f or f[0] == 'DontCare':
            continue
        h, w, l, x, y, z, ry = (float(v) for v in f[8:15])
        centre = rect_to_lidar @ np.array([x, y, z, 1.0])  # bottom centre, then up by h/2 along LiDAR z
        centre[2] += h / 2
        names.append(f[0])
        boxes.append([centre[0], centre[1], centre[2], l, w, h, -ry - np.pi / 2])
    return names, np.array(boxes).reshape(-1, 7)


def in_box(points, box, margin=MARGIN, z_margin=0.0, inclusive=False):
    d = points[:, :3].astype(np.float64) - box[:3]
    c, s = np.cos(box[6]), np.sin(box[6])
    lx, ly = d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c
    side = np.less_equal if inclusive else np.less
    return side(np.abs(lx), box[3] / 2 + margin) & side(np.abs(ly), box[4] / 2 + margin) & \
        (np.abs(d[:, 2]) <= box[5] / 2 + z_margin)


# ---- infos and GT database --------------------------------------------------------------------------------------
def test_infos_have_openpcdet_keys(kitti_root, kitti_samples_dir):
    train, val = load(kitti_root / 'kitti_infos_train.pkl'), load(kitti_root / 'kitti_infos_val.pkl')
    trainval = load(kitti_root / 'kitti_infos_trainval.pkl')
    assert not (kitti_root / 'kitti_infos_test.pkl').exists()  # no testing/ in the samples
    split = (kitti_samples_dir / 'ImageSets' / 'train.txt').read_text().split()
    assert [i['point_cloud']['lidar_idx'] for i in train] == split
    assert len(train) + len(val) == 13 and [i['point_cloud']['lidar_idx'] for i in trainval] == \
        [i['point_cloud']['lidar_idx'] for i in train + val]
    for info in trainval:
        assert set(info) == INFO_KEYS and set(info['annos']) == ANNO_KEYS
        assert info['point_cloud'] == {'num_features': 4, 'lidar_idx': info['image']['image_idx']}
        assert tuple(info['image']['image_shape']) == (375, 1242) or info['image']['image_shape'][0] > 300
        assert {k: v.shape for k, v in info['calib'].items()} == {k: (4, 4) for k in ('P2', 'R0_rect',
                                                                                       'Tr_velo_to_cam')}
        a = info['annos']
        n, n_obj = len(a['name']), int((a['name'] != 'DontCare').sum())
        assert a['bbox'].shape == (n, 4) and a['dimensions'].shape == (n, 3) and a['location'].shape == (n, 3)
        assert a['gt_boxes_lidar'].shape == (n_obj, 7)
        assert (a['name'][n_obj:] == 'DontCare').all()  # DontCare last
        assert a['index'].tolist() == list(range(n_obj)) + [-1] * (n - n_obj)
        assert (a['num_points_in_gt'][n_obj:] == -1).all() and (a['num_points_in_gt'][:n_obj] >= 0).all()
        assert (a['score'] == -1).all() and set(a['difficulty'].tolist()) <= {-1, 0, 1, 2}


def test_image_shape_matches_decoded_png(kitti_root, kitti_samples_dir):
    from skimage import io
    for info in load(kitti_root / 'kitti_infos_val.pkl'):
        png = kitti_samples_dir / 'training' / 'image_2' / f'{info["image"]["image_idx"]}.png'
        assert tuple(info['image']['image_shape']) == io.imread(str(png)).shape[:2]


def test_boxes_and_num_points_in_gt_match_brute_force(kitti_root, kitti_samples_dir):
    tr = kitti_samples_dir / 'training'
    checked = 0
    for info in load(kitti_root / 'kitti_infos_trainval.pkl'):
        idx = info['point_cloud']['lidar_idx']
        p2, l2r = read_calib(tr / 'calib' / f'{idx}.txt')
        pts = np.fromfile(tr / 'velodyne' / f'{idx}.bin', dtype=np.float32).reshape(-1, 4)
        h, w = info['image']['image_shape']
        pts = pts[fov_mask(pts, p2, l2r, h, w)]
        names, boxes = label_boxes_lidar(tr / 'label_2' / f'{idx}.txt', l2r)
        a = info['annos']
        assert list(a['name'][:len(names)]) == names
        np.testing.assert_allclose(a['gt_boxes_lidar'], boxes, atol=1e-4)
        # OpenPCDet counts points in the box hull, boundary included and without the GT crop's 1 cm margin
        expected = [int(in_box(pts, b, margin=0.0, inclusive=True).sum()) for b in boxes]
        assert a['num_points_in_gt'][:len(names)].tolist() == expected
        checked += sum(e > 0 for e in expected)
    assert checked > 40  # most of the 58 real objects have FOV points


def test_gt_database(kitti_root, kitti_samples_dir):
    db = load(kitti_root / 'kitti_dbinfos_train.pkl')
    infos = {i['point_cloud']['lidar_idx']: i for i in load(kitti_root / 'kitti_infos_train.pkl')}
    assert 'DontCare' not in db and {'Car', 'Pedestrian'} <= set(db)
    total = 0
    for name, entries in db.items():
        for e in entries:
            assert set(e) == DB_KEYS and e['name'] == name
            assert e['path'] == f'gt_database/{e["image_idx"]}_{name}_{e["gt_idx"]}.bin'
            annos = infos[e['image_idx']]['annos']
            np.testing.assert_array_equal(e['box3d_lidar'], annos['gt_boxes_lidar'][e['gt_idx']])
            assert e['difficulty'] == annos['difficulty'][e['gt_idx']]
            obj = np.fromfile(kitti_root / e['path'], dtype=np.float32).reshape(-1, 4)
            assert len(obj) == e['num_points_in_gt']
            # points are stored relative to the box centre and come from the full scan (FOV count <= this)
            centred = e['box3d_lidar'].copy()
            centred[:3] = 0
            assert in_box(obj, centred, margin=MARGIN + 1e-5, z_margin=1e-5).all()
            assert e['num_points_in_gt'] >= annos['num_points_in_gt'][e['gt_idx']]
            total += 1
    n_train_objs = sum(int((i['annos']['name'] != 'DontCare').sum()) for i in infos.values())
    assert total == n_train_objs == len(list((kitti_root / 'gt_database').glob('*.bin')))


# ---- samples and batches ----------------------------------------------------------------------------------------
def test_eval_sample_fov_points_boxes_and_road_plane(kitti_root, kitti_samples_dir):
    ds = KittiDataset(dataset_cfg(), CLASSES, training=False, root_path=kitti_root)
    assert len(ds) == 4 and tuple(ds.grid_size) == (432, 496, 1)
    sample = ds[0]
    idx = sample['frame_id']
    p2, l2r = read_calib(kitti_samples_dir / 'training' / 'calib' / f'{idx}.txt')
    h, w = sample['image_shape']
    assert fov_mask(sample['points'], p2, l2r, h, w).all()  # every point projects into the image
    assert sample['points'].dtype == np.float32 and sample['points'].shape[1] == 4
    names, boxes = label_boxes_lidar(kitti_samples_dir / 'training' / 'label_2' / f'{idx}.txt', l2r)
    keep = [i for i, n in enumerate(names) if n in CLASSES]
    np.testing.assert_allclose(sample['gt_boxes'][:, :7], boxes[keep], atol=1e-4)
    assert sample['gt_boxes'][:, 7].tolist() == [CLASSES.index(names[i]) + 1 for i in keep]
    plane = sample['road_plane']
    assert plane[1] < 0 and abs(np.linalg.norm(plane[:3]) - 1) < 1e-5
    # the LiDAR sits ~1.73 m above the road: the plane passes ~1.65 m below the camera
    assert 1.4 < plane[3] < 1.9
    assert sample['voxels'].shape[1:] == (32, 4) and sample['voxel_coords'].shape[1] == 3


def check_train_batch(batch, bs):
    assert {'frame_id', 'calib', 'points', 'voxels', 'voxel_coords', 'voxel_num_points', 'gt_boxes', 'use_lead_xyz',
            'image_shape', 'flip_x', 'noise_rot', 'noise_scale', 'lidar_aug_matrix', 'batch_size'} <= set(batch)
    assert 'road_plane' not in batch and 'gt_names' not in batch
    assert batch['batch_size'] == bs and len(batch['calib']) == bs and batch['frame_id'].shape == (bs,)
    pts, vox, coords, nump = batch['points'], batch['voxels'], batch['voxel_coords'], batch['voxel_num_points']
    assert pts.dtype == np.float32 and pts.shape[1] == 5 and set(np.unique(pts[:, 0])) == set(range(bs))
    assert vox.dtype == np.float32 and vox.shape[1:] == (32, 4) and len(vox) == len(coords) == len(nump)
    assert coords.dtype == np.int32 and coords.shape[1] == 4 and set(np.unique(coords[:, 0])) == set(range(bs))
    assert (coords[:, 1] == 0).all() and coords[:, 2].max() < 496 and coords[:, 3].max() < 432
    assert nump.dtype == np.int32 and 1 <= nump.min() and nump.max() <= 32
    assert sum(nump) <= len(pts)
    gt = batch['gt_boxes']
    assert gt.dtype == np.float32 and gt.ndim == 3 and gt.shape[0] == bs and gt.shape[2] == 8
    real = gt[..., 7] > 0
    assert set(np.unique(gt[..., 7][real])) <= {1.0, 2.0, 3.0} and (gt[~real] == 0).all()
    assert (np.abs(gt[..., 6][real]) <= np.pi + 1e-6).all()
    assert batch['image_shape'].shape == (bs, 2) and batch['image_shape'].dtype == np.int32
    assert batch['lidar_aug_matrix'].shape == (bs, 4, 4) and batch['flip_x'].dtype == np.bool_
    assert batch['noise_rot'].shape == batch['noise_scale'].shape == (bs,)
    assert batch['use_lead_xyz'].all()


def test_training_dataloader_batch_with_all_augmentations(kitti_root):
    np.random.seed(3)
    dataset, loader, sampler = build_dataloader(dataset_cfg(), CLASSES, batch_size=3, dist=False,
                                                root_path=kitti_root, workers=0, training=True)
    assert sampler is None and len(dataset) == 9 and dataset.data_augmentor is not None
    assert [a.__class__.__name__ if not hasattr(a, 'func') else a.func.__name__
            for a in dataset.data_augmentor.data_augmentor_queue] == \
        ['DataBaseSampler', 'random_world_flip', 'random_world_rotation', 'random_world_scaling']
    batch = next(iter(loader))
    check_train_batch(batch, 3)
    # gt_sampling (LIMIT_WHOLE_SCENE, up to 20 cars) pasted objects: more boxes than any train frame has
    n_boxes = (batch['gt_boxes'][..., 7] > 0).sum(axis=1)
    assert n_boxes.max() > 8
    # deterministic under numpy's global seed
    np.random.seed(3)
    dataset2, loader2, _ = build_dataloader(dataset_cfg(), CLASSES, batch_size=3, dist=False, root_path=kitti_root,
                                            workers=0, training=True)
    torch.manual_seed(0)
    batch_a = dataset2.collate_batch([dataset2[i] for i in range(2)])
    np.random.seed(3)
    dataset3, _, _ = build_dataloader(dataset_cfg(), CLASSES, batch_size=3, dist=False, root_path=kitti_root,
                                      workers=0, training=True)
    batch_b = dataset3.collate_batch([dataset3[i] for i in range(2)])
    for key in ('points', 'voxels', 'voxel_coords', 'gt_boxes', 'lidar_aug_matrix'):
        np.testing.assert_array_equal(batch_a[key], batch_b[key])


def test_dataloader_from_config_path_and_workers(kitti_root):
    cfg = dataset_cfg()
    cfg.DATA_PATH = str(kitti_root)  # absolute DATA_PATH (no root_path argument)
    dataset, loader, _ = build_dataloader(cfg, CLASSES, batch_size=2, dist=False, workers=1, seed=7,
                                          training=False, merge_all_iters_to_one_epoch=True, total_epochs=3)
    assert dataset.root_path == kitti_root and len(dataset) == 12
    batch = next(iter(loader))
    assert batch['batch_size'] == 2 and batch['road_plane'].shape == (2, 4) and 'flip_x' not in batch
    with pytest.raises(KeyError, match='KittiDataset'):
        build_dataloader(EasyDict(cfg, DATASET='NoSuchDataset'), CLASSES, 1, False, workers=0)


# ---- predictions and evaluation ---------------------------------------------------------------------------------
def test_generate_prediction_dicts_round_trips_gt(kitti_root, tmp_path):
    ds = KittiDataset(dataset_cfg(), CLASSES, training=False, root_path=kitti_root)
    batch = ds.collate_batch([ds[0], ds[1]])
    preds = []
    for b in range(2):
        gt = batch['gt_boxes'][b]
        gt = gt[gt[:, 7] > 0]
        preds.append({'pred_boxes': torch.from_numpy(gt[:, :7]), 'pred_scores': torch.linspace(0.9, 0.5, len(gt)),
                      'pred_labels': torch.from_numpy(gt[:, 7]).long()})
    annos = KittiDataset.generate_prediction_dicts(batch, preds, CLASSES, output_path=tmp_path / 'data')
    for b, anno in enumerate(annos):
        info_annos = ds.kitti_infos[b]['annos']
        keep = np.isin(info_annos['name'], CLASSES)
        assert anno['frame_id'] == ds.kitti_infos[b]['point_cloud']['lidar_idx']
        assert list(anno['name']) == list(info_annos['name'][keep])
        np.testing.assert_allclose(anno['location'], info_annos['location'][keep], atol=2e-4)
        np.testing.assert_allclose(anno['dimensions'], info_annos['dimensions'][keep], atol=2e-4)
        rot_err = np.abs((anno['rotation_y'] - info_annos['rotation_y'][keep] + np.pi) % (2 * np.pi) - np.pi)
        assert rot_err.max() < 1e-4
        # projected 3D box ~ the labelled 2D box for unoccluded, untruncated objects
        clear = (info_annos['truncated'][keep] == 0)
        assert np.abs(anno['bbox'][clear] - info_annos['bbox'][keep][clear]).max() < 40
        lines = (tmp_path / 'data' / f'{anno["frame_id"]}.txt').read_text().splitlines()
        assert len(lines) == len(anno['name']) and all(len(x.split()) == 16 for x in lines)
        f = lines[0].split()
        assert f[0] == anno['name'][0] and float(f[8]) == pytest.approx(anno['dimensions'][0][1], abs=1e-3)


def test_evaluation_calls_official_metric(kitti_root):
    ds = KittiDataset(dataset_cfg(), CLASSES, training=False, root_path=kitti_root)
    det_annos = []
    for info in ds.kitti_infos:
        a = info['annos']
        keep = a['name'] != 'DontCare'
        det = {k: a[k][keep] for k in ('name', 'truncated', 'occluded', 'alpha', 'bbox', 'dimensions', 'location',
                                       'rotation_y')}
        det['score'] = np.full(keep.sum(), 0.9)
        det['boxes_lidar'] = a['gt_boxes_lidar']
        det['frame_id'] = info['point_cloud']['lidar_idx']
        det_annos.append(det)
    result_str, result_dict = ds.evaluation(det_annos, CLASSES)
    assert isinstance(result_str, str) and 'Car' in result_str
    # GT as detections: every Car level with >= 2 valid boxes gets AP > 0 (n_gt - 1)/40 capped, see the spec)
    car = {k: v for k, v in result_dict.items() if k.startswith('Car_3d/')}
    # n valid Cars per level (KITTI devkit: bbox height > 40 / 25 / 25 px, occlusion <= 0 / 1 / 2, truncation
    # <= 0.15 / 0.3 / 0.5): equal scores give n thresholds with precision 1, R40 counts n - 1 of them
    expected = []
    for min_height, max_occ, max_trunc in ((40, 0, 0.15), (25, 1, 0.3), (25, 2, 0.5)):
        n = sum(int(((a['name'] == 'Car') & (a['bbox'][:, 3] - a['bbox'][:, 1] > min_height)
                     & (a['occluded'] <= max_occ) & (a['truncated'] <= max_trunc)).sum())
                for a in (info['annos'] for info in ds.kitti_infos))
        expected.append(100.0 * min(max(n - 1, 0), 40) / 40)
    assert expected == [0.0, 20.0, 25.0]                               # 1, 9 and 11 valid Cars in the 4 val frames
    assert len(car) == 3, car
    assert [car[f'Car_3d/{lvl}_R40'] for lvl in ('easy', 'moderate', 'hard')] == pytest.approx(expected), car


# ---- CLI ---------------------------------------------------------------------------------------------------------
def test_cli_from_tools_dir(tmp_path_factory, kitti_samples_dir):
    root = make_root(tmp_path_factory, kitti_samples_dir)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, '-m', 'pcdet.datasets.kitti.kitti_dataset', 'create_kitti_infos',
                           'cfgs/dataset_configs/kitti_dataset.yaml', '--data_path', str(root), '--workers', '1'],
                          cwd=REPO / 'tools', env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ('kitti_infos_train.pkl', 'kitti_infos_val.pkl', 'kitti_infos_trainval.pkl',
                 'kitti_dbinfos_train.pkl'):
        assert (root / name).is_file()
    assert len(list((root / 'gt_database').glob('*_Car_*.bin'))) > 10


def test_in_hull_counts_the_box_boundary_and_nothing_outside():
    from pcdet.utils.box_utils import boxes_to_corners_3d, in_hull
    box = np.array([[1.0, 2.0, 0.5, 4.0, 2.0, 1.0, np.pi / 6]])
    corners = boxes_to_corners_3d(box)[0]
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    local = np.array([[0, 0, 0], [1.99, 0.99, 0.49], [2.0, 0.0, 0.0], [2.01, 0, 0], [0, 1.02, 0], [0, 0, -0.51]])
    world = np.stack([local[:, 0] * c - local[:, 1] * s + 1.0, local[:, 0] * s + local[:, 1] * c + 2.0,
                      local[:, 2] + 0.5], axis=1)
    assert in_hull(world, corners).tolist() == [True, True, True, False, False, False]
    flat = boxes_to_corners_3d(np.array([[0.0, 0, 0, 1, 1, 0, 0]]))[0]   # zero height: no volume
    assert not in_hull(world, flat).any()
