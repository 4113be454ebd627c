"""Rotated BEV / 3D IoU and NMS (pcdet.ops.iou3d_nms) against independent references.

References written here: a pure-Python Sutherland-Hodgman polygon clipper (corners from an explicit rotation
matrix), shapely (a test dependency), and a brute-force greedy NMS built on the reference IoU.
"""
import math
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from pcdet.ops.iou3d_nms import iou3d_nms_utils as iou_utils

SRC_DIR = os.path.join(os.path.dirname(__file__), '..', 'pcdet', 'ops', 'iou3d_nms', 'src')


# ----------------------------------------------------------------------------------------------- references
def ref_corners(box):
    """BEV corners of a LiDAR box, counter-clockwise, via an explicit rotation matrix."""
    x, y, _, dx, dy, _, h = [float(v) for v in box[:7]]
    rot = np.array([[math.cos(h), -math.sin(h)], [math.sin(h), math.cos(h)]])
    local = np.array([[dx / 2, -dy / 2], [dx / 2, dy / 2], [-dx / 2, dy / 2], [-dx / 2, -dy / 2]])
    return [tuple(p) for p in (local @ rot.T + np.array([x, y]))]


def ref_clip(subject, clip):
    """Sutherland-Hodgman: subject polygon clipped by a convex counter-clockwise clip polygon."""
    def inside(p, a, b):
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) >= 0

    def cross_point(p, q, a, b):
        x1, y1, x2, y2 = p[0], p[1], q[0], q[1]
        x3, y3, x4, y4 = a[0], a[1], b[0], b[1]
        den = (x1 - x2) * (y3 - y4) - (y1 - y2) * (x3 - x4)
        t = ((x1 - x3) * (y3 - y4) - (y1 - y3) * (x3 - x4)) / den
        return (x1 + t * (x2 - x1), y1 + t * (y2 - y1))

    output = list(subject)
    for i in range(len(clip)):
        a, b = clip[i], clip[(i + 1) % len(clip)]
        inp, output = output, []
        for j in range(len(inp)):
            p, q = inp[j - 1], inp[j]
            if inside(q, a, b):
                if not inside(p, a, b):
                    output.append(cross_point(p, q, a, b))
                output.append(q)
            elif inside(p, a, b):
                output.append(cross_point(p, q, a, b))
        if not output:
            return []
    return output


def ref_area(poly):
    return abs(sum(poly[i][0] * poly[(i + 1) % len(poly)][1] - poly[(i + 1) % len(poly)][0] * poly[i][1]
                   for i in range(len(poly)))) / 2 if len(poly) >= 3 else 0.0


def ref_bev_iou(a, b):
    inter = ref_area(ref_clip(ref_corners(a), ref_corners(b)))
    return inter / (a[3] * a[4] + b[3] * b[4] - inter)


def ref_iou3d(a, b):
    h = max(0.0, min(a[2] + a[5] / 2, b[2] + b[5] / 2) - max(a[2] - a[5] / 2, b[2] - b[5] / 2))
    inter = ref_area(ref_clip(ref_corners(a), ref_corners(b))) * h
    return inter / (a[3] * a[4] * a[5] + b[3] * b[4] * b[5] - inter)


def ref_nms(boxes, scores, thresh, iou_fn):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    for i in order:
        if all(iou_fn(boxes[k], boxes[i]) <= thresh for k in keep):
            keep.append(i)
    return keep


def ref_aligned_iou(a, b):
    w = min(a[0] + a[3] / 2, b[0] + b[3] / 2) - max(a[0] - a[3] / 2, b[0] - b[3] / 2)
    h = min(a[1] + a[4] / 2, b[1] + b[4] / 2) - max(a[1] - a[4] / 2, b[1] - b[4] / 2)
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / (a[3] * a[4] + b[3] * b[4] - w * h)


def random_boxes(rng, n, spread=4.0):
    """Overlapping LiDAR boxes: centres in a small area so that many pairs intersect."""
    return np.concatenate([rng.uniform(-spread, spread, (n, 2)), rng.uniform(-1, 1, (n, 1)),
                           rng.uniform(0.5, 5.0, (n, 3)), rng.uniform(-np.pi, np.pi, (n, 1))], axis=1)


# ----------------------------------------------------------------------------------------------- BEV / 3D IoU
def test_bev_iou_matches_polygon_clipping_reference():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 30), random_boxes(rng, 25)
    iou = iou_utils.boxes_bev_iou_cpu(a, b)
    assert isinstance(iou, np.ndarray) and iou.shape == (30, 25) and iou.dtype == np.float64
    ref = np.array([[ref_bev_iou(x, y) for y in b] for x in a])
    assert (ref > 0).mean() > 0.3  # the test exercises real overlaps
    np.testing.assert_allclose(iou, ref, atol=1e-10)


