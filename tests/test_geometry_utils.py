"""Geometry utilities on the real KITTI sample frames: calibration, label parsing, box conversions, corners.

Expected values come from independent sources: the sample set's NOTICE (object counts), the labelled 2D boxes
(for projections), plain numpy rotation matrices and brute-force point-in-box tests.
"""
import logging
import struct
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcdet.utils import box_utils, common_utils
from pcdet.utils.calibration_kitti import Calibration, get_calib_from_file
from pcdet.utils.object3d_kitti import Object3d, get_objects_from_label


def frame_ids(root):
    return sorted(p.stem for p in (root / 'training' / 'label_2').glob('*.txt'))


def image_shape(root, frame):
    """(H, W) from the PNG header (IHDR width/height at bytes 16..24)."""
    with open(root / 'training' / 'image_2' / f'{frame}.png', 'rb') as f:
        width, height = struct.unpack('>II', f.read(24)[16:24])
    return height, width


def load_points(root, frame):
    return np.fromfile(root / 'training' / 'velodyne' / f'{frame}.bin', dtype=np.float32).reshape(-1, 4)


def camera_boxes(objects):
    """(N, 7) float64 [x, y, z, l, h, w, ry] of the labelled objects."""
    return np.array([[*obj.loc, obj.l, obj.h, obj.w, obj.ry] for obj in objects], dtype=np.float64)


def rot_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def points_in_box_bruteforce(points, box, margin_xy=0.0):
    """(N,) mask of LiDAR points inside one LiDAR box, via the inverse rotation into the box frame.

    ``margin_xy`` widens the box sides (not top/bottom), as OpenPCDet's CPU points-in-boxes op does (1 cm).
    """
    local = (points[:, :3].astype(np.float64) - box[:3]) @ rot_z(box[6])  # row vectors: p @ R == R^T p
    half = np.asarray(box[3:6], dtype=np.float64) / 2
    inside_xy = np.all(np.abs(local[:, :2]) < half[:2] + margin_xy, axis=1) if margin_xy else \
        np.all(np.abs(local[:, :2]) <= half[:2], axis=1)
    return inside_xy & (np.abs(local[:, 2]) <= half[2])


@pytest.fixture(scope='module')
def frames(kitti_samples_dir):
    out = []
    for frame in frame_ids(kitti_samples_dir):
        calib = Calibration(kitti_samples_dir / 'training' / 'calib' / f'{frame}.txt')
        objects = get_objects_from_label(kitti_samples_dir / 'training' / 'label_2' / f'{frame}.txt')
        out.append((frame, calib, objects))
    return out


# ---------------------------------------------------------------- labels

def test_label_counts_match_the_sample_notice(frames):
    counts = Counter(obj.cls_type for _, _, objects in frames for obj in objects)
    assert counts == {'Car': 35, 'Pedestrian': 14, 'Cyclist': 6, 'Van': 1, 'Truck': 1, 'Misc': 1, 'DontCare': 26}
    assert len(frames) == 13


def test_label_fields_of_a_known_line(kitti_samples_dir):
    # 000001.txt line 2: Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57
    car = get_objects_from_label(kitti_samples_dir / 'training' / 'label_2' / '000001.txt')[1]
    assert car.cls_type == 'Car' and car.cls_id == 1 and car.score == -1.0
    assert (car.h, car.w, car.l, car.ry) == (1.67, 1.87, 3.69, 1.57)
    np.testing.assert_allclose(car.loc, [-16.53, 2.39, 58.49], rtol=1e-6)
    np.testing.assert_allclose(car.box2d, [387.63, 181.54, 423.81, 203.12], rtol=1e-6)
    assert car.level == -1  # 21.58 px tall: below every difficulty's minimum height


def line(trunc=0.0, occ=0, y1=100.0, y2=140.0, cls='Car', extra=''):
    return f'{cls} {trunc} {occ} 0.5 100.0 {y1} 200.0 {y2} 1.5 1.6 3.9 1.0 1.7 20.0 0.1{extra}'


