"""RoIPointPool3d (pcdet.ops.roipoint_pool3d) against a brute-force per-box loop written here.

OpenPCDet v0.6 semantics: inside = |z - cz| <= dz / 2 and, in the box frame, |x| < dx / 2 + 1e-5, |y| < dy / 2 + 1e-5
for the box enlarged by pool_extra_width; the first num_sampled_points inside points in index order, repeated
cyclically when fewer; boxes without points flagged empty with zero features.
"""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from pcdet.ops.roipoint_pool3d import roipoint_pool3d_utils

MARGIN = 1e-5


def pool_reference(points, features, boxes, num_sampled, extra_width):
    """Brute force: an explicit rotation per box, numpy float64."""
    points, features, boxes = (np.asarray(t, dtype=np.float64) for t in (points, features, boxes))
    batch, num_boxes = boxes.shape[:2]
    pooled = np.zeros((batch, num_boxes, num_sampled, 3 + features.shape[2]))
    empty = np.zeros((batch, num_boxes), dtype=np.int32)
    extra = np.broadcast_to(np.asarray(extra_width, dtype=np.float64), (3,))
    for b in range(batch):
        for m in range(num_boxes):
            cx, cy, cz, dx, dy, dz, heading = boxes[b, m, :7]
            dx, dy, dz = dx + extra[0], dy + extra[1], dz + extra[2]
            to_box = np.array([[math.cos(heading), math.sin(heading)], [-math.sin(heading), math.cos(heading)]])
            local = (points[b, :, :2] - [cx, cy]) @ to_box.T
            inside = (np.abs(points[b, :, 2] - cz) <= dz / 2) & (np.abs(local[:, 0]) < dx / 2 + MARGIN) \
                & (np.abs(local[:, 1]) < dy / 2 + MARGIN)
            chosen = np.flatnonzero(inside)[:num_sampled]
            if len(chosen) == 0:
                empty[b, m] = 1
                continue
            order = chosen[np.arange(num_sampled) % len(chosen)]
            pooled[b, m] = np.concatenate([points[b, order], features[b, order]], axis=1)
    return pooled, empty


def random_scene(rng, batch=2, num_points=700, channels=4):
    points = rng.uniform([-10, -10, -2], [10, 10, 2], size=(batch, num_points, 3)).astype(np.float32)
    features = rng.normal(size=(batch, num_points, channels)).astype(np.float32)
    boxes = np.concatenate([
        np.concatenate([rng.uniform([-8, -8, -1], [8, 8, 1], size=(batch, 5, 3)),
                        rng.uniform([0.5, 0.5, 0.5], [6, 4, 3], size=(batch, 5, 3)),
                        rng.uniform(-np.pi, np.pi, size=(batch, 5, 1))], axis=2),
        np.tile([[[50.0, 50.0, 0.0, 1.0, 1.0, 1.0, 0.3]]], (batch, 1, 1)),      # far away: empty
        np.tile([[[0.0, 0.0, 0.0, 20.0, 20.0, 4.0, 0.0]]], (batch, 1, 1)),      # everything: more than sampled
    ], axis=1).astype(np.float32)
    boxes[:, 1] = boxes[:, 0]                                                      # overlapping (identical) boxes
    return points, features, boxes


@pytest.mark.parametrize('extra_width', [1.0, [0.0, 0.0, 0.0], [0.5, 0.2, 0.1]])
def test_matches_brute_force(extra_width):
    points, features, boxes = random_scene(np.random.default_rng(0))
    pool = roipoint_pool3d_utils.RoIPointPool3d(num_sampled_points=64, pool_extra_width=extra_width)
    pooled, empty = pool(torch.from_numpy(points), torch.from_numpy(features), torch.from_numpy(boxes))
    ref_pooled, ref_empty = pool_reference(points, features, boxes, 64, extra_width)
    assert pooled.shape == (2, 7, 64, 7) and pooled.dtype == torch.float32 and empty.dtype == torch.int32
    np.testing.assert_array_equal(empty.numpy(), ref_empty)
    np.testing.assert_array_equal(pooled.numpy(), ref_pooled.astype(np.float32))
    assert empty[:, 5].eq(1).all() and pooled[:, 5].eq(0).all()
    assert torch.equal(pooled[:, 0], pooled[:, 1])
    counts = [len(set(map(tuple, ref_pooled[b, m, :, :3]))) for b in range(2) for m in range(7)]
    assert min(c for c in counts if c > 0) < 64 and max(counts) == 64     # cyclic fill and truncation both seen


