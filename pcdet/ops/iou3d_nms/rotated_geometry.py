"""Exact intersection of rotated rectangles (numba, float64): the one polygon geometry of the toolbox.

Everything that needs a rotated IoU (the CPU path of ``iou3d_nms_utils`` in the LiDAR frame, the KITTI evaluator
in the camera frame) calls the functions below; nothing else clips polygons.

A BEV box is ``(5,) [cx, cy, dx, dy, heading]`` in a right-handed 2D frame: centre, size along the heading
direction (dx) and across it (dy), heading counter-clockwise from the first axis.

- LiDAR boxes ``[x, y, z, dx, dy, dz, heading]`` -> ``[x, y, dx, dy, heading]``.
- KITTI camera boxes ``[x, y, z, l, h, w, ry]`` -> ``[x, z, l, w, -ry]`` in the (x, z) plane: a rotation by ``ry``
  about the camera's +y (down) axis turns the (x, z) plane by ``-ry``. Using ``+ry`` would mirror only the boxes,
  not the centres, and give wrong overlaps for rotated boxes.

The intersection is computed by Sutherland-Hodgman clipping of one rectangle by the four edge half-planes of the
other (both convex, both counter-clockwise by construction). Edge crossings use
``(p * d_q - q * d_p) / (d_q - d_p)``, which is exact whenever the crossing is representable (axis-aligned boxes
with short binary fractions), so hand-made test cases such as IoU exactly 0.7 stay exact. Identical boxes take a
fast path and have intersection == area, hence IoU exactly 1 (the official KITTI devkit's answer).
"""
import math

import numba
import numpy as np

_MAX_VERTS = 16  # clipping a quadrilateral by 4 half-planes gives at most 8 vertices; room to spare


@numba.njit(cache=True)
def _corners(cx, cy, dx, dy, heading, xs, ys):
    """Write the 4 corners of a BEV box (counter-clockwise) into xs[0:4], ys[0:4]."""
    c = math.cos(heading)
    s = math.sin(heading)
    hx = 0.5 * dx
    hy = 0.5 * dy
    # local corners (+,-), (+,+), (-,+), (-,-): counter-clockwise for dx, dy > 0 and any rotation
    lx0, ly0 = hx, -hy
    lx1, ly1 = hx, hy
    lx2, ly2 = -hx, hy
    lx3, ly3 = -hx, -hy
    xs[0] = cx + lx0 * c - ly0 * s
    ys[0] = cy + lx0 * s + ly0 * c
    xs[1] = cx + lx1 * c - ly1 * s
    ys[1] = cy + lx1 * s + ly1 * c
    xs[2] = cx + lx2 * c - ly2 * s
    ys[2] = cy + lx2 * s + ly2 * c
    xs[3] = cx + lx3 * c - ly3 * s
    ys[3] = cy + lx3 * s + ly3 * c


@numba.njit(cache=True)
def _clip_half_plane(px, py, n, ex0, ey0, ex1, ey1, ox, oy):
    """Clip polygon (px, py)[0:n] to the left of the directed edge e0 -> e1; write into (ox, oy), return count."""
    m = 0
    ux = ex1 - ex0
    uy = ey1 - ey0
    for i in range(n):
        j = i + 1 if i + 1 < n else 0
        ax, ay = px[i], py[i]
        bx, by = px[j], py[j]
        da = ux * (ay - ey0) - uy * (ax - ex0)  # > 0: left of the edge (inside), 0: on it
        db = ux * (by - ey0) - uy * (bx - ex0)
        if da >= 0.0:
            ox[m] = ax
            oy[m] = ay
            m += 1
        if (da > 0.0 and db < 0.0) or (da < 0.0 and db > 0.0):
            inv = 1.0 / (db - da)
            ox[m] = (ax * db - bx * da) * inv
            oy[m] = (ay * db - by * da) * inv
            m += 1
    return m


@numba.njit(cache=True)
def _polygon_area(xs, ys, n):
    """Absolute area of a simple polygon (shoelace)."""
    acc = 0.0
    for i in range(n):
        j = i + 1 if i + 1 < n else 0
        acc += xs[i] * ys[j] - xs[j] * ys[i]
    return abs(acc) * 0.5


@numba.njit(cache=True)
def box_intersection_area(a0, a1, a2, a3, a4, b0, b1, b2, b3, b4):
    """Exact intersection area of two BEV boxes [cx, cy, dx, dy, heading] (float64 scalars in, float out)."""
    if a2 <= 0.0 or a3 <= 0.0 or b2 <= 0.0 or b3 <= 0.0:
        return 0.0
    if a0 == b0 and a1 == b1 and a2 == b2 and a3 == b3 and a4 == b4:
        return a2 * a3  # identical boxes: IoU exactly 1, independent of rounding in the clipping
    # circumscribed circles do not touch -> no overlap (cheap rejection of most pairs)
    ra = 0.5 * math.sqrt(a2 * a2 + a3 * a3)
    rb = 0.5 * math.sqrt(b2 * b2 + b3 * b3)
    ddx = a0 - b0
    ddy = a1 - b1
    if ddx * ddx + ddy * ddy >= (ra + rb) * (ra + rb):
        return 0.0
    px = np.empty(_MAX_VERTS)
    py = np.empty(_MAX_VERTS)
    qx = np.empty(_MAX_VERTS)
    qy = np.empty(_MAX_VERTS)
    bx = np.empty(4)
    by = np.empty(4)
    _corners(a0, a1, a2, a3, a4, px, py)
    _corners(b0, b1, b2, b3, b4, bx, by)
    n = 4
    for k in range(4):
        k1 = k + 1 if k < 3 else 0
        n = _clip_half_plane(px, py, n, bx[k], by[k], bx[k1], by[k1], qx, qy)
        if n < 3:
            return 0.0
        px, qx = qx, px
        py, qy = qy, py
    area = _polygon_area(px, py, n)
    # the true intersection never exceeds either box; rounding could, by ~1 ulp
    return min(area, a2 * a3, b2 * b3)