@pytest.mark.parametrize('kwargs, level', [
    (dict(y2=139.0), 0),                   # height y2 - y1 + 1 = 40 -> easy
    (dict(y2=138.0), 1),                   # 39 px -> moderate
    (dict(trunc=0.15, occ=0), 0),
    (dict(trunc=0.16), 1),
    (dict(occ=1), 1),
    (dict(trunc=0.3, occ=1, y2=124.0), 1),  # 25 px
    (dict(trunc=0.31), 2),
    (dict(occ=2), 2),
    (dict(trunc=0.5, occ=2), 2),
    (dict(trunc=0.51), -1),
    (dict(occ=3), -1),
    (dict(y2=123.0), -1),                  # 24 px
])
def test_difficulty_levels(kwargs, level):
    assert Object3d(line(**kwargs)).level == level


def test_score_and_class_ids():
    assert Object3d(line(extra=' 0.75')).score == 0.75
    assert Object3d(line(cls='Van')).cls_id == 4
    assert Object3d(line(cls='Truck')).cls_id == -1


@pytest.mark.parametrize('bad, why', [
    ('Car 0.0 0 0.5 100 100 200 140 1.5 1.6 3.9 1.0 1.7 20.0', '14'),
    (line(extra=' 0.9 7'), '17'),
    (line().replace('1.6', 'wide'), 'non-numeric'),
])
def test_label_line_errors_name_file_and_line(tmp_path, bad, why):
    label = tmp_path / '000042.txt'
    label.write_text(f'{line()}\n\n{bad}\n')
    with pytest.raises(ValueError, match=why) as info:
        get_objects_from_label(label)
    assert f'{label}:3' in str(info.value)


def test_missing_label_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='000099.txt'):
        get_objects_from_label(tmp_path / '000099.txt')


# ---------------------------------------------------------------- calibration

def test_calib_errors_name_the_file(tmp_path, kitti_samples_dir):
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        Calibration(tmp_path / 'nope.txt')
    good = (kitti_samples_dir / 'training' / 'calib' / '000000.txt').read_text().splitlines()

    no_velo = tmp_path / 'no_velo.txt'
    no_velo.write_text('\n'.join(x for x in good if not x.startswith('Tr_velo_to_cam')))
    with pytest.raises(ValueError, match=r'no_velo\.txt.*Tr_velo_to_cam'):
        get_calib_from_file(no_velo)

    short = tmp_path / 'short.txt'
    short.write_text('\n'.join(x.rsplit(' ', 1)[0] if x.startswith('R0_rect') else x for x in good))
    with pytest.raises(ValueError, match=r'short\.txt:5: R0_rect has 8 values'):
        get_calib_from_file(short)

    garbage = tmp_path / 'garbage.txt'
    garbage.write_text('this is not a calibration file\n')
    with pytest.raises(ValueError, match=r'garbage\.txt:1'):
        get_calib_from_file(garbage)


def test_calibration_from_info_style_dict_matches_file(frames):
    _, calib, _ = frames[0]
    pad = np.eye(4)
    r0_4x4, v2c_4x4, p2_4x4 = pad.copy(), pad.copy(), pad.copy()
    r0_4x4[:3, :3], v2c_4x4[:3, :4], p2_4x4[:3, :4] = calib.R0, calib.V2C, calib.P2
    other = Calibration({'P2': p2_4x4, 'R0_rect': r0_4x4, 'Tr_velo_to_cam': v2c_4x4})
    pts = np.random.default_rng(0).uniform(-20, 20, (50, 3))
    np.testing.assert_allclose(other.lidar_to_rect(pts), calib.lidar_to_rect(pts), atol=1e-12)


def test_rect_lidar_and_image_round_trips(frames):
    rng = np.random.default_rng(1)
    for _, calib, _ in frames:
        pts_rect = np.column_stack([rng.uniform(-20, 20, 200), rng.uniform(-2, 3, 200), rng.uniform(2, 70, 200)])
        np.testing.assert_allclose(calib.lidar_to_rect(calib.rect_to_lidar(pts_rect)), pts_rect, atol=1e-9)
        uv, depth = calib.rect_to_img(pts_rect)
        np.testing.assert_allclose(depth, pts_rect[:, 2], atol=1e-9)
        np.testing.assert_allclose(calib.img_to_rect(uv[:, 0], uv[:, 1], depth), pts_rect, atol=1e-9)


