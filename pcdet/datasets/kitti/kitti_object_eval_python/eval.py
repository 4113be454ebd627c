"""Official KITTI 3D object metric on the CPU (OpenPCDet's module path and report format, devkit numbers).

Entry point: ``get_official_eval_result(gt_annos, dt_annos, current_classes, PR_detail_dict=None)``.

Annotations are per-frame dicts of numpy arrays (OpenPCDet / ``kitti_common.get_label_anno`` layout), in the KITTI
rect camera frame: ``name`` (N,) str, ``truncated`` (N,), ``occluded`` (N,), ``alpha`` (N,), ``bbox`` (N, 4)
[x1, y1, x2, y2] image pixels, ``dimensions`` (N, 3) [l, h, w] metres, ``location`` (N, 3) bottom centre,
``rotation_y`` (N,), and for detections ``score`` (N,).

Where OpenPCDet and the official devkit (evaluate_object_3d_offline.cpp) differ, this follows the devkit:
overlaps in float64 with an exact rotated intersection (identical boxes: IoU 1), and a ground truth is too small
only when its 2D height is strictly below the minimum. As in both, a match needs overlap strictly above the
minimum, and with fewer than 40 valid ground truths the 41-point threshold sampling caps AP at (n_gt - 1) / 40.
"""
import io as sysio

import numpy as np

from pcdet.ops.iou3d_nms.rotated_geometry import iou3d_matrix

from . import eval_kernels as kern
from .rotate_iou import camera_bev_to_geometry, rotate_iou_gpu_eval

CLASS_NAMES = ['car', 'pedestrian', 'cyclist', 'van', 'person_sitting', 'truck']
DONTCARE_CODE = len(CLASS_NAMES)
MIN_HEIGHT = [40, 25, 25]
MAX_OCCLUSION = [0, 1, 2]
MAX_TRUNCATION = [0.15, 0.3, 0.5]
N_SAMPLE_PTS = 41
CLASS_TO_NAME = {0: 'Car', 1: 'Pedestrian', 2: 'Cyclist', 3: 'Van', 4: 'Person_sitting', 5: 'Truck'}
# [overlap set][metric bbox/bev/3d][class Car, Pedestrian, Cyclist, Van, Person_sitting, Truck]
MIN_OVERLAPS = np.array([
    [[0.7, 0.5, 0.5, 0.7, 0.5, 0.7], [0.7, 0.5, 0.5, 0.7, 0.5, 0.7], [0.7, 0.5, 0.5, 0.7, 0.5, 0.7]],
    [[0.7, 0.5, 0.5, 0.7, 0.5, 0.5], [0.5, 0.25, 0.25, 0.5, 0.25, 0.5], [0.5, 0.25, 0.25, 0.5, 0.25, 0.5]],
])


def print_str(value, *arg, sstream=None):
    """print() into a string (OpenPCDet's helper; every line of the report ends with a newline)."""
    if sstream is None:
        sstream = sysio.StringIO()
    sstream.truncate(0)
    sstream.seek(0)
    print(value, *arg, file=sstream)
    return sstream.getvalue()


def _offsets(counts):
    off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    return off


def _name_codes(names):
    """Class names -> index into CLASS_NAMES (case-insensitive), DONTCARE_CODE for DontCare, -1 otherwise."""
    if names.size == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, inverse = np.unique(names, return_inverse=True)
    table = {n: i for i, n in enumerate(CLASS_NAMES)}
    table['dontcare'] = DONTCARE_CODE
    codes = np.array([table.get(str(n).lower(), -1) for n in uniq], dtype=np.int64)
    return codes[inverse.reshape(-1)]


def _concat(annos, key, width, which, dtype=np.float64):
    parts = []
    for idx, anno in enumerate(annos):
        if key not in anno:
            raise KeyError(f'eval.py: {which} annotation of frame {idx} has no {key!r} (keys: {sorted(anno)})')
        parts.append(np.asarray(anno[key], dtype=dtype).reshape(-1, width) if width else
                     np.asarray(anno[key], dtype=dtype).reshape(-1))
    if not parts:
        return np.zeros((0, width) if width else (0,), dtype=dtype)
    return np.concatenate(parts, axis=0)


