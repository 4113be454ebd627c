"""Augmentations on real KITTI frames: flip / rotation / scaling keep box membership, lidar_aug_matrix is the
applied map, gt_sampling pastes non-overlapping objects on the road with their database points, seeded runs
repeat. Overlaps are checked with shapely polygons (independent of the project's rotated IoU)."""
import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
from easydict import EasyDict
from shapely.geometry import Polygon

from pcdet.config import cfg_from_yaml_file
from pcdet.datasets.augmentor import augmentor_utils
from pcdet.datasets.augmentor.data_augmentor import DataAugmentor
from pcdet.datasets.augmentor.database_sampler import DataBaseSampler
from pcdet.datasets.kitti.kitti_dataset import KittiDataset, create_kitti_infos
from pcdet.utils import calibration_kitti

REPO = Path(__file__).resolve().parent.parent
CFG_FILE = REPO / 'tools' / 'cfgs' / 'dataset_configs' / 'kitti_dataset.yaml'
CLASSES = ['Car', 'Pedestrian', 'Cyclist']


@pytest.fixture(scope='module')
def root(tmp_path_factory, kitti_samples_dir):
    r = tmp_path_factory.mktemp('kitti_aug') / 'kitti'
    r.mkdir()
    for name in ('training', 'ImageSets'):
        (r / name).symlink_to(kitti_samples_dir / name, target_is_directory=True)
    create_kitti_infos(cfg_from_yaml_file(str(CFG_FILE), EasyDict()), CLASSES, r, r, workers=2)
    return r


@pytest.fixture(scope='module')
def cfg():
    return cfg_from_yaml_file(str(CFG_FILE), EasyDict())


def raw_frame(root, cfg, index=1):
    """A raw (un-augmented) training frame: FOV points and LiDAR GT boxes, as KittiDataset builds them."""
    ds = KittiDataset(cfg, CLASSES, training=False, root_path=root)
    ds.kitti_infos = []
    ds.set_split('train')
    with open(root / 'kitti_infos_train.pkl', 'rb') as f:
        info = pickle.load(f)[index]
    idx = info['point_cloud']['lidar_idx']
    calib = ds.get_calib(idx)
    pts = ds.get_lidar(idx)
    pts = pts[ds.get_fov_flag(calib.lidar_to_rect(pts[:, :3]), info['image']['image_shape'], calib)]
    a = info['annos']
    keep = a['name'] != 'DontCare'
    return {'frame_id': idx, 'points': pts, 'gt_boxes': a['gt_boxes_lidar'].copy(), 'gt_names': a['name'][keep],
            'calib': calib, 'road_plane': ds.get_road_plane(idx)}


def inside(points, boxes, margin=0.0, z_margin=None):
    """(M, N) strict point-in-rotated-box test in numpy float64 (``margin`` on the sides, ``z_margin`` on
    top/bottom, default the same)."""
    z_margin = margin if z_margin is None else z_margin
    d = points[None, :, :3].astype(np.float64) - boxes[:, None, :3]
    c, s = np.cos(boxes[:, 6:7]), np.sin(boxes[:, 6:7])
    lx, ly = d[..., 0] * c + d[..., 1] * s, -d[..., 0] * s + d[..., 1] * c
    return (np.abs(lx) < boxes[:, 3:4] / 2 + margin) & (np.abs(ly) < boxes[:, 4:5] / 2 + margin) & \
        (np.abs(d[..., 2]) < boxes[:, 5:6] / 2 + z_margin)


def bev_polygon(box):
    c, s = np.cos(box[6]), np.sin(box[6])
    corners = [(sx * box[3] / 2, sy * box[4] / 2) for sx, sy in ((1, 1), (1, -1), (-1, -1), (-1, 1))]
    return Polygon([(box[0] + x * c - y * s, box[1] + x * s + y * c) for x, y in corners])


