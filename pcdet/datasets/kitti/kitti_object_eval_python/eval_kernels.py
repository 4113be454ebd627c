"""numba kernels of the KITTI metric, looping over all frames in one call (no Python loop over frames).

Data layout: ground truth and detections of all frames are concatenated; frame ``f`` owns ground-truth rows
``gt_off[f]:gt_off[f+1]`` and detection rows ``dt_off[f]:dt_off[f+1]``. Overlaps are stored per frame as a
row-major ``(n_dt, n_gt)`` block starting at ``ov_off[f]`` in one flat float64 array.

The matching rules (``frame_statistics``) are the official devkit's ``computeStatistics``
(evaluate_object.cpp), also used by OpenPCDet: pass 1 (``compute_fp=False``) gives each valid ground truth the
highest-scored unassigned detection with overlap > min_overlap and records its score; pass 2 (per score
threshold) gives each ground truth the highest-overlap valid detection, else an ignored (too small) one, counts
TP/FP/FN, then discounts unassigned detections inside DontCare areas (bbox metric only).
"""
import math

import numba
import numpy as np

from pcdet.ops.iou3d_nms.rotated_geometry import box_intersection_area

NO_DETECTION = -10000000.0


@numba.njit(cache=True)
def frame_overlaps(metric, dt_box, gt_box, dt_off, gt_off, ov_off):
    """Per-frame (n_dt, n_gt) overlap blocks, flattened.

    Args:
        metric: 0 bbox (2D IoU of [x1, y1, x2, y2]), 1 BEV, 2 3D.
        dt_box, gt_box: (D, 7) / (G, 7) float64. metric 0: columns 0-3 = image box. metrics 1-2: KITTI camera
            boxes [x, y, z, l, h, w, ry] (bottom centre, y down).
        dt_off, gt_off: (F+1,) int64 frame offsets; ov_off: (F+1,) int64 offsets of the blocks.
    Returns:
        (ov_off[-1],) float64.
    """
    out = np.zeros(ov_off[-1])
    for f in range(dt_off.shape[0] - 1):
        base = ov_off[f]
        n_gt = gt_off[f + 1] - gt_off[f]
        for jj in range(dt_off[f + 1] - dt_off[f]):
            d = dt_box[dt_off[f] + jj]
            for ii in range(n_gt):
                g = gt_box[gt_off[f] + ii]
                o = 0.0
                if metric == 0:
                    iw = min(d[2], g[2]) - max(d[0], g[0])
                    ih = min(d[3], g[3]) - max(d[1], g[1])
                    if iw > 0.0 and ih > 0.0:
                        inter = iw * ih
                        o = inter / ((d[2] - d[0]) * (d[3] - d[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter)
                else:
                    # camera (x, z) plane: BEV box [x, z, l, w, -ry] (see rotated_geometry)
                    inter = box_intersection_area(d[0], d[2], d[3], d[5], -d[6], g[0], g[2], g[3], g[5], -g[6])
                    if inter > 0.0:
                        if metric == 1:
                            o = inter / (d[3] * d[5] + g[3] * g[5] - inter)
                        else:
                            ih = min(d[1], g[1]) - max(d[1] - d[4], g[1] - g[4])
                            if ih > 0.0:
                                inter = inter * ih
                                o = inter / (d[3] * d[4] * d[5] + g[3] * g[4] * g[5] - inter)
                out[base + jj * n_gt + ii] = o
    return out


@numba.njit(cache=True)
def frame_statistics(ov, base, g0, n_gt, d0, n_dt, ignored_gt, ignored_dt, dt_score, dt_alpha, gt_alpha,
                     dc_boxes, dt_bbox, metric, min_overlap, thresh, compute_fp, compute_aos, tp_scores):
    """Match one frame (devkit ``computeStatistics``). Returns (tp, fp, fn, similarity, n_scores).

    In pass 1 (``compute_fp`` False) the scores of the true positives are written to ``tp_scores[0:n_scores]``.
    ``dc_boxes`` (K, 4) are this frame's DontCare image boxes.
    """
    assigned = np.zeros(n_dt, dtype=np.bool_)
    delta = np.empty(n_gt)
    n_delta = 0
    tp = 0
    fp = 0
    fn = 0
    n_scores = 0
    for i in range(n_gt):
        ig = ignored_gt[g0 + i]
        if ig == -1:
            continue
        det_idx = -1
        valid_detection = NO_DETECTION
        max_overlap = 0.0
        assigned_ignored_det = False
        for j in range(n_dt):
            idt = ignored_dt[d0 + j]
            if idt == -1 or assigned[j]:
                continue
            score = dt_score[d0 + j]
            if compute_fp and score < thresh:
                continue
            overlap = ov[base + j * n_gt + i]
            if not compute_fp:
                if overlap > min_overlap and score > valid_detection:
                    det_idx = j
                    valid_detection = score
            elif overlap > min_overlap and (overlap > max_overlap or assigned_ignored_det) and idt == 0:
                max_overlap = overlap
                det_idx = j
                valid_detection = 1.0
                assigned_ignored_det = False
            elif overlap > min_overlap and valid_detection == NO_DETECTION and idt == 1:
                det_idx = j
                valid_detection = 1.0
                assigned_ignored_det = True
        if valid_detection == NO_DETECTION:
            if ig == 0:
                fn += 1
        elif ig == 1 or ignored_dt[d0 + det_idx] == 1:
            assigned[det_idx] = True
        else:
            tp += 1
            if not compute_fp:
                tp_scores[n_scores] = dt_score[d0 + det_idx]
                n_scores += 1
            if compute_aos:
                delta[n_delta] = gt_alpha[g0 + i] - dt_alpha[d0 + det_idx]
                n_delta += 1
            assigned[det_idx] = True
    similarity = 0.0
    if compute_fp:
        for j in range(n_dt):
            if not (assigned[j] or ignored_dt[d0 + j] != 0 or dt_score[d0 + j] < thresh):
                fp += 1
        nstuff = 0
        if metric == 0:
            for k in range(dc_boxes.shape[0]):
                c = dc_boxes[k]
                for j in range(n_dt):
                    if assigned[j] or ignored_dt[d0 + j] != 0 or dt_score[d0 + j] < thresh:
                        continue
                    b = dt_bbox[d0 + j]
                    iw = min(b[2], c[2]) - max(b[0], c[0])
                    ih = min(b[3], c[3]) - max(b[1], c[1])
                    # devkit boxoverlap(det, dc, criterion 0): intersection / detection area
                    if iw > 0.0 and ih > 0.0 and iw * ih / ((b[2] - b[0]) * (b[3] - b[1])) > min_overlap:
                        assigned[j] = True
                        nstuff += 1
        fp -= nstuff
        if compute_aos:
            if tp > 0 or fp > 0:
                for k in range(n_delta):
                    similarity += (1.0 + math.cos(delta[k])) / 2.0
            else:
                similarity = -1.0
    return tp, fp, fn, similarity, n_scores


@numba.njit(cache=True)
def collect_tp_scores(ov, ov_off, gt_off, dt_off, ignored_gt, ignored_dt, dt_score, metric, min_overlap):
    """Pass 1 over all frames: the scores of the true positives, concatenated (unsorted)."""
    scores = np.empty(gt_off[-1])
    n = 0
    empty_dc = np.zeros((0, 4))
    dummy = np.zeros(1)
    for f in range(gt_off.shape[0] - 1):
        g0 = gt_off[f]
        d0 = dt_off[f]
        n_gt = gt_off[f + 1] - g0
        n_dt = dt_off[f + 1] - d0
        if n_gt == 0 or n_dt == 0:
            continue
        k = frame_statistics(ov, ov_off[f], g0, n_gt, d0, n_dt, ignored_gt, ignored_dt, dt_score, dummy, dummy,
                             empty_dc, empty_dc, metric, min_overlap, 0.0, False, False, scores[n:])[4]
        n += k
    return scores[:n]


@numba.njit(cache=True)
def get_thresholds(scores, num_gt, num_sample_pts=41):
    """Devkit ``getThresholds``: at most 41 scores sampling recall 0, 1/40, ..., 1 (scores sorted here)."""
    scores = np.sort(scores)[::-1]
    out = np.empty(scores.shape[0])
    k = 0
    current_recall = 0.0
    n = scores.shape[0]
    for i in range(n):
        l_recall = (i + 1) / num_gt
        r_recall = (i + 2) / num_gt if i < n - 1 else l_recall
        if (r_recall - current_recall) < (current_recall - l_recall) and i < n - 1:
            continue
        out[k] = scores[i]
        k += 1
        current_recall += 1.0 / (num_sample_pts - 1.0)
    return out[:k]


@numba.njit(cache=True)
def accumulate_pr(ov, ov_off, gt_off, dt_off, ignored_gt, ignored_dt, dt_score, dt_alpha, gt_alpha, dc_off, dc_boxes,
                  dt_bbox, metric, min_overlap, thresholds, compute_aos):
    """Pass 2 over all frames: (T, 4) sums of [tp, fp, fn, similarity] per score threshold (descending).

    A frame's statistics depend on the threshold only through the set of its detections with score >= threshold;
    thresholds are descending, so that set only grows and its size identifies it: statistics are computed once
    per distinct set and reused for the other thresholds (devkit result, a fraction of the work).
    """
    n_t = thresholds.shape[0]
    pr = np.zeros((n_t, 4))
    dummy = np.zeros(1)
    for f in range(gt_off.shape[0] - 1):
        g0 = gt_off[f]
        d0 = dt_off[f]
        n_gt = gt_off[f + 1] - g0
        n_dt = dt_off[f + 1] - d0
        relevant = False
        for i in range(n_gt):
            if ignored_gt[g0 + i] != -1:
                relevant = True
        for j in range(n_dt):
            if ignored_dt[d0 + j] != -1:
                relevant = True
        if not relevant:
            continue
        dc = dc_boxes[dc_off[f]:dc_off[f + 1]]
        last_count = -1
        tp = fp = fn = 0
        sim = 0.0
        for t in range(n_t):
            count = 0
            for j in range(n_dt):
                if ignored_dt[d0 + j] != -1 and dt_score[d0 + j] >= thresholds[t]:
                    count += 1
            if count != last_count:
                tp, fp, fn, sim, _ = frame_statistics(ov, ov_off[f], g0, n_gt, d0, n_dt, ignored_gt, ignored_dt,
                                                      dt_score, dt_alpha, gt_alpha, dc, dt_bbox, metric,
                                                      min_overlap, thresholds[t], True, compute_aos, dummy)
                last_count = count
            pr[t, 0] += tp
            pr[t, 1] += fp
            pr[t, 2] += fn
            if sim != -1.0:
                pr[t, 3] += sim
    return pr