class _Flat:
    """Ground truth or detections of all frames concatenated (see eval_kernels for the layout)."""

    def __init__(self, annos, which, with_score):
        counts = []
        for idx, anno in enumerate(annos):
            n = len(anno['name'])
            for key in ('bbox', 'location', 'dimensions', 'rotation_y', 'alpha'):
                if key in anno and len(anno[key]) != n:
                    raise ValueError(f'eval.py: {which} frame {idx}: {key!r} has {len(anno[key])} rows, '
                                     f'name has {n}')
            counts.append(n)
        self.off = _offsets(counts)
        self.names = _concat(annos, 'name', 0, which, dtype=object)
        self.code = _name_codes(self.names)
        self.bbox = np.ascontiguousarray(_concat(annos, 'bbox', 4, which))
        self.alpha = _concat(annos, 'alpha', 0, which)
        # camera boxes [x, y, z, l, h, w, ry]
        self.box3d = np.ascontiguousarray(np.concatenate([
            _concat(annos, 'location', 3, which), _concat(annos, 'dimensions', 3, which),
            _concat(annos, 'rotation_y', 0, which)[:, None]], axis=1))
        self.height = self.bbox[:, 3] - self.bbox[:, 1]
        if with_score:
            self.score = _concat(annos, 'score', 0, which)
        else:
            self.truncated = _concat(annos, 'truncated', 0, which)
            self.occluded = _concat(annos, 'occluded', 0, which)