def test_front_points_project_inside_the_image(frames, kitti_samples_dir):
    """Points in a cone well inside the camera's field of view (about 81 x 29 degrees) land in the image."""
    for frame, calib, _ in frames:
        pts = load_points(kitti_samples_dir, frame)
        x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
        # camera ~0.27 m in front of and ~0.08 m below the LiDAR; cone of +-30 deg azimuth, +-8 deg elevation
        cone = (x > 5) & (np.abs(y) < np.tan(np.radians(30)) * x) & (np.abs(z + 0.08) < np.tan(np.radians(8)) * x)
        assert cone.sum() > 1000, frame
        uv, depth = calib.lidar_to_img(pts[cone])
        h, w = image_shape(kitti_samples_dir, frame)
        assert uv.dtype == np.float32  # float32 in, float32 out (as OpenPCDet)
        assert np.all(depth > 0)
        assert np.all((uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)), frame
        behind = x < -5
        _, depth_behind = calib.lidar_to_img(pts[behind])
        assert np.all(depth_behind < 0), frame


# ---------------------------------------------------------------- box conversions

def test_camera_lidar_camera_round_trip_on_all_labels(frames):
    n_boxes = 0
    for _, calib, objects in frames:
        objects = [o for o in objects if o.cls_type != 'DontCare']
        boxes_cam = camera_boxes(objects)
        for dtype in (np.float64, np.float32):
            cam = boxes_cam.astype(dtype)
            lidar = box_utils.boxes3d_kitti_camera_to_lidar(cam, calib)
            assert lidar.dtype == dtype and lidar.shape == (len(objects), 7)
            back = box_utils.boxes3d_lidar_to_kitti_camera(lidar, calib)
            np.testing.assert_allclose(back, cam, rtol=0, atol=1e-5)
        # sizes are permuted (l, h, w) -> (dx, dy, dz) = (l, w, h) and the centre is lifted by h / 2 in LiDAR z
        np.testing.assert_allclose(lidar[:, 3:6], boxes_cam[:, [3, 5, 4]], atol=1e-6)
        np.testing.assert_allclose(lidar[:, 0:3] - [0, 0, 1] * boxes_cam[:, 4:5] / 2,
                                   calib.rect_to_lidar(boxes_cam[:, 0:3]), atol=1e-5)
        n_boxes += len(objects)
    assert n_boxes == 58


def test_lidar_points_of_each_car_project_into_its_2d_box(frames, kitti_samples_dir):
    """Independent check of V2C, R0, P2 and the box conversion: points in the 3D box fall in the labelled 2D box."""
    checked = 0
    for frame, calib, objects in frames:
        pts = load_points(kitti_samples_dir, frame)
        cars = [o for o in objects if o.cls_type == 'Car' and o.truncation == 0 and o.occlusion == 0]
        if not cars:
            continue
        boxes = box_utils.boxes3d_kitti_camera_to_lidar(camera_boxes(cars), calib)
        for car, box in zip(cars, boxes):
            inside = points_in_box_bruteforce(pts, box)
            if inside.sum() < 20:
                continue
            uv, _ = calib.lidar_to_img(pts[inside])
            x1, y1, x2, y2 = car.box2d
            m = 3.0  # pixels of slack for label rounding
            ok = (uv[:, 0] > x1 - m) & (uv[:, 0] < x2 + m) & (uv[:, 1] > y1 - m) & (uv[:, 1] < y2 + m)
            assert ok.mean() > 0.95, (frame, car.to_str(), ok.mean())
            checked += 1
    assert checked >= 5


def test_projected_camera_boxes_match_labelled_2d_boxes(frames, kitti_samples_dir):
    ious = {}
    for frame, calib, objects in frames:
        objs = [o for o in objects if o.cls_type in ('Car', 'Pedestrian', 'Cyclist') and o.truncation == 0]
        if not objs:
            continue
        boxes2d = box_utils.boxes3d_kitti_camera_to_imageboxes(camera_boxes(objs), calib,
                                                               image_shape(kitti_samples_dir, frame))
        label2d = np.stack([o.box2d for o in objs]).astype(np.float64)
        for obj, iou in zip(objs, np.diag(box_utils.boxes_iou_normal(boxes2d, label2d))):
            ious.setdefault(obj.cls_type, []).append(float(iou))
        # corners3d_to_img_boxes divides by the third row of P2 @ p, rect_to_img by the rect depth (OpenPCDet's two
        # conventions); they differ by P2's 5 mm z translation, i.e. well under 0.2 % here
        corners = box_utils.boxes3d_to_corners3d_kitti_camera(camera_boxes(objs))
        boxes_cal, _ = calib.corners3d_to_img_boxes(corners)
        np.testing.assert_allclose(boxes_cal, box_utils.boxes3d_kitti_camera_to_imageboxes(
            camera_boxes(objs), calib), rtol=2e-3)
    # rigid cars fill their 3D box; pedestrians' 3D boxes are looser than their silhouettes
    assert len(ious['Car']) >= 20 and min(ious['Car']) > 0.9, ious['Car']
    assert min(min(v) for v in ious.values()) > 0.4, ious