@pytest.mark.parametrize('name', ['flip_x', 'flip_y', 'rotation', 'scaling'])
def test_transforms_keep_points_inside_boxes(root, cfg, name):
    frame = raw_frame(root, cfg)
    pts, boxes = frame['points'], frame['gt_boxes']
    before = inside(pts, boxes)
    assert before.sum() > 50
    if name == 'flip_x':
        new_boxes, new_pts, _, _ = augmentor_utils.random_flip_along_x(boxes, pts, enable=True)
    elif name == 'flip_y':
        new_boxes, new_pts, _, _ = augmentor_utils.random_flip_along_y(boxes, pts, enable=True)
    elif name == 'rotation':
        np.random.seed(0)
        new_boxes, new_pts, angle, _ = augmentor_utils.global_rotation(boxes, pts, rot_range=[-0.785, 0.785])
        assert angle == np.random.RandomState(0).uniform(-0.785, 0.785)     # one uniform draw of the seed
        c, s = np.cos(angle), np.sin(angle)
        np.testing.assert_allclose(new_pts[:, :2], pts[:, :2] @ np.array([[c, s], [-s, c]]), atol=1e-4)
        np.testing.assert_allclose(new_boxes[:, 6], boxes[:, 6] + angle, atol=1e-6)
    else:
        np.random.seed(0)
        new_boxes, new_pts, scale, _ = augmentor_utils.global_scaling(boxes, pts, scale_range=[0.95, 1.05])
        assert scale == np.random.RandomState(0).uniform(0.95, 1.05)
        np.testing.assert_allclose(new_pts[:, :3], pts[:, :3] * scale, rtol=1e-6)
        np.testing.assert_allclose(new_boxes[:, :6], boxes[:, :6] * scale, rtol=1e-6)
    assert not np.allclose(new_pts[:, :3], pts[:, :3])
    np.testing.assert_array_equal(new_pts[:, 3], pts[:, 3])
    after = inside(new_pts, new_boxes, margin=1e-4)  # float32 rounding only
    assert after[before].all()
    assert after.sum() <= inside(new_pts, new_boxes, margin=2e-2).sum()


def test_augmentor_queue_and_lidar_aug_matrix(root, cfg):
    aug_cfg = copy.deepcopy(cfg.DATA_AUGMENTOR)
    aug_cfg.DISABLE_AUG_LIST = ['gt_sampling']
    augmentor = DataAugmentor(root, aug_cfg, CLASSES)
    assert len(augmentor.data_augmentor_queue) == 3
    frame = raw_frame(root, cfg)
    mask = np.isin(frame['gt_names'], CLASSES)
    np.random.seed(5)
    out = augmentor.forward({**copy.deepcopy(frame), 'gt_boxes_mask': mask})
    assert 'road_plane' not in out and 'gt_boxes_mask' not in out
    assert len(out['gt_boxes']) == mask.sum() and list(out['gt_names']) == list(frame['gt_names'][mask])
    m = out['lidar_aug_matrix']
    assert m.dtype == np.float32 and m.shape == (4, 4)
    expected = (m[:3, :3].astype(np.float64) @ frame['points'][:, :3].T.astype(np.float64)).T
    np.testing.assert_allclose(out['points'][:, :3], expected, atol=1e-3)
    np.testing.assert_allclose(np.abs(np.linalg.det(m[:3, :3])), out['noise_scale'] ** 3, rtol=1e-5)
    # all disabled: points untouched
    aug_cfg.DISABLE_AUG_LIST = ['gt_sampling', 'random_world_flip', 'random_world_rotation', 'random_world_scaling']
    out = DataAugmentor(root, aug_cfg, CLASSES).forward({**copy.deepcopy(frame), 'gt_boxes_mask': mask})
    np.testing.assert_array_equal(out['points'], frame['points'])
    np.testing.assert_array_equal(out['lidar_aug_matrix'], np.eye(4))


def sampler_cfg(cfg):
    return copy.deepcopy(cfg.DATA_AUGMENTOR.AUG_CONFIG_LIST[0])


def test_database_prepare_filters(root, cfg):
    sampler = DataBaseSampler(root, sampler_cfg(cfg), CLASSES)
    with open(root / 'kitti_dbinfos_train.pkl', 'rb') as f:
        raw = pickle.load(f)
    for name in CLASSES:
        expect = [e for e in raw.get(name, []) if e['difficulty'] != -1 and e['num_points_in_gt'] >= 5]
        assert [e['path'] for e in sampler.db_infos[name]] == [e['path'] for e in expect]
    assert len(sampler.db_infos['Car']) >= 5
    assert set(sampler.sample_groups) == set(CLASSES)


