"""KITTI evaluation: hand-computed APs, devkit rules, property tests, real label files and the CLI.

Hand computations use the devkit's definitions: R40 = sum(prec[1:41]) / 40 * 100, R11 = sum(prec[0:41:4]) / 11
* 100, prec[i] = max(prec[i:]), one score threshold per recall step 1/40 (so n_gt valid boxes give at most n_gt
thresholds: perfect detections score (n_gt - 1) / 40 in R40).
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcdet.datasets.kitti.kitti_object_eval_python import eval as kitti_eval
from pcdet.datasets.kitti.kitti_object_eval_python import eval_kernels, evaluate, kitti_common
from pcdet.datasets.kitti.kitti_object_eval_python.rotate_iou import rotate_iou_gpu_eval
from pcdet.ops.iou3d_nms.iou3d_nms_utils import boxes_bev_iou_cpu

DIMS = {'Car': (3.9, 1.5, 1.6), 'Van': (5.0, 2.0, 1.9), 'Truck': (9.0, 3.0, 2.5), 'Pedestrian': (0.8, 1.7, 0.6),
        'Cyclist': (1.7, 1.7, 0.6), 'DontCare': (-1, -1, -1)}


def obj(name, x, z, bbox=None, ry=0.0, score=None, occ=0, trunc=0.0, dims=None, y=1.6, alpha=None):
    """One object; by default an 'easy' 2D box (height 60 px) placed by x so that frames do not collide."""
    if bbox is None:
        bbox = (100 + 10 * x, 150, 150 + 10 * x, 210)
    return dict(name=name, x=x, y=y, z=z, ry=ry, bbox=bbox, score=score, occ=occ, trunc=trunc,
                dims=dims or DIMS[name], alpha=ry if alpha is None else alpha)


def anno(objs, with_score):
    """Objects -> OpenPCDet-style annotation dict (camera frame, dimensions [l, h, w])."""
    out = {'name': np.array([o['name'] for o in objs], dtype=str),
           'truncated': np.array([o['trunc'] for o in objs], dtype=float),
           'occluded': np.array([o['occ'] for o in objs], dtype=int),
           'alpha': np.array([o['alpha'] for o in objs], dtype=float),
           'bbox': np.array([o['bbox'] for o in objs], dtype=float).reshape(-1, 4),
           'dimensions': np.array([o['dims'] for o in objs], dtype=float).reshape(-1, 3),
           'location': np.array([[o['x'], o['y'], o['z']] for o in objs], dtype=float).reshape(-1, 3),
           'rotation_y': np.array([o['ry'] for o in objs], dtype=float)}
    if with_score:
        out['score'] = np.array([o['score'] for o in objs], dtype=float)
    return out


def perfect(gt_frames, scores=None):
    """Detections equal to the ground truth (DontCare dropped), scores descending unless given."""
    dets, k = [], 0
    for frame in gt_frames:
        d = []
        for o in frame:
            if o['name'] != 'DontCare':
                d.append(dict(o, score=(1.0 - 0.001 * k) if scores is None else scores[k]))
                k += 1
        dets.append(d)
    return dets


def run(gt_frames, dt_frames, classes=(0,)):
    return kitti_eval.get_official_eval_result([anno(f, False) for f in gt_frames],
                                               [anno(f, True) for f in dt_frames], list(classes))


def car_frames(n):
    return [[obj('Car', x=float(i % 20), z=10.0 + i)] for i in range(n)]


# ----------------------------------------------------------------------------------------------- hand-computed
def test_perfect_detections_with_enough_ground_truth_score_100():
    gt = [[obj('Car', 0, 10 + i), obj('Pedestrian', 6, 10 + i), obj('Cyclist', -6, 10 + i)] for i in range(45)]
    result, ret = run(gt, perfect(gt), classes=(0, 1, 2))
    assert len(ret) == 36  # 3 classes x {3d, bev, image, aos} x 3 difficulties
    for key, value in ret.items():
        assert value == pytest.approx(100.0, abs=1e-9), key
    assert 'Car AP@0.70, 0.70, 0.70:\nbbox AP:100.0000, 100.0000, 100.0000\n' in result
    assert 'Pedestrian AP_R40@0.50, 0.25, 0.25:\n' in result and 'aos  AP:100.00, 100.00, 100.00\n' in result


def test_perfect_detections_with_few_ground_truth_are_capped():
    _, ret = run(car_frames(10), perfect(car_frames(10)))
    # 10 valid boxes -> 10 thresholds -> prec[0:10] = 1: R40 = 9/40, R11 = prec[0] + prec[4] + prec[8] = 3/11
    assert ret['Car_3d/moderate_R40'] == pytest.approx(22.5)
    assert ret['Car_image/easy_R40'] == pytest.approx(22.5)
    mAP = kitti_eval.do_eval([anno(f, False) for f in car_frames(10)], [anno(f, True) for f in perfect(car_frames(10))],
                             [0], kitti_eval.MIN_OVERLAPS[:, :, [0]])
    np.testing.assert_allclose(mAP[0], 300 / 11)  # bbox R11, all difficulties and both overlap sets


def test_one_miss_and_one_false_positive():
    gt = car_frames(4)
    dt = [[dict(gt[0][0], score=0.9)], [dict(gt[1][0], score=0.8)], [dict(gt[2][0], score=0.6)],
          [obj('Car', x=40, z=60, bbox=(900, 100, 960, 170), score=0.7)]]  # frame 3: GT missed, an FP elsewhere
    _, ret = run(gt, dt)
    # thresholds 0.9, 0.8, 0.6 -> precision 1, 1, 3/4: R40 = (1 + 0.75) / 40 * 100 (prec[0] is not counted)
    for metric in ('image', 'bev', '3d', 'aos'):
        assert ret[f'Car_{metric}/moderate_R40'] == pytest.approx(4.375), metric
    mAP = kitti_eval.do_eval([anno(f, False) for f in gt], [anno(f, True) for f in dt], [0],
                             kitti_eval.MIN_OVERLAPS[:, :, [0]])
    np.testing.assert_allclose(mAP[2], 100 / 11)  # 3d R11: prec[0] = 1, prec[4] = 0


def test_ignored_van_is_never_a_false_positive_for_car():
    cars = car_frames(5)
    base = run(cars, perfect(cars))[1]
    assert base['Car_bev/moderate_R40'] == pytest.approx(10.0)  # 5 boxes: 4/40
    van = obj('Van', x=30, z=40, bbox=(700, 150, 780, 230))
    det_on_van = dict(van, name='Car', score=2.0)  # above every true positive
    with_van = run([cars[0] + [van]] + cars[1:], [perfect(cars)[0] + [det_on_van]] + perfect(cars)[1:])[1]
    assert with_van == pytest.approx(base)
    # the same object labelled Truck is not a neighbour class: the Car detection on it is a false positive at every
    # threshold: precision k/(k+1) -> suffix max 5/6 for the 5 thresholds -> R40 = 4 * 5/6 / 40 * 100
    truck = dict(van, name='Truck')
    with_truck = run([cars[0] + [truck]] + cars[1:], [perfect(cars)[0] + [det_on_van]] + perfect(cars)[1:])[1]
    assert with_truck['Car_bev/moderate_R40'] == pytest.approx(4 * 5 / 6 / 40 * 100)


def test_detection_in_dontcare_area_is_ignored_for_bbox_only():
    cars = car_frames(5)
    dontcare = obj('DontCare', x=0, z=0, bbox=(600, 100, 700, 200), y=-1000)
    fp = obj('Car', x=25, z=50, bbox=(610, 110, 690, 190), score=2.0)  # inside the DontCare box, far away in 3D
    _, ret = run([cars[0] + [dontcare]] + cars[1:], [perfect(cars)[0] + [fp]] + perfect(cars)[1:])
    assert ret['Car_image/moderate_R40'] == pytest.approx(10.0)  # as without the detection
    assert ret['Car_bev/moderate_R40'] == pytest.approx(4 * 5 / 6 / 40 * 100)  # a false positive for bev / 3d
    assert ret['Car_3d/moderate_R40'] == pytest.approx(4 * 5 / 6 / 40 * 100)


def test_overlap_exactly_at_threshold_is_not_a_match():
    # 2D: widths 170, shift 30 -> 140 * 60 / (200 * 60) = 0.7; BEV/3D: l = 4.25, shift 0.75 -> 3.5 / 5 = 0.7
    def gt_frame(i):
        return [obj('Car', x=10.0 * i, z=20.0, bbox=(100, 100, 270, 160), dims=(4.25, 1.5, 1.5))]

    def dt_frame(i, shift_px, shift_m):
        return [obj('Car', x=10.0 * i + shift_m, z=20.0, bbox=(100 + shift_px, 100, 270 + shift_px, 160),
                    dims=(4.25, 1.5, 1.5), score=1.0 - 0.01 * i)]
    gts = [anno(gt_frame(i), False) for i in range(3)]
    at = [anno(dt_frame(i, 30, 0.75), True) for i in range(3)]
    for metric, expect in ((0, 0.7), (1, 0.7), (2, 0.7)):
        flat_gt, flat_dt = kitti_eval._Flat(gts, 'gt', False), kitti_eval._Flat(at, 'dt', True)
        ov = kitti_eval._overlaps(flat_gt, flat_dt, metric, np.arange(4, dtype=np.int64))
        assert np.all(ov == expect), (metric, ov)  # exact in float64
    _, ret = kitti_eval.get_official_eval_result(gts, at, [0])
    assert ret['Car_image/easy_R40'] == 0 and ret['Car_bev/easy_R40'] == 0 and ret['Car_3d/easy_R40'] == 0
    mAP = kitti_eval.do_eval(gts, at, [0], kitti_eval.MIN_OVERLAPS[:, :, [0]])
    # overlap set 1 (0.5) matches all 3: precision 1 at the first 3 of the 41 recall points, of which R11 samples
    # the first only (1/11) and R40 the 2nd and 3rd (2/40)
    for m in (1, 2):                                                 # bev, 3d
        assert mAP[m][0, 0, 1] == pytest.approx(100 / 11) and mAP[m + 4][0, 0, 1] == pytest.approx(5.0)
    closer = [anno(dt_frame(i, 29, 0.74), True) for i in range(3)]
    _, ret = kitti_eval.get_official_eval_result(gts, closer, [0])
    assert ret['Car_image/easy_R40'] == pytest.approx(5.0) and ret['Car_3d/easy_R40'] == pytest.approx(5.0)


def test_too_small_only_when_strictly_below_min_height():
    def frames(height):
        return [[obj('Car', x=float(i), z=10.0 + i, bbox=(100 + 5 * i, 100, 160 + 5 * i, 100 + height))]
                for i in range(5)]
    assert run(frames(40.0), perfect(frames(40.0)))[1]['Car_image/easy_R40'] == pytest.approx(10.0)
    assert run(frames(39.99), perfect(frames(39.99)))[1]['Car_image/easy_R40'] == 0.0
    assert run(frames(39.99), perfect(frames(39.99)))[1]['Car_image/moderate_R40'] == pytest.approx(10.0)


def test_identical_rotated_boxes_have_iou_one_in_camera_frame():
    boxes = np.array([[1.0, 20.0, 3.9, 1.6, 0.3], [-4.0, 35.0, 4.2, 1.7, -2.1], [0.5, 7.0, 0.8, 0.6, 1.2]])
    np.testing.assert_array_equal(np.diag(rotate_iou_gpu_eval(boxes, boxes)), 1.0)


def test_camera_bev_iou_equals_lidar_bev_iou():
    # camera (x, z, l, w, ry) -> LiDAR (x_l = z, y_l = -x, dx = l, dy = w, heading = -ry - pi/2)
    rng = np.random.default_rng(0)
    cam = np.column_stack([rng.uniform(-3, 3, 12), rng.uniform(10, 16, 12), rng.uniform(1, 5, 12),
                           rng.uniform(0.5, 2, 12), rng.uniform(-np.pi, np.pi, 12)])
    lidar = np.column_stack([cam[:, 1], -cam[:, 0], np.zeros(12), cam[:, 2], cam[:, 3], np.ones(12),
                             -cam[:, 4] - np.pi / 2])
    iou_cam = rotate_iou_gpu_eval(cam, cam)
    assert (iou_cam[~np.eye(12, dtype=bool)] > 0).sum() >= 10
    np.testing.assert_allclose(iou_cam, boxes_bev_iou_cpu(lidar, lidar), atol=1e-12)


def test_get_thresholds_samples_recall_steps():
    scores = np.linspace(1, 0.01, 100)
    t = eval_kernels.get_thresholds(scores.copy(), 100)
    assert len(t) == 41 and t[0] == 1.0 and t[-1] == pytest.approx(0.01)
    assert len(eval_kernels.get_thresholds(scores[:7].copy(), 7)) == 7


# ----------------------------------------------------------------------------------------------- properties
def random_scene(seed, n_frames=4):
    rng = np.random.default_rng(seed)
    gt, dt = [], []
    for _f in range(n_frames):
        g, d = [], []
        for _k in range(int(rng.integers(0, 5))):
            name = str(rng.choice(['Car', 'Car', 'Pedestrian', 'Van']))
            x, z, ry = float(rng.uniform(-8, 8)), float(rng.uniform(5, 40)), float(rng.uniform(-3, 3))
            u, h = float(rng.uniform(0, 1100)), float(rng.uniform(20, 120))
            g.append(obj(name, x, z, bbox=(u, 100, u + h, 100 + h), ry=ry, occ=int(rng.integers(0, 3))))
            if rng.random() < 0.8:  # a noisy detection of it
                j = rng.normal(0, [0.3, 0.3, 0.1, 8])
                d.append(obj('Car' if name == 'Van' else name, x + j[0], z + j[1], ry=ry + j[2],
                             bbox=(u + j[3], 100, u + h + j[3], 100 + h), score=float(rng.random())))
        for _k in range(int(rng.integers(0, 3))):  # false positives
            u = float(rng.uniform(0, 1100))
            d.append(obj('Car', float(rng.uniform(-8, 8)), float(rng.uniform(5, 40)), bbox=(u, 120, u + 50, 180),
                         ry=float(rng.uniform(-3, 3)), score=float(rng.random())))
        gt.append(g)
        dt.append(d)
    return gt, dt


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1))
def test_ap_invariant_to_detection_order_and_bounded(seed):
    gt, dt = random_scene(seed)
    _, ret = run(gt, dt, classes=(0, 1))
    shuffled = [list(np.random.default_rng(seed + 1).permutation(np.array(d, dtype=object))) for d in dt]
    _, ret2 = run(gt, shuffled, classes=(0, 1))
    assert ret2.keys() == ret.keys()
    for key in ret:
        assert 0.0 <= ret[key] <= 100.0
        assert ret2[key] == pytest.approx(ret[key], abs=1e-9), key
    mAP = kitti_eval.do_eval([anno(f, False) for f in gt], [anno(f, True) for f in dt], [0, 1],
                             kitti_eval.MIN_OVERLAPS[:, :, [0, 1]], compute_aos=True)
    for arr in mAP:
        assert np.all(arr >= 0) and np.all(arr <= 100 + 1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), score=st.floats(0.0, 1.0), frame=st.integers(0, 3))
def test_adding_a_false_positive_never_raises_ap(seed, score, frame):
    gt, dt = random_scene(seed)
    _, before = run(gt, dt)
    # overlaps nothing: 2D box outside every ground-truth box, 3D box 500 m away
    extra = obj('Car', x=500.0, z=500.0, bbox=(1300, 100, 1360, 170), score=score)
    dt2 = [d + [extra] if i == frame else d for i, d in enumerate(dt)]
    _, after = run(gt, dt2)
    for key in before:
        assert after[key] <= before[key] + 1e-9, key


# ----------------------------------------------------------------------------------------------- real files, CLI
def devkit_valid_count(annos, cls, difficulty):
    """Independent count of valid ground truth (devkit cleanData), plain Python."""
    n = 0
    for a in annos:
        for i, name in enumerate(a['name']):
            height = a['bbox'][i][3] - a['bbox'][i][1]
            if (name == cls and a['occluded'][i] <= [0, 1, 2][difficulty]
                    and a['truncated'][i] <= [0.15, 0.3, 0.5][difficulty] and height >= [40, 25, 25][difficulty]):
                n += 1
    return n


def test_real_labels_perfect_detections_and_cli(kitti_samples_dir, tmp_path, capsys):
    label_dir = kitti_samples_dir / 'training' / 'label_2'
    split = kitti_samples_dir / 'ImageSets' / 'val.txt'
    ids = kitti_common.read_imageset_file(split)
    gt = kitti_common.get_label_annos(label_dir, ids)
    result_dir = tmp_path / 'results'
    result_dir.mkdir()
    for idx in ids:  # results = the labels plus a score column (DontCare dropped)
        lines = [ln.split() for ln in (label_dir / f'{idx:06d}.txt').read_text().splitlines() if ln.strip()]
        (result_dir / f'{idx:06d}.txt').write_text(''.join(
            ' '.join(ln + [f'{1 - 0.01 * k:.2f}']) + '\n' for k, ln in enumerate(lines) if ln[0] != 'DontCare'))
    dt = kitti_common.get_label_annos(result_dir, ids)
    assert dt[0]['score'].shape == dt[0]['name'].shape and np.all(gt[0]['score'] == 0)
    _, ret = kitti_eval.get_official_eval_result(gt, dt, ['Car', 'Pedestrian'])
    for cls in ('Car', 'Pedestrian'):
        for d, diff in enumerate(('easy', 'moderate', 'hard')):
            n = devkit_valid_count(gt, cls, d)
            expect = max(n - 1, 0) / 40 * 100
            assert ret[f'{cls}_3d/{diff}_R40'] == pytest.approx(expect), (cls, diff, n)
    evaluate.main(['--label_path', str(label_dir), '--result_path', str(result_dir),
                   '--label_split_file', str(split), '--current_class', '0,1'])
    out = capsys.readouterr().out
    assert out.startswith('Car AP@0.70, 0.70, 0.70:\nbbox AP:')
    assert f"3d   AP:{ret['Car_3d/easy_R40']:.4f}, {ret['Car_3d/moderate_R40']:.4f}" in out
    assert 'Pedestrian AP_R40@0.50, 0.25, 0.25:' in out


def test_label_parsing_and_errors(tmp_path):
    (tmp_path / '000000.txt').write_text(
        'Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59\n\n')
    a = kitti_common.get_label_anno(str(tmp_path / '000000.txt'))
    np.testing.assert_allclose(a['dimensions'], [[3.64, 1.65, 1.67]])  # file h w l -> l h w
    np.testing.assert_allclose(a['location'], [[-0.65, 1.71, 46.70]])
    assert a['name'].tolist() == ['Car'] and a['occluded'].tolist() == [0] and math.isclose(a['rotation_y'][0], -1.59)
    (tmp_path / '000001.txt').write_text('Car 0.00 0 -1.58 587.01\n')
    with pytest.raises(ValueError, match='000001.txt:1: expected 15 fields'):
        kitti_common.get_label_anno(str(tmp_path / '000001.txt'))
    with pytest.raises(FileNotFoundError, match='000007.txt'):
        kitti_common.get_label_annos(tmp_path, [0, 7])
    with pytest.raises(KeyError, match='unknown class'):
        kitti_eval.get_official_eval_result([], [], ['Bus'])


# ----------------------------------------------------------------------------------------------- naive reference
def naive_overlaps(g, d, metric):
    """(n_dt, n_gt) overlaps of one frame, pair by pair in Python (2D) or from rotate_iou_gpu_eval (BEV/3D)."""
    out = np.zeros((len(d['name']), len(g['name'])))
    for j in range(out.shape[0]):
        for i in range(out.shape[1]):
            if metric == 0:
                a, b = d['bbox'][j], g['bbox'][i]
                iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
                if iw > 0 and ih > 0:
                    out[j, i] = iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)
                continue
            bev = [np.r_[x['location'][k][[0, 2]], x['dimensions'][k][[0, 2]], x['rotation_y'][k]][None]
                   for x, k in ((d, j), (g, i))]
            if metric == 1:
                out[j, i] = rotate_iou_gpu_eval(bev[0], bev[1])[0, 0]
                continue
            inter = rotate_iou_gpu_eval(bev[0], bev[1], criterion=0)[0, 0] * bev[0][0, 2] * bev[0][0, 3]
            yd, hd = d['location'][j][1], d['dimensions'][j][1]
            yg, hg = g['location'][i][1], g['dimensions'][i][1]
            inter *= max(0.0, min(yd, yg) - max(yd - hd, yg - hg))
            vol = np.prod(d['dimensions'][j]) + np.prod(g['dimensions'][i]) - inter
            out[j, i] = inter / vol if inter > 0 else 0.0
    return out


def naive_precision(gt, dt, cls, diff, metric, min_overlap):
    """Devkit eval_class written frame by frame, threshold by threshold, without any shortcut."""
    names = ['car', 'pedestrian', 'cyclist', 'van', 'person_sitting', 'truck']
    frames = []
    for g, d in zip(gt, dt):
        ig = []
        for i, name in enumerate(g['name']):
            name = name.lower()
            valid = 1 if name == names[cls] else 0 if (names[cls], name) in (('car', 'van'),
                                                                               ('pedestrian', 'person_sitting')) else -1
            ignore = (g['occluded'][i] > [0, 1, 2][diff] or g['truncated'][i] > [0.15, 0.3, 0.5][diff]
                      or g['bbox'][i][3] - g['bbox'][i][1] < [40, 25, 25][diff])
            ig.append(0 if valid == 1 and not ignore else 1 if valid == 0 or (valid == 1 and ignore) else -1)
        idt = [1 if abs(d['bbox'][j][3] - d['bbox'][j][1]) < [40, 25, 25][diff] else 0 if n.lower() == names[cls]
               else -1 for j, n in enumerate(d['name'])]
        dc = [g['bbox'][i] for i, n in enumerate(g['name']) if n == 'DontCare']
        frames.append((naive_overlaps(g, d, metric), ig, idt, dc, d['score'], d['bbox']))

    def stats(ov, ig, idt, dc, sc, boxes, thresh, compute_fp):
        assigned, tp, fp, fn, scores = [False] * len(idt), 0, 0, 0, []
        for i in range(len(ig)):
            if ig[i] == -1:
                continue
            best, val, maxo, ign = -1, None, 0.0, False
            for j in range(len(idt)):
                if idt[j] == -1 or assigned[j] or (compute_fp and sc[j] < thresh):
                    continue
                o = ov[j, i]
                if not compute_fp and o > min_overlap and (val is None or sc[j] > val):
                    best, val = j, sc[j]
                elif compute_fp and o > min_overlap and (o > maxo or ign) and idt[j] == 0:
                    best, val, maxo, ign = j, 1, o, False
                elif compute_fp and o > min_overlap and val is None and idt[j] == 1:
                    best, val, ign = j, 1, True
            if val is None:
                fn += ig[i] == 0
            elif ig[i] == 1 or idt[best] == 1:
                assigned[best] = True
            else:
                tp, assigned[best] = tp + 1, True
                scores.append(sc[best])
        if compute_fp:
            active = [j for j in range(len(idt)) if not assigned[j] and idt[j] == 0 and sc[j] >= thresh]
            fp = len(active)
            if metric == 0:
                for j in active:
                    b = boxes[j]
                    for c in dc:
                        iw, ih = min(b[2], c[2]) - max(b[0], c[0]), min(b[3], c[3]) - max(b[1], c[1])
                        if iw > 0 and ih > 0 and iw * ih / ((b[2] - b[0]) * (b[3] - b[1])) > min_overlap:
                            fp -= 1
                            break
        return tp, fp, fn, scores

    n_gt = sum(f[1].count(0) for f in frames)
    all_scores = sorted((s for f in frames for s in stats(*f, 0.0, False)[3]), reverse=True)
    thresholds, current = [], 0.0
    for i, s in enumerate(all_scores):
        l_r = (i + 1) / n_gt
        r_r = (i + 2) / n_gt if i < len(all_scores) - 1 else l_r
        if (r_r - current) < (current - l_r) and i < len(all_scores) - 1:
            continue
        thresholds.append(s)
        current += 1 / 40.0
    prec = np.zeros(41)
    for t, thresh in enumerate(thresholds):
        tp = fp = 0
        for f in frames:
            a, b, _, _ = stats(*f, thresh, True)
            tp, fp = tp + a, fp + b
        prec[t] = tp / (tp + fp) if tp + fp > 0 else 0.0
    return np.array([prec[i:].max() for i in range(41)])


@pytest.mark.parametrize('seed', [3, 11])
def test_fast_path_matches_naive_devkit_reimplementation(seed):
    gt_objs, dt_objs = random_scene(seed, n_frames=12)
    gt_objs[0].append(obj('DontCare', 0, 0, bbox=(0, 0, 1242, 375), y=-1000))  # covers the whole image
    gt = [anno(f, False) for f in gt_objs]
    dt = [anno(f, True) for f in dt_objs]
    flat_gt, flat_dt = kitti_eval._Flat(gt, 'gt', False), kitti_eval._Flat(dt, 'dt', True)
    ov_off = kitti_eval._offsets(np.diff(flat_gt.off) * np.diff(flat_dt.off))
    is_dc = flat_gt.code == kitti_eval.DONTCARE_CODE
    dc_off = kitti_eval._offsets(np.bincount(np.repeat(np.arange(12), np.diff(flat_gt.off))[is_dc], minlength=12))
    checked = 0
    for metric in (0, 1, 2):
        ret = kitti_eval.eval_class(flat_gt, flat_dt, [0, 1], [0, 1, 2], metric, kitti_eval.MIN_OVERLAPS[:, :, [0, 1]],
                                    False, ov_off, dc_off, np.ascontiguousarray(flat_gt.bbox[is_dc]))
        for m, cls in enumerate((0, 1)):
            for diff in range(3):
                for k in range(2):
                    expect = naive_precision(gt, dt, cls, diff, metric, kitti_eval.MIN_OVERLAPS[k, metric, cls])
                    np.testing.assert_allclose(ret['precision'][m, diff, k], expect, atol=1e-12)
                    checked += expect.sum() > 0
    assert checked >= 10  # most combinations have a non-trivial curve


def test_openpcdet_overlap_helpers_agree_with_the_frame_kernel():
    gt_objs, dt_objs = random_scene(5, n_frames=1)
    gt_objs[0].append(obj('Car', 1.0, 12.0, ry=0.4))
    dt_objs[0].append(obj('Car', 1.3, 12.2, ry=0.5, score=0.5))
    g, d = anno(gt_objs[0], False), anno(dt_objs[0], True)
    cam = [np.column_stack([x['location'], x['dimensions'], x['rotation_y']]) for x in (d, g)]
    expected = {0: kitti_eval.image_box_overlap(d['bbox'], g['bbox']),
                1: kitti_eval.bev_box_overlap(cam[0][:, [0, 2, 3, 5, 6]], cam[1][:, [0, 2, 3, 5, 6]]),
                2: kitti_eval.d3_box_overlap(cam[0], cam[1])}
    for metric in (0, 1, 2):
        np.testing.assert_allclose(expected[metric], naive_overlaps(g, d, metric), atol=1e-12)
        assert expected[metric].max() > 0.3