# ---------------------------------------------------------------- corners and rotations

def test_boxes_to_corners_3d_against_numpy():
    rng = np.random.default_rng(2)
    boxes = np.column_stack([rng.uniform(-30, 30, (20, 3)), rng.uniform(0.5, 5, (20, 3)), rng.uniform(-4, 4, 20)])
    corners = box_utils.boxes_to_corners_3d(boxes)
    signs = np.array([[1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1],
                      [1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 1, 1]])  # the ASCII diagram's order
    for box, got in zip(boxes, corners):
        expected = box[:3] + (signs * box[3:6] / 2) @ rot_z(box[6]).T
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert np.isclose(np.linalg.norm(got[0] - got[3]), box[3], atol=1e-4)  # dx edge
        assert np.isclose(np.linalg.norm(got[0] - got[1]), box[4], atol=1e-4)  # dy edge
        front = got[[0, 1, 4, 5]].mean(axis=0) - box[:3]
        np.testing.assert_allclose(front, [np.cos(box[6]) * box[3] / 2, np.sin(box[6]) * box[3] / 2, 0], atol=1e-4)
    torch_corners = box_utils.boxes_to_corners_3d(torch.from_numpy(boxes).double())
    assert torch_corners.dtype == torch.float64
    np.testing.assert_allclose(torch_corners.numpy(), corners, atol=1e-4)


def test_lidar_and_camera_corners_agree_index_by_index(frames):
    for _, calib, objects in frames:
        objs = [o for o in objects if o.cls_type != 'DontCare']
        cam = camera_boxes(objs)
        cam_corners = box_utils.boxes3d_to_corners3d_kitti_camera(cam)
        np.testing.assert_allclose(cam_corners, np.stack([o.generate_corners3d() for o in objs]), atol=1e-4)
        lidar_corners = box_utils.boxes_to_corners_3d(box_utils.boxes3d_kitti_camera_to_lidar(cam, calib))
        in_rect = calib.lidar_to_rect(lidar_corners.reshape(-1, 3)).reshape(-1, 8, 3)
        # Both boxes share the bottom centre exactly; the corner offsets differ only by the small rotation between
        # the LiDAR axes mapped into rect (R0 @ V2C) and the ideal axis permutation lidar (x, y, z) -> rect
        # (-y, -z, x) that the heading conversion assumes: |error| <= angle * |offset from the bottom centre|.
        perm = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], dtype=np.float64)
        residual = calib.R0 @ calib.V2C[:, :3] @ perm.T
        angle = np.arccos(np.clip((np.trace(residual) - 1) / 2, -1, 1))
        assert 0 < angle < np.radians(2)
        offsets = np.linalg.norm(cam_corners - cam[:, None, 0:3], axis=2)
        errors = np.linalg.norm(in_rect - cam_corners, axis=2)
        assert np.all(errors <= angle * offsets * 1.01 + 1e-4)


def test_rotate_points_along_z_against_numpy():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(4, 50, 5)).astype(np.float32)
    angles = rng.uniform(-np.pi, np.pi, 4).astype(np.float32)
    expected = points.copy()
    for b in range(4):
        expected[b, :, :3] = points[b, :, :3] @ rot_z(angles[b]).T
    got = common_utils.rotate_points_along_z(points, angles)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    got_t = common_utils.rotate_points_along_z(torch.from_numpy(points).double(), torch.from_numpy(angles))
    assert got_t.dtype == torch.float64
    np.testing.assert_allclose(got_t.numpy(), expected, atol=1e-5)


def test_limit_period():
    vals = np.linspace(-10, 10, 101)
    for offset, period in ((0.5, np.pi), (0.0, 2 * np.pi), (0.5, 2 * np.pi)):
        out = common_utils.limit_period(vals, offset, period)
        assert np.all(out >= -offset * period - 1e-9) and np.all(out < (1 - offset) * period + 1e-9)
        np.testing.assert_allclose(np.sin((out - vals) * 2 * np.pi / period), 0, atol=1e-9)  # shifted by k*period
        out_t = common_utils.limit_period(torch.from_numpy(vals), offset, period)
        np.testing.assert_allclose(out_t.numpy(), out, atol=1e-12)