def test_gt_sampling_places_objects_without_overlap_on_road(root, cfg):
    scfg = sampler_cfg(cfg)
    sampler = DataBaseSampler(root, scfg, CLASSES)
    frame = raw_frame(root, cfg, index=3)
    n_gt = len(frame['gt_boxes'])
    mask = np.isin(frame['gt_names'], CLASSES)
    np.random.seed(1)
    out = sampler({**copy.deepcopy(frame), 'gt_boxes_mask': mask})
    boxes, names, pts = out['gt_boxes'], out['gt_names'], out['points']
    n_kept = int(mask.sum())
    sampled = boxes[n_kept:]
    assert len(sampled) > 0 and 'road_plane' not in out and 'gt_boxes_mask' not in out
    np.testing.assert_array_equal(boxes[:n_kept], frame['gt_boxes'][mask])
    # LIMIT_WHOLE_SCENE: never more than SAMPLE_GROUPS per class in the scene
    for group in scfg.SAMPLE_GROUPS:
        cls, num = group.split(':')
        assert (names == cls).sum() <= max(int(num), (frame['gt_names'] == cls).sum())
    # no BEV overlap among all boxes (original ones of every class included)
    all_boxes = np.concatenate([frame['gt_boxes'], sampled])
    polys = [bev_polygon(b) for b in all_boxes]
    for i in range(n_gt, len(polys)):
        for j in range(len(polys)):
            if i != j:
                assert polys[i].intersection(polys[j]).area < 1e-6
    # bottoms on the road plane (rect camera frame: a x + b y + c z + d = 0)
    a, b, c, d = frame['road_plane']
    bottoms = sampled[:, :3].copy()
    bottoms[:, 2] -= sampled[:, 5] / 2
    calib = frame['calib']
    assert isinstance(calib, calibration_kitti.Calibration)
    rect = calib.lidar_to_rect(bottoms.astype(np.float64))
    np.testing.assert_allclose(a * rect[:, 0] + b * rect[:, 1] + c * rect[:, 2] + d, 0, atol=2e-2)
    # each sampled box holds exactly its database object's points (scene points inside were removed)
    # (the removal test is points_in_boxes_cpu's: 1 cm margin on the sides, none on top and bottom)
    counts = inside(pts, sampled, margin=1e-2, z_margin=1e-5).sum(axis=1)
    with open(root / 'kitti_dbinfos_train.pkl', 'rb') as f:
        db = pickle.load(f)
    db_counts = sorted(e['num_points_in_gt'] for cls in CLASSES for e in db.get(cls, []))
    assert (counts >= 5).all() and all(cnt in db_counts for cnt in counts.tolist())  # PREPARE min points 5
    assert pts.dtype == np.float32 and len(pts) != len(frame['points'])


def test_gt_sampling_is_deterministic_under_seed(root, cfg):
    frame = raw_frame(root, cfg, index=0)
    mask = np.isin(frame['gt_names'], CLASSES)
    outs = []
    for _ in range(2):
        np.random.seed(11)
        sampler = DataBaseSampler(root, sampler_cfg(cfg), CLASSES)
        outs.append(sampler({**copy.deepcopy(frame), 'gt_boxes_mask': mask}))
    np.testing.assert_array_equal(outs[0]['gt_boxes'], outs[1]['gt_boxes'])
    np.testing.assert_array_equal(outs[0]['points'], outs[1]['points'])


def test_bad_augmentor_config_names_key(root, cfg):
    aug_cfg = copy.deepcopy(cfg.DATA_AUGMENTOR)
    aug_cfg.AUG_CONFIG_LIST[1].NAME = 'random_world_wobble'
    with pytest.raises(KeyError, match='random_world_wobble'):
        DataAugmentor(root, aug_cfg, CLASSES)
    scfg = sampler_cfg(cfg)
    scfg.SAMPLE_GROUPS = ['Car15']
    with pytest.raises(ValueError, match='SAMPLE_GROUPS'):
        DataBaseSampler(root, scfg, CLASSES)