def test_boundary_semantics_and_cyclic_order():
    """Margin 1e-5 on the BEV sides (strict), inclusive height; fewer points than slots repeat in index order."""
    points = torch.tensor([[[1 + 5e-6, 0, 0], [1 + 2e-5, 0, 0], [0, 0, 1.0], [0, 0, 1 + 1e-6], [0, -0.5, 0.2],
                            [3, 3, 3]]], dtype=torch.float64)
    features = torch.arange(6, dtype=torch.float64).view(1, 6, 1)
    boxes = torch.tensor([[[0, 0, 0, 2, 2, 2, 0], [3, 3, 3, 0.5, 0.5, 0.5, 1.0]]], dtype=torch.float64)
    pooled, empty = roipoint_pool3d_utils.RoIPointPool3d(num_sampled_points=5, pool_extra_width=0.0)(
        points, features, boxes)
    assert empty.tolist() == [[0, 0]]
    assert pooled[0, 0, :, 3].tolist() == [0, 2, 4, 0, 2]           # points 0, 2, 4 inside, repeated cyclically
    assert pooled[0, 1, :, 3].tolist() == [5] * 5
    assert torch.equal(pooled[0, 0, 1, :3], points[0, 2])


def test_no_gradient_and_bad_inputs():
    points, features, boxes = (torch.from_numpy(a) for a in random_scene(np.random.default_rng(1), num_points=50))
    pool = roipoint_pool3d_utils.RoIPointPool3d(num_sampled_points=8)
    feats = features.clone().requires_grad_(True)
    pooled, _ = pool(points, feats, boxes)
    with pytest.raises(NotImplementedError, match='no gradient'):
        pooled.sum().backward()
    with torch.no_grad():
        assert not pool(points, feats, boxes)[0].requires_grad
    with pytest.raises(ValueError, match=r'roipoint_pool3d_utils.py: points must be \(B, N, 3\)'):
        pool(points[..., :2], features, boxes)
    with pytest.raises(ValueError, match=r'boxes3d must be \(B, M, 7\)'):
        pool(points, features, boxes[..., :6])
    with pytest.raises(ValueError, match='num_sampled_points must be a positive int'):
        roipoint_pool3d_utils.RoIPointPool3d(num_sampled_points=0)(points, features, boxes)


def test_import_loads_no_compiled_extension():
    code = ('import sys\n'
            'from pcdet.ops.roipoint_pool3d import roipoint_pool3d_utils\n'
            "bad = [m for m in sys.modules if m.endswith('_cuda') or m.startswith('spconv')]\n"
            'assert not bad, bad\n')
    subprocess.run([sys.executable, '-c', code], check=True, timeout=120)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device: CUDA RoIPointPool3d vs CPU not run')
def test_cuda_matches_cpu():
    points, features, boxes = (torch.from_numpy(a) for a in random_scene(np.random.default_rng(2), num_points=5000))
    pool = roipoint_pool3d_utils.RoIPointPool3d(num_sampled_points=512, pool_extra_width=[0.2, 0.2, 0.2])
    pooled, empty = pool(points, features, boxes)
    pooled_cuda, empty_cuda = pool(points.cuda(), features.cuda(), boxes.cuda())
    assert torch.equal(empty_cuda.cpu(), empty) and torch.equal(pooled_cuda.cpu(), pooled)