# ---------------------------------------------------------------- box utilities

def test_masks_ranges_and_ious():
    pc_range = [0, -40, -3, 70.4, 40, 1]
    boxes = np.array([[10, 0, -1, 4, 2, 1.5, 0], [70.4, 40, 1, 4, 2, 1.5, 0], [71, 0, 0, 4, 2, 1.5, 0],
                      [69, 39.5, 0, 4, 2, 1.5, 0]])
    assert box_utils.mask_boxes_outside_range_numpy(boxes, pc_range).tolist() == [True, True, False, True]
    by_corners = box_utils.mask_boxes_outside_range_numpy(boxes, pc_range, min_num_corners=8,
                                                           use_center_to_filter=False)
    assert by_corners.tolist() == [True, False, False, False]

    pts = np.array([[0, 0, 0], [70.4, 40, 9], [-0.1, 0, 0], [10, 40.1, 0]])
    assert common_utils.mask_points_by_range(pts, pc_range).tolist() == [True, True, False, False]

    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    np.testing.assert_allclose(box_utils.boxes_iou_normal(a, b).numpy(), [[1 / 7, 0.0, 1.0]], atol=1e-6)

    box = torch.tensor([[0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]])
    turned = torch.tensor([[0.0, 0.0, 0.0, 2.0, 4.0, 1.5, np.pi / 2]])  # same footprint
    np.testing.assert_allclose(box_utils.boxes3d_nearest_bev_iou(box, turned).numpy(), [[1.0]], atol=1e-6)
    np.testing.assert_allclose(box_utils.boxes3d_lidar_to_aligned_bev_boxes(turned).numpy(), [[-2, -1, 2, 1]],
                               atol=1e-6)

    enlarged = box_utils.enlarge_box3d(boxes, extra_width=(0.2, 0.2, 0.2))
    np.testing.assert_allclose(enlarged[:, 3:6] - boxes[:, 3:6], 0.2)
    np.testing.assert_allclose(box_utils.enlarge_box3d(box, (1, 2, 3))[0, 3:6].numpy(), [5.0, 4.0, 4.5])


def test_remove_points_in_boxes3d_on_real_frame(frames, kitti_samples_dir):
    # the frame with the most labelled objects, whole cloud: enough points inside boxes to make the count meaningful
    frame, calib, objects = max(frames, key=lambda f: sum(o.cls_type != 'DontCare' for o in f[2]))
    pts = load_points(kitti_samples_dir, frame)
    boxes = box_utils.boxes3d_kitti_camera_to_lidar(camera_boxes([o for o in objects if o.cls_type != 'DontCare']),
                                                    calib)
    from pcdet.ops.roiaware_pool3d.roiaware_pool3d_utils import CPU_MARGIN
    in_any = np.zeros(len(pts), dtype=bool)
    for box in boxes:
        in_any |= points_in_box_bruteforce(pts, box, margin_xy=CPU_MARGIN)
    assert in_any.sum() > 50
    kept = box_utils.remove_points_in_boxes3d(pts, boxes)
    assert kept.dtype == pts.dtype and len(kept) == (~in_any).sum()
    kept_t = box_utils.remove_points_in_boxes3d(torch.from_numpy(pts), torch.from_numpy(boxes).float())
    assert isinstance(kept_t, torch.Tensor) and len(kept_t) == len(kept)


def test_voxel_centers_and_info_filters():
    coords = torch.tensor([[0, 0, 0], [1, 2, 3]], dtype=torch.int32)  # [z, y, x]
    centers = common_utils.get_voxel_centers(coords, 2, [0.1, 0.2, 0.5], [0, -40, -3, 70.4, 40, 1])
    np.testing.assert_allclose(centers.numpy(), [[0.1, -39.8, -2.5], [0.7, -39.0, -1.5]], atol=1e-5)

    info = {'name': np.array(['Car', 'DontCare', 'Pedestrian']), 'score': np.array([1.0, 2.0, 3.0])}
    dropped = common_utils.drop_info_with_name(info, 'DontCare')
    assert dropped['name'].tolist() == ['Car', 'Pedestrian'] and dropped['score'].tolist() == [1.0, 3.0]
    keep = common_utils.keep_arrays_by_name(info['name'], ['Pedestrian', 'Car'])
    assert keep.tolist() == [0, 2] and keep.dtype == np.int64