def image_box_overlap(boxes, query_boxes, criterion=-1):
    """2D overlap of image boxes (N, 4) and (K, 4) [x1, y1, x2, y2] -> (N, K) float64 (OpenPCDet name).

    criterion -1: IoU, 0: intersection / area of boxes, 1: intersection / area of query_boxes.
    """
    a = np.asarray(boxes, dtype=np.float64)[:, None, :]
    b = np.asarray(query_boxes, dtype=np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    denom = {-1: area_a + area_b - inter, 0: area_a + 0 * inter, 1: area_b + 0 * inter}[criterion]
    return np.where(inter > 0, inter / np.where(denom > 0, denom, 1.0), 0.0)


def bev_box_overlap(boxes, qboxes, criterion=-1):
    """Rotated BEV overlap of camera boxes (N, 5) / (K, 5) [x, z, l, w, ry] -> (N, K) (OpenPCDet name)."""
    return rotate_iou_gpu_eval(boxes, qboxes, criterion)


def d3_box_overlap(boxes, qboxes, criterion=-1):
    """3D IoU of camera boxes (N, 7) / (K, 7) [x, y, z, l, h, w, ry] (bottom centre, y down) -> (N, K)."""
    if criterion != -1:
        raise ValueError(f'eval.py: d3_box_overlap supports criterion -1 (IoU) only, got {criterion}')
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    b = np.asarray(qboxes, dtype=np.float64).reshape(-1, 7)
    return iou3d_matrix(camera_bev_to_geometry(a[:, [0, 2, 3, 5, 6]]), a[:, 1] - a[:, 4], a[:, 1].copy(),
                        camera_bev_to_geometry(b[:, [0, 2, 3, 5, 6]]), b[:, 1] - b[:, 4], b[:, 1].copy())


def _clean(gt, dt, current_class, difficulty):
    """Devkit ``cleanData`` for all frames at once -> (ignored_gt int64, ignored_dt int64, num_valid_gt)."""
    cls = CLASS_NAMES[current_class]
    valid = np.where(gt.code == current_class, 1, -1)
    if cls == 'pedestrian':
        valid[gt.code == CLASS_NAMES.index('person_sitting')] = 0
    elif cls == 'car':
        valid[gt.code == CLASS_NAMES.index('van')] = 0
    ignore = ((gt.occluded > MAX_OCCLUSION[difficulty]) | (gt.truncated > MAX_TRUNCATION[difficulty])
              | (gt.height < MIN_HEIGHT[difficulty]))  # devkit: strictly below (OpenPCDet: <=)
    ignored_gt = np.full(valid.shape, -1, dtype=np.int64)
    ignored_gt[(valid == 0) | ((valid == 1) & ignore)] = 1
    ignored_gt[(valid == 1) & ~ignore] = 0
    dt_height = np.abs(dt.bbox[:, 3] - dt.bbox[:, 1])
    ignored_dt = np.where(dt_height < MIN_HEIGHT[difficulty], 1, np.where(dt.code == current_class, 0, -1))
    return ignored_gt, ignored_dt.astype(np.int64), int((ignored_gt == 0).sum())


def _overlaps(gt, dt, metric, ov_off):
    box_dt = dt.bbox if metric == 0 else dt.box3d
    box_gt = gt.bbox if metric == 0 else gt.box3d
    return kern.frame_overlaps(metric, box_dt, box_gt, dt.off, gt.off, ov_off)


def eval_class(gt, dt, current_classes, difficultys, metric, min_overlaps, compute_aos, ov_off, dc_off, dc_boxes):
    """Precision (and AOS) curves of one metric.

    Args:
        gt, dt: flattened annotations; metric: 0 bbox, 1 bev, 2 3d; min_overlaps: (num_minoverlap, 3, num_class).
    Returns:
        dict with 'recall', 'precision', 'orientation': (num_class, num_difficulty, num_minoverlap, 41) float64.
    """
    overlaps = _overlaps(gt, dt, metric, ov_off)
    shape = (len(current_classes), len(difficultys), min_overlaps.shape[0], N_SAMPLE_PTS)
    precision, recall, aos = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for m, current_class in enumerate(current_classes):
        for idx_l, difficulty in enumerate(difficultys):
            ignored_gt, ignored_dt, num_valid_gt = _clean(gt, dt, current_class, difficulty)
            for k, min_overlap in enumerate(min_overlaps[:, metric, m]):
                scores = kern.collect_tp_scores(overlaps, ov_off, gt.off, dt.off, ignored_gt, ignored_dt, dt.score,
                                                metric, float(min_overlap))
                if num_valid_gt == 0 or scores.size == 0:
                    continue
                thresholds = kern.get_thresholds(scores, num_valid_gt, N_SAMPLE_PTS)
                pr = kern.accumulate_pr(overlaps, ov_off, gt.off, dt.off, ignored_gt, ignored_dt, dt.score, dt.alpha,
                                        gt.alpha, dc_off, dc_boxes, dt.bbox, metric, float(min_overlap), thresholds,
                                        compute_aos)
                n = len(thresholds)
                # tp + fp == 0 is possible only in corner cases (all detections above the threshold matched to
                # ignored ground truth); precision is 0 there instead of numpy's NaN
                det = pr[:, 0] + pr[:, 1]
                safe = np.where(det > 0, det, 1.0)
                recall[m, idx_l, k, :n] = pr[:, 0] / (pr[:, 0] + pr[:, 2])
                precision[m, idx_l, k, :n] = np.where(det > 0, pr[:, 0] / safe, 0.0)
                if compute_aos:
                    aos[m, idx_l, k, :n] = np.where(det > 0, pr[:, 3] / safe, 0.0)
                # prec[i] = max(prec[i:]) over the whole 41-point array (zeros beyond the last threshold)
                for arr in (precision, recall, aos):
                    arr[m, idx_l, k, :n] = np.maximum.accumulate(arr[m, idx_l, k, ::-1])[::-1][:n]
    return {'recall': recall, 'precision': precision, 'orientation': aos}


def get_mAP(prec):
    """11-point AP (recall 0, 0.1, ..., 1) in percent, over the last axis of a 41-point curve."""
    sums = 0
    for i in range(0, prec.shape[-1], 4):
        sums = sums + prec[..., i]
    return sums / 11 * 100


def get_mAP_R40(prec):
    """40-point AP (recall 1/40 ... 1, recall 0 excluded) in percent."""
    sums = 0
    for i in range(1, prec.shape[-1]):
        sums = sums + prec[..., i]
    return sums / 40 * 100


def do_eval(gt_annos, dt_annos, current_classes, min_overlaps, compute_aos=False, PR_detail_dict=None):
    """All metrics -> (mAP_bbox, mAP_bev, mAP_3d, mAP_aos, and the same four for R40).

    Each is (num_class, 3 difficulties, num_minoverlap) in percent; the aos arrays are None without compute_aos.
    """
    if len(gt_annos) != len(dt_annos):
        raise ValueError(f'eval.py: {len(gt_annos)} ground-truth frames but {len(dt_annos)} detection frames')
    gt = _Flat(gt_annos, 'ground-truth', with_score=False)
    dt = _Flat(dt_annos, 'detection', with_score=True)
    n_gt = np.diff(gt.off)
    n_dt = np.diff(dt.off)
    ov_off = _offsets(n_gt * n_dt)
    is_dc = gt.code == DONTCARE_CODE
    frame_of_gt = np.repeat(np.arange(len(n_gt)), n_gt)
    dc_off = _offsets(np.bincount(frame_of_gt[is_dc], minlength=len(n_gt)))
    dc_boxes = np.ascontiguousarray(gt.bbox[is_dc])
    difficultys = [0, 1, 2]
    out = []
    for metric, key in ((0, 'bbox'), (1, 'bev'), (2, '3d')):
        ret = eval_class(gt, dt, current_classes, difficultys, metric, min_overlaps,
                         compute_aos and metric == 0, ov_off, dc_off, dc_boxes)
        if PR_detail_dict is not None:
            PR_detail_dict[key] = ret['precision']
            if metric == 0 and compute_aos:
                PR_detail_dict['aos'] = ret['orientation']
        out.append(ret)
    mAP_bbox, mAP_bev, mAP_3d = (get_mAP(r['precision']) for r in out)
    mAP_bbox_R40, mAP_bev_R40, mAP_3d_R40 = (get_mAP_R40(r['precision']) for r in out)
    mAP_aos = get_mAP(out[0]['orientation']) if compute_aos else None
    mAP_aos_R40 = get_mAP_R40(out[0]['orientation']) if compute_aos else None
    return mAP_bbox, mAP_bev, mAP_3d, mAP_aos, mAP_bbox_R40, mAP_bev_R40, mAP_3d_R40, mAP_aos_R40


def _class_indices(current_classes):
    name_to_class = {v: n for n, v in CLASS_TO_NAME.items()}
    if not isinstance(current_classes, (list, tuple)):
        current_classes = [current_classes]
    out = []
    for c in current_classes:
        if isinstance(c, str):
            if c not in name_to_class:
                raise KeyError(f'eval.py: unknown class {c!r}; valid: {sorted(name_to_class)}')
            out.append(name_to_class[c])
        else:
            if int(c) not in CLASS_TO_NAME:
                raise KeyError(f'eval.py: unknown class index {c!r}; valid: {CLASS_TO_NAME}')
            out.append(int(c))
    return out


def _block(label, maps, j, i, fmt):
    return print_str(f'{label}AP:' + ', '.join(format(maps[j, d, i], fmt) for d in range(3)))


def get_official_eval_result(gt_annos, dt_annos, current_classes, PR_detail_dict=None):
    """KITTI metric with both overlap sets -> (report string in OpenPCDet's format, ret_dict).

    ret_dict holds the R40 APs of overlap set 0: ``<Class>_{3d,bev,image}/{easy,moderate,hard}_R40`` and, when the
    detections carry a valid alpha (not -10), ``<Class>_aos/..._R40``.
    """
    current_classes = _class_indices(current_classes)
    min_overlaps = MIN_OVERLAPS[:, :, current_classes]
    compute_aos = False
    for anno in dt_annos:  # OpenPCDet's rule: the first non-empty frame decides
        if len(anno['alpha']) != 0:
            compute_aos = bool(anno['alpha'][0] != -10)
            break
    (mAPbbox, mAPbev, mAP3d, mAPaos, mAPbbox_R40, mAPbev_R40, mAP3d_R40, mAPaos_R40) = do_eval(
        gt_annos, dt_annos, current_classes, min_overlaps, compute_aos, PR_detail_dict=PR_detail_dict)
    result = ''
    ret_dict = {}
    for j, curcls in enumerate(current_classes):
        name = CLASS_TO_NAME[curcls]
        for i in range(min_overlaps.shape[0]):
            thr = '{:.2f}, {:.2f}, {:.2f}:'.format(*min_overlaps[i, :, j])
            for suffix, maps in (('AP', (mAPbbox, mAPbev, mAP3d, mAPaos)),
                                 ('AP_R40', (mAPbbox_R40, mAPbev_R40, mAP3d_R40, mAPaos_R40))):
                result += print_str(f'{name} {suffix}@{thr}')
                result += _block('bbox ', maps[0], j, i, '.4f')
                result += _block('bev  ', maps[1], j, i, '.4f')
                result += _block('3d   ', maps[2], j, i, '.4f')
                if compute_aos:
                    result += _block('aos  ', maps[3], j, i, '.2f')
            if i == 0:
                for key, maps in (('3d', mAP3d_R40), ('bev', mAPbev_R40), ('image', mAPbbox_R40),
                                  ('aos', mAPaos_R40)):
                    if maps is None:
                        continue
                    for d, diff in enumerate(('easy', 'moderate', 'hard')):
                        ret_dict[f'{name}_{key}/{diff}_R40'] = maps[j, d, 0]
    return result, ret_dict
