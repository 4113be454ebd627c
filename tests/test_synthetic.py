"""Synthetic KITTI-format set: determinism, KITTI file formats, label geometry, point density and occlusion.

One small tree (8 training frames) is generated per session; scene-level checks build scenes directly.
"""
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from pcdet.datasets.synthetic import generate_dataset, make_frame
from pcdet.datasets.synthetic import labels as synth_labels
from pcdet.datasets.synthetic.scene import Scene
from pcdet.datasets.synthetic.sensor import LidarSensor, simulate_scan
from pcdet.utils import box_utils
from pcdet.utils.calibration_kitti import Calibration
from pcdet.utils.object3d_kitti import get_objects_from_label

REPO = Path(__file__).resolve().parent.parent
NUM_TRAIN, NUM_VAL, NUM_TEST, SEED = 6, 2, 1, 3


def _tree_digest(root):
    """{relative path: sha256} of every file under root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synth') / 'kitti_synth'
    generate_dataset(root, NUM_TRAIN, NUM_VAL, SEED, num_test=NUM_TEST, workers=1)
    return root


def test_tree_layout(synth_root):
    sets = {n: (synth_root / 'ImageSets' / f'{n}.txt').read_text().split()
            for n in ('train', 'val', 'trainval', 'test')}
    assert sets['train'] == [f'{i:06d}' for i in range(NUM_TRAIN)]
    assert sets['val'] == [f'{i:06d}' for i in range(NUM_TRAIN, NUM_TRAIN + NUM_VAL)]
    assert sets['trainval'] == sets['train'] + sets['val']
    assert sets['test'] == ['000000']
    for fid in sets['trainval']:
        for sub, ext in (('velodyne', 'bin'), ('label_2', 'txt'), ('calib', 'txt'), ('image_2', 'png'),
                         ('planes', 'txt')):
            assert (synth_root / 'training' / sub / f'{fid}.{ext}').is_file(), (sub, fid)
    assert (synth_root / 'testing' / 'velodyne' / '000000.bin').is_file()
    assert not (synth_root / 'testing' / 'label_2').exists()


def test_determinism_by_seed(synth_root, tmp_path):
    again = tmp_path / 'again'
    generate_dataset(again, NUM_TRAIN, NUM_VAL, SEED, num_test=NUM_TEST, workers=2)  # other process layout
    assert _tree_digest(again) == _tree_digest(synth_root)
    other = tmp_path / 'other'
    generate_dataset(other, 2, 0, SEED + 1, workers=1)
    first = (synth_root / 'training' / 'velodyne' / '000000.bin').read_bytes()
    assert (other / 'training' / 'velodyne' / '000000.bin').read_bytes() != first


def test_files_parse_like_kitti(synth_root):
    from skimage import io
    for fid in (synth_root / 'ImageSets' / 'trainval.txt').read_text().split():
        pts = np.fromfile(synth_root / 'training' / 'velodyne' / f'{fid}.bin', dtype=np.float32).reshape(-1, 4)
        assert 50_000 < len(pts) < 200_000
        assert np.all((pts[:, 3] >= 0) & (pts[:, 3] < 1))
        # ground points sit about 1.73 m below the sensor
        assert abs(np.median(pts[np.hypot(pts[:, 0], pts[:, 1]) < 8, 2]) + 1.73) < 0.2
        calib = Calibration(str(synth_root / 'training' / 'calib' / f'{fid}.txt'))
        assert calib.P2.shape == (3, 4) and abs(calib.fu - 721.5377) < 1e-6
        img = io.imread(synth_root / 'training' / 'image_2' / f'{fid}.png')
        assert img.shape == (375, 1242, 3) and img.dtype == np.uint8
        plane_lines = (synth_root / 'training' / 'planes' / f'{fid}.txt').read_text().splitlines()
        plane = np.array([float(v) for v in plane_lines[3].split()])
        assert plane.shape == (4,) and plane[1] < -0.99 and 1.5 < plane[3] < 1.9
        objs = get_objects_from_label(str(synth_root / 'training' / 'label_2' / f'{fid}.txt'))
        names = [o.cls_type for o in objs]
        assert set(names) <= {'Car', 'Pedestrian', 'Cyclist', 'Van', 'Truck', 'DontCare'}
        if 'DontCare' in names:  # DontCare lines come last, as in KITTI
            assert all(n == 'DontCare' for n in names[names.index('DontCare'):])
        for o in objs:
            assert 0 <= o.box2d[0] <= o.box2d[2] <= 1241 and 0 <= o.box2d[1] <= o.box2d[3] <= 374
            if o.cls_type != 'DontCare':
                assert o.loc[2] > 0 and 0 <= o.truncation <= 1 and o.occlusion in (0, 1, 2, 3)


def test_label_boxes_match_scene():
    """Camera labels converted back with OpenPCDet's conversion give the simulated LiDAR boxes; alpha is KITTI's."""
    frame = make_frame(SEED, 0)
    scene, calib = frame['scene'], frame['calib']
    objs = [r for r in frame['labels'] if r['name'] != 'DontCare']
    assert objs
    lines = synth_labels.format_label_lines(objs).splitlines()
    cam = np.array([[float(v) for v in ln.split()[11:14]] + [float(v) for v in (ln.split()[10], ln.split()[8],
                                                                                 ln.split()[9], ln.split()[14])]
                    for ln in lines])  # [x, y, z, l, h, w, ry]
    lidar = box_utils.boxes3d_kitti_camera_to_lidar(cam, calib)
    truth = np.array([scene.entities[r['entity']]['box'] for r in objs])
    np.testing.assert_allclose(lidar[:, :6], truth[:, :6], atol=0.02)
    dh = (lidar[:, 6] - truth[:, 6] + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(dh, 0, atol=0.01)
    for r, box in zip(objs, truth):
        expect = -np.arctan2(-box[1], box[0]) + r['rotation_y']  # OpenPCDet's alpha from LiDAR boxes
        assert abs((r['alpha'] - expect + np.pi) % (2 * np.pi) - np.pi) < 0.02


def _single_object_points(objects, rng_seed=0):
    """Simulate a scene holding only ``objects`` [(name, x, y, size)]; returns points per entity and labels."""
    rng = np.random.default_rng(rng_seed)
    scene = Scene(sensor_height=1.73)
    for name, x, y, size in objects:
        scene.add_object(name, x, y, 0.0, size, rng)
    _, _, stats = simulate_scan(scene, LidarSensor(), rng)
    records = synth_labels.compute_labels(scene, stats, synth_labels.kitti_calibration())
    return stats, {r['entity']: r for r in records}


def test_points_per_object_fall_with_distance(synth_root):
    for name, size in (('Car', (3.9, 1.6, 1.5)), ('Pedestrian', (0.8, 0.6, 1.75)), ('Cyclist', (1.76, 0.6, 1.74))):
        counts = [_single_object_points([(name, d, 0.0, size)])[0]['num_points'][0] for d in (7, 14, 28, 45)]
        assert all(a > b for a, b in zip(counts, counts[1:])), (name, counts)
        assert counts[-1] > 0, (name, counts)
    # and over the generated frames: near cars hold many more points than far ones
    near, far = [], []
    for i in range(NUM_TRAIN + NUM_VAL):
        frame = make_frame(SEED, i)
        for r in frame['labels']:
            if r['name'] == 'Car':
                d = float(np.linalg.norm(r['location'][[0, 2]]))
                (near if d < 20 else far if d > 35 else []).append(r['num_points'])
    assert near and far and np.median(near) > 4 * np.median(far)


def test_occluded_object_has_fewer_points_and_higher_occlusion():
    car = ('Car', 20.0, 0.0, (3.9, 1.6, 1.5))
    alone, alone_labels = _single_object_points([car])
    # a van between the sensor and the car, slightly offset so the car is partly hidden
    both, both_labels = _single_object_points([car, ('Van', 10.0, 0.9, (5.0, 1.9, 2.2))])
    assert 0 < both['num_points'][0] < 0.7 * alone['num_points'][0]
    assert both['would_rays'][0] == alone['would_rays'][0]  # same object, same unblocked rays
    assert alone_labels[0]['occluded'] == 0
    assert both_labels[0]['occluded'] > alone_labels[0]['occluded']


def test_difficulty_classes_populated(synth_root):
    levels = set()
    for fid in (synth_root / 'ImageSets' / 'trainval.txt').read_text().split():
        for o in get_objects_from_label(str(synth_root / 'training' / 'label_2' / f'{fid}.txt')):
            if o.cls_type in ('Car', 'Pedestrian', 'Cyclist'):
                levels.add(o.level)
    assert {0, 1, 2} <= levels, levels


def test_create_kitti_infos(synth_root, tmp_path):
    from easydict import EasyDict

    from pcdet.config import cfg_from_yaml_file
    from pcdet.datasets.kitti import kitti_dataset
    cfg = cfg_from_yaml_file(str(REPO / 'tools' / 'cfgs' / 'dataset_configs' / 'kitti_synth_dataset.yaml'),
                             EasyDict())
    root = tmp_path / 'kitti_synth'
    root.mkdir()
    for name in ('training', 'testing', 'ImageSets'):
        (root / name).symlink_to(synth_root / name, target_is_directory=True)
    kitti_dataset.create_kitti_infos(cfg, ['Car', 'Pedestrian', 'Cyclist'], root, root, workers=1)
    with open(root / 'kitti_infos_train.pkl', 'rb') as f:
        infos = pickle.load(f)
    assert [info['point_cloud']['lidar_idx'] for info in infos] == [f'{i:06d}' for i in range(NUM_TRAIN)]
    frame = make_frame(SEED, 0)
    objs = [r for r in frame['labels'] if r['name'] != 'DontCare']
    boxes = infos[0]['annos']['gt_boxes_lidar']
    truth = np.array([frame['scene'].entities[r['entity']]['box'] for r in objs])
    np.testing.assert_allclose(boxes[:, :6], truth[:, :6], atol=0.02)
    assert (infos[0]['annos']['num_points_in_gt'][:len(objs)] >= 0).all()
    with open(root / 'kitti_dbinfos_train.pkl', 'rb') as f:
        db_infos = pickle.load(f)
    # one database entry per Car label line of the training frames
    n_cars = sum(line.startswith('Car ') for i in range(NUM_TRAIN)
                 for line in (synth_root / 'training' / 'label_2' / f'{i:06d}.txt').read_text().splitlines())
    assert n_cars > 0 and len(db_infos['Car']) == n_cars
    for name in ('val', 'trainval', 'test'):
        assert (root / f'kitti_infos_{name}.pkl').is_file()