def test_logger_seed_dist_info_meter(tmp_path):
    log_file = tmp_path / 'log.txt'
    logger = common_utils.create_logger(log_file, rank=0)
    logger = common_utils.create_logger(log_file, rank=0)  # second call must not duplicate lines
    logger.info('hello %d', 7)
    for handler in logger.handlers:
        handler.flush()
    assert log_file.read_text().count('hello 7') == 1
    quiet = common_utils.create_logger(None, rank=1)
    assert quiet.level == logging.ERROR

    common_utils.set_random_seed(5)
    first = (np.random.rand(), torch.rand(1).item())
    common_utils.set_random_seed(5)
    assert first == (np.random.rand(), torch.rand(1).item())
    common_utils.worker_init_fn(1, seed=4)
    a = np.random.rand()
    common_utils.worker_init_fn(1, seed=4)
    assert a == np.random.rand()

    assert common_utils.get_dist_info() == (0, 1)
    assert common_utils.get_dist_info(return_gpu_per_machine=True)[:2] == (0, 1)

    meter = common_utils.AverageMeter()
    meter.update(2.0)
    meter.update(4.0, n=3)
    assert meter.val == 4.0 and meter.count == 4 and meter.avg == pytest.approx(3.5)


def test_spconv_cpu_backward_with_shim():
    from pcdet.utils import spconv_utils

    spconv = spconv_utils.import_spconv()
    assert spconv_utils.import_spconv() is spconv
    torch.manual_seed(0)
    net = spconv.SparseSequential(spconv.SubMConv3d(4, 8, 3, indice_key='subm1', bias=False),
                                  spconv.SparseConv3d(8, 8, 3, stride=2, bias=False))
    coords = torch.tensor([[0, 1, 2, 3], [0, 2, 2, 3], [0, 5, 5, 5], [1, 0, 0, 0]], dtype=torch.int32)
    feats = torch.randn(4, 4, requires_grad=True)
    out = net(spconv.SparseConvTensor(feats, coords, [8, 8, 8], 2))
    out = spconv_utils.replace_feature(out, out.features * 2)
    out.features.sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    # the same convolutions dense (spconv weights are (out, k, k, k, in)); the submanifold one keeps the input sites
    ref_feats = feats.detach().clone().requires_grad_(True)
    b, z, y, x = coords.long().unbind(1)
    dense = torch.zeros(2, 8, 8, 8, 4).index_put((b, z, y, x), ref_feats).permute(0, 4, 1, 2, 3)
    active = torch.zeros(2, 1, 8, 8, 8).index_put((b, torch.zeros_like(b), z, y, x), torch.ones(4))
    weights = [conv.weight.detach().permute(0, 4, 1, 2, 3) for conv in net]
    ref = F.conv3d(F.conv3d(dense, weights[0], padding=1) * active, weights[1], stride=2) * 2
    ref.sum().backward()
    ob, oz, oy, ox = out.indices.long().unbind(1)
    assert torch.allclose(out.features, ref.permute(0, 2, 3, 4, 1)[ob, oz, oy, ox], atol=1e-5)
    assert out.features.abs().sum().item() == pytest.approx(ref.abs().sum().item(), rel=1e-5)   # no output site missing
    assert ref_feats.grad.abs().sum() > 0 and torch.allclose(feats.grad, ref_feats.grad, atol=1e-5)
    assert spconv_utils.find_all_spconv_keys(torch.nn.ModuleDict({'backbone': net})) == {
        'backbone.0.weight', 'backbone.1.weight'}


def test_tmp_kitti_root_fixture(tmp_kitti_root, kitti_samples_dir):
    assert (tmp_kitti_root / 'training' / 'calib' / '000000.txt').is_file()
    assert (tmp_kitti_root / 'ImageSets' / 'train.txt').read_text() == \
        (kitti_samples_dir / 'ImageSets' / 'train.txt').read_text()
    (tmp_kitti_root / 'kitti_infos_train.pkl').write_bytes(b'x')  # writable root, samples untouched
    assert not (kitti_samples_dir / 'kitti_infos_train.pkl').exists()