def test_bev_iou_matches_shapely():
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 20), random_boxes(rng, 20)
    iou = iou_utils.boxes_bev_iou_cpu(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(iou, torch.Tensor) and iou.dtype == torch.float32
    for i in range(20):
        pa = Polygon(ref_corners(a[i]))
        for j in range(20):
            pb = Polygon(ref_corners(b[j]))
            inter = pa.intersection(pb).area
            assert iou[i, j].item() == pytest.approx(inter / (pa.area + pb.area - inter), abs=1e-6)


def test_hand_computed_ious():
    unit = [0, 0, 0, 2, 2, 2, 0]
    boxes = np.array([unit,
                      [1, 0, 0, 2, 2, 2, 0],            # half overlap: 2 / (4 + 4 - 2) = 1/3
                      [0, 0, 0, 2, 2, 2, np.pi / 4],    # square vs itself turned 45 deg: octagon 8(sqrt2 - 1)
                      [0, 0, 1, 2, 2, 2, 0],            # same BEV, half the height: 3D IoU 4 / (8 + 8 - 4)
                      [5, 5, 0, 2, 2, 2, 0.3]])         # disjoint
    bev = iou_utils.boxes_bev_iou_cpu(boxes[:1], boxes)[0]
    octagon = 8 * (math.sqrt(2) - 1)
    np.testing.assert_allclose(bev, [1, 1 / 3, octagon / (8 - octagon), 1, 0], atol=1e-12)
    iou3d = iou_utils.boxes_iou3d_gpu(torch.tensor(boxes[:1]), torch.tensor(boxes))[0]
    np.testing.assert_allclose(iou3d.numpy(), [1, 1 / 3, octagon / (8 - octagon), 1 / 3, 0], atol=1e-6)


def test_identical_boxes_have_iou_exactly_one():
    rng = np.random.default_rng(2)
    boxes = random_boxes(rng, 50)
    assert np.all(np.diag(iou_utils.boxes_bev_iou_cpu(boxes, boxes)) == 1.0)
    t = torch.from_numpy(boxes).float()
    assert torch.all(torch.diag(iou_utils.boxes_iou3d_gpu(t, t)) == 1.0)


def test_heading_plus_pi_gives_the_same_box():
    rng = np.random.default_rng(3)
    a, b = random_boxes(rng, 10), random_boxes(rng, 10)
    flipped = a.copy()
    flipped[:, 6] += np.pi
    np.testing.assert_allclose(iou_utils.boxes_bev_iou_cpu(a, b), iou_utils.boxes_bev_iou_cpu(flipped, b), atol=1e-12)


def test_iou3d_matches_reference():
    rng = np.random.default_rng(4)
    a, b = random_boxes(rng, 15), random_boxes(rng, 15)
    iou = iou_utils.boxes_iou3d_gpu(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
    ref = np.array([[ref_iou3d(x, y) for y in b32] for x in a32])
    np.testing.assert_allclose(iou.numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(iou_utils.boxes_iou_bev(torch.from_numpy(a), torch.from_numpy(b)).numpy(),
                               [[ref_bev_iou(x, y) for y in b] for x in a], atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), angle=st.floats(-np.pi, np.pi), shift=st.floats(-50, 50))
def test_iou_symmetric_bounded_and_rigid_invariant(seed, angle, shift):
    rng = np.random.default_rng(seed)
    a, b = random_boxes(rng, 4), random_boxes(rng, 5)
    iou = iou_utils.boxes_bev_iou_cpu(a, b)
    assert np.all(iou >= 0) and np.all(iou <= 1)
    np.testing.assert_allclose(iou, iou_utils.boxes_bev_iou_cpu(b, a).T, atol=1e-12)

    def move(boxes):  # the same rotation + translation applied to both sets
        out = boxes.copy()
        c, s = math.cos(angle), math.sin(angle)
        out[:, 0] = c * boxes[:, 0] - s * boxes[:, 1] + shift
        out[:, 1] = s * boxes[:, 0] + c * boxes[:, 1] - shift
        out[:, 6] += angle
        return out
    np.testing.assert_allclose(iou_utils.boxes_bev_iou_cpu(move(a), move(b)), iou, atol=1e-9)


# ----------------------------------------------------------------------------------------------- NMS
@pytest.mark.parametrize('thresh', [0.1, 0.5, 0.7])
def test_nms_matches_brute_force(thresh):
    rng = np.random.default_rng(int(thresh * 10))
    base = random_boxes(rng, 30, spread=6.0)
    # plus jittered near-duplicates, so that every threshold suppresses something
    boxes = np.concatenate([base, base + rng.normal(0, [0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1], base.shape)])
    scores = rng.random(60)
    scores[10:14] = scores[5]  # ties: equal scores keep input order
    keep, none = iou_utils.nms_gpu(torch.from_numpy(boxes), torch.from_numpy(scores), thresh)
    assert none is None and keep.dtype == torch.long
    expected = ref_nms(boxes, scores, thresh, ref_bev_iou)
    assert keep.tolist() == expected
    assert 0 < len(expected) < 60  # something was suppressed, something kept
    keep_n, _ = iou_utils.nms_normal_gpu(torch.from_numpy(boxes), torch.from_numpy(scores), thresh)
    assert keep_n.tolist() == ref_nms(boxes, scores, thresh, ref_aligned_iou)


def test_nms_pre_maxsize_and_empty():
    rng = np.random.default_rng(7)
    boxes = torch.from_numpy(random_boxes(rng, 30)).float()
    scores = torch.rand(30, generator=torch.Generator().manual_seed(0))
    keep, _ = iou_utils.nms_gpu(boxes, scores, 0.3, pre_maxsize=10)
    top10 = torch.sort(scores, descending=True)[1][:10]
    assert set(keep.tolist()) <= set(top10.tolist())
    assert keep.tolist() == [top10[i].item() for i in ref_nms(boxes[top10].double().numpy(),
                                                                scores[top10].double().numpy(), 0.3, ref_bev_iou)]
    empty, _ = iou_utils.nms_gpu(boxes[:0], scores[:0], 0.5)
    assert empty.shape == (0,)


def test_nms_suppresses_only_strictly_above_threshold():
    # IoU of these two boxes is exactly 1/3 (half overlap of equal boxes)
    boxes = torch.tensor([[0, 0, 0, 2, 2, 2, 0], [1, 0, 0, 2, 2, 2, 0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert iou_utils.nms_gpu(boxes, scores, 1 / 3)[0].tolist() == [0, 1]
    assert iou_utils.nms_gpu(boxes, scores, 0.33)[0].tolist() == [0]


def test_bad_input_is_rejected_with_the_file_name():
    with pytest.raises(ValueError, match='iou3d_nms_utils.py.*\\(N, 7\\)'):
        iou_utils.boxes_bev_iou_cpu(np.zeros((3, 5)), np.zeros((3, 7)))
    with pytest.raises(ValueError, match='scores'):
        iou_utils.nms_gpu(torch.zeros(3, 7), torch.zeros(4), 0.5)


# ----------------------------------------------------------------------------------------------- CUDA
@pytest.mark.skipif(shutil.which('nvcc') is None, reason='nvcc not on PATH')
def test_cuda_kernel_compiles_with_nvcc(tmp_path):
    src = os.path.join(SRC_DIR, 'iou3d_nms_kernel.cu')
    out = subprocess.run(['nvcc', '-c', src, '-o', str(tmp_path / 'iou3d_nms_kernel.o')],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / 'iou3d_nms_kernel.o').stat().st_size > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device: CUDA vs CPU comparison not run')
def test_cuda_matches_cpu():
    pytest.importorskip('pcdet.ops.iou3d_nms.iou3d_nms_cuda', reason='iou3d_nms_cuda extension not built')
    rng = np.random.default_rng(8)
    a = torch.from_numpy(random_boxes(rng, 200, spread=10)).float()
    b = torch.from_numpy(random_boxes(rng, 150, spread=10)).float()
    scores = torch.rand(200, generator=torch.Generator().manual_seed(1))
    dev = torch.device('cuda')
    torch.testing.assert_close(iou_utils.boxes_iou_bev(a.to(dev), b.to(dev)).cpu(), iou_utils.boxes_iou_bev(a, b),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(iou_utils.boxes_iou3d_gpu(a.to(dev), b.to(dev)).cpu(),
                               iou_utils.boxes_iou3d_gpu(a, b), atol=1e-5, rtol=0)
    for fn in (iou_utils.nms_gpu, iou_utils.nms_normal_gpu):
        assert fn(a.to(dev), scores.to(dev), 0.3)[0].cpu().tolist() == fn(a, scores, 0.3)[0].tolist()