@numba.njit(cache=True)
def bev_overlap_matrix(boxes_a, boxes_b, criterion):
    """Pairwise overlap of BEV boxes.

    Args:
        boxes_a: (N, 5) float64 [cx, cy, dx, dy, heading]; boxes_b: (M, 5) float64.
        criterion: -1 IoU (intersection / union), 0 intersection / area_a, 1 intersection / area_b.
    Returns:
        (N, M) float64; 0 where the denominator is 0 (degenerate boxes).
    """
    n = boxes_a.shape[0]
    m = boxes_b.shape[0]
    out = np.zeros((n, m))
    for i in range(n):
        a = boxes_a[i]
        area_a = a[2] * a[3]
        for j in range(m):
            b = boxes_b[j]
            inter = box_intersection_area(a[0], a[1], a[2], a[3], a[4], b[0], b[1], b[2], b[3], b[4])
            if inter <= 0.0:
                continue
            if criterion == -1:
                denom = area_a + b[2] * b[3] - inter
            elif criterion == 0:
                denom = area_a
            else:
                denom = b[2] * b[3]
            if denom > 0.0:
                out[i, j] = inter / denom
    return out


@numba.njit(cache=True)
def iou3d_matrix(boxes_a, lo_a, hi_a, boxes_b, lo_b, hi_b):
    """Pairwise 3D IoU of boxes given as a BEV rectangle and a vertical interval.

    Args:
        boxes_a: (N, 5) float64 BEV boxes; lo_a, hi_a: (N,) float64 bottom / top of the vertical extent
            (LiDAR: z -/+ dz/2; KITTI camera, y pointing down: y - h and y).
        boxes_b, lo_b, hi_b: the same for M boxes.
    Returns:
        (N, M) float64 intersection volume / union volume (0 for degenerate boxes).
    """
    n = boxes_a.shape[0]
    m = boxes_b.shape[0]
    out = np.zeros((n, m))
    for i in range(n):
        a = boxes_a[i]
        vol_a = a[2] * a[3] * (hi_a[i] - lo_a[i])
        for j in range(m):
            h = min(hi_a[i], hi_b[j]) - max(lo_a[i], lo_b[j])
            if h <= 0.0:
                continue
            b = boxes_b[j]
            inter = box_intersection_area(a[0], a[1], a[2], a[3], a[4], b[0], b[1], b[2], b[3], b[4]) * h
            if inter <= 0.0:
                continue
            union = vol_a + b[2] * b[3] * (hi_b[j] - lo_b[j]) - inter
            if union > 0.0:
                out[i, j] = inter / union
    return out


@numba.njit(cache=True)
def nms_rotated_sorted(boxes, thresh):
    """Greedy NMS on BEV boxes already sorted by descending score.

    Args:
        boxes: (N, 5) float64 BEV boxes, highest score first; thresh: a box is suppressed when its IoU with a kept,
            higher-scored box is strictly greater than thresh (OpenPCDet's rule).
    Returns:
        (K,) int64 positions (into ``boxes``) of the kept boxes, ascending.
    """
    n = boxes.shape[0]
    suppressed = np.zeros(n, dtype=np.bool_)
    keep = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):
        if suppressed[i]:
            continue
        keep[k] = i
        k += 1
        a = boxes[i]
        area_a = a[2] * a[3]
        for j in range(i + 1, n):
            if suppressed[j]:
                continue
            b = boxes[j]
            inter = box_intersection_area(a[0], a[1], a[2], a[3], a[4], b[0], b[1], b[2], b[3], b[4])
            if inter <= 0.0:
                continue
            union = area_a + b[2] * b[3] - inter
            if union > 0.0 and inter / union > thresh:
                suppressed[j] = True
    return keep[:k]


@numba.njit(cache=True)
def nms_aligned_sorted(boxes, thresh):
    """Greedy NMS with axis-aligned BEV IoU (the heading is ignored, OpenPCDet's ``nms_normal``).

    Args and returns as ``nms_rotated_sorted``; boxes (N, 5) [cx, cy, dx, dy, heading(unused)], sorted.
    """
    n = boxes.shape[0]
    suppressed = np.zeros(n, dtype=np.bool_)
    keep = np.empty(n, dtype=np.int64)
    k = 0
    for i in range(n):
        if suppressed[i]:
            continue
        keep[k] = i
        k += 1
        a = boxes[i]
        for j in range(i + 1, n):
            if suppressed[j]:
                continue
            b = boxes[j]
            w = min(a[0] + 0.5 * a[2], b[0] + 0.5 * b[2]) - max(a[0] - 0.5 * a[2], b[0] - 0.5 * b[2])
            h = min(a[1] + 0.5 * a[3], b[1] + 0.5 * b[3]) - max(a[1] - 0.5 * a[3], b[1] - 0.5 * b[3])
            if w <= 0.0 or h <= 0.0:
                continue
            inter = w * h
            union = a[2] * a[3] + b[2] * b[3] - inter
            if union > 0.0 and inter / union > thresh:
                suppressed[j] = True
    return keep[:k]
