"""points_in_boxes_cpu / points_in_boxes_gpu against a brute-force per-box loop, on random rotated boxes and on
the real KITTI sample labels; boundary semantics (OpenPCDet's check_pt_in_box3d) pinned down explicitly."""
import math

import numpy as np
import pytest
import torch

from pcdet.ops.roiaware_pool3d import roiaware_pool3d_utils as pib


def brute_force_membership(points, boxes, margin):
    """(M, N) int32 by an explicit loop over boxes: project the offset onto the box's heading axes."""
    points = np.asarray(points, dtype=np.float64)
    out = np.zeros((len(boxes), len(points)), dtype=np.int32)
    for m, (cx, cy, cz, dx, dy, dz, heading) in enumerate(np.asarray(boxes, dtype=np.float64)[:, :7]):
        axis_u = np.array([math.cos(heading), math.sin(heading)])    # box +x direction in LiDAR frame
        axis_v = np.array([-math.sin(heading), math.cos(heading)])   # box +y direction
        offset = points[:, :2] - np.array([cx, cy])
        along_u = offset @ axis_u
        along_v = offset @ axis_v
        inside = (np.abs(points[:, 2] - cz) <= dz / 2) & (np.abs(along_u) < dx / 2 + margin) \
            & (np.abs(along_v) < dy / 2 + margin)
        out[m] = inside
    return out


def first_index(membership):
    """(N,) lowest box index per point from an (M, N) membership matrix, -1 where none."""
    idx = np.full(membership.shape[1], -1, dtype=np.int32)
    for m in range(membership.shape[0] - 1, -1, -1):   # later assignments (lower m) overwrite
        idx[membership[m] == 1] = m
    return idx


def random_scene(rng, num_points=3000, num_boxes=25):
    points = rng.uniform([-20, -20, -3], [20, 20, 3], size=(num_points, 3)).astype(np.float32)
    centres = rng.uniform([-18, -18, -2], [18, 18, 2], size=(num_boxes, 3))
    sizes = rng.uniform([0.5, 0.5, 0.5], [8, 5, 4], size=(num_boxes, 3))
    heading = rng.uniform(-np.pi, np.pi, size=(num_boxes, 1))
    boxes = np.concatenate([centres, sizes, heading], axis=1).astype(np.float32)
    return points, boxes


def test_cpu_matches_brute_force_on_random_rotated_boxes():
    rng = np.random.default_rng(0)
    points, boxes = random_scene(rng)
    got = pib.points_in_boxes_cpu(points, boxes)
    assert isinstance(got, np.ndarray) and got.dtype == np.int32 and got.shape == (len(boxes), len(points))
    expected = brute_force_membership(points, boxes, pib.CPU_MARGIN)
    np.testing.assert_array_equal(got, expected)
    assert expected.sum() > 100   # the scene is not trivially empty

    got_t = pib.points_in_boxes_cpu(torch.from_numpy(points), torch.from_numpy(boxes))
    assert isinstance(got_t, torch.Tensor) and got_t.dtype == torch.int32
    np.testing.assert_array_equal(got_t.numpy(), expected)


def test_gpu_api_on_cpu_tensors_matches_brute_force_batched():
    rng = np.random.default_rng(1)
    scenes = [random_scene(rng, num_points=2000, num_boxes=30) for _ in range(2)]
    points = torch.from_numpy(np.stack([s[0] for s in scenes]))
    boxes = torch.from_numpy(np.stack([s[1] for s in scenes]))
    got = pib.points_in_boxes_gpu(points, boxes)
    assert got.shape == (2, 2000) and got.dtype == torch.int32
    for b in range(2):
        expected = first_index(brute_force_membership(scenes[b][0], scenes[b][1], pib.GPU_MARGIN))
        np.testing.assert_array_equal(got[b].numpy(), expected)
    # overlapping boxes exist in these scenes, so the lowest-index rule is exercised
    membership = brute_force_membership(scenes[0][0], scenes[0][1], pib.GPU_MARGIN)
    assert (membership.sum(0) > 1).any()


def test_boundary_semantics():
    # axis-aligned box at the origin, size 2 x 4 x 6 (all halves exactly representable)
    box = np.array([[0.0, 0.0, 0.0, 2.0, 4.0, 6.0, 0.0]], dtype=np.float32)
    pts = np.array([
        [1.0, 0.0, 0.0],       # on the x face: inside (strict < half + margin)
        [1.005, 0.0, 0.0],     # 5 mm outside x face: inside on CPU (1 cm margin), outside on GPU (1e-5)
        [1.02, 0.0, 0.0],      # 2 cm outside: outside for both
        [0.0, 0.0, 3.0],       # on the top face: inside (z test is inclusive)
        [0.0, 0.0, -3.0],      # on the bottom face: inside
        [0.0, 0.0, 3.001],     # above: outside (no z margin)
        [0.0, 2.0, 0.0],       # on the y face: inside
    ], dtype=np.float32)
    cpu = pib.points_in_boxes_cpu(pts, box)[0]
    np.testing.assert_array_equal(cpu, [1, 1, 0, 1, 1, 0, 1])
    gpu = pib.points_in_boxes_gpu(torch.from_numpy(pts)[None], torch.from_numpy(box)[None])[0]
    np.testing.assert_array_equal(gpu.numpy(), [0, -1, -1, 0, 0, -1, 0])


def test_heading_rotates_counter_clockwise():
    # a long thin box along +y (heading pi/2) contains (0, 3, 0) but not (3, 0, 0)
    box = np.array([[0, 0, 0, 8.0, 1.0, 1.0, np.pi / 2]], dtype=np.float32)
    pts = np.array([[0, 3.0, 0], [3.0, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(pib.points_in_boxes_cpu(pts, box)[0], [1, 0])


def test_extra_columns_ignored_and_empty_inputs():
    rng = np.random.default_rng(2)
    points, boxes = random_scene(rng, 500, 5)
    with_intensity = np.concatenate([points, rng.random((500, 1), dtype=np.float32)], axis=1)
    with_class = np.concatenate([boxes, np.ones((5, 1), np.float32)], axis=1)
    np.testing.assert_array_equal(pib.points_in_boxes_cpu(with_intensity, with_class),
                                  pib.points_in_boxes_cpu(points, boxes))
    assert pib.points_in_boxes_cpu(points, np.zeros((0, 7), np.float32)).shape == (0, 500)
    out = pib.points_in_boxes_gpu(torch.from_numpy(points)[None], torch.zeros((1, 0, 7)))
    assert out.shape == (1, 500) and (out == -1).all()


def test_bad_input_raises_clearly():
    with pytest.raises(ValueError, match='boxes must have shape'):
        pib.points_in_boxes_cpu(np.zeros((4, 3), np.float32), np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match='points must have shape'):
        pib.points_in_boxes_gpu(torch.zeros(4, 3), torch.zeros(1, 2, 7))
    with pytest.raises(ValueError, match='batch sizes differ'):
        pib.points_in_boxes_gpu(torch.zeros(2, 4, 3), torch.zeros(1, 2, 7))
    with pytest.raises(TypeError, match='numpy array or a torch tensor'):
        pib.points_in_boxes_cpu([[0, 0, 0]], np.zeros((1, 7), np.float32))


# ---- real KITTI frames: labels converted to LiDAR boxes with an independent minimal calib parser ----

def _read_calib(path):
    values = {}
    for line in path.read_text().splitlines():
        if ':' in line:
            key, rest = line.split(':', 1)
            values[key.strip()] = np.array([float(v) for v in rest.split()])
    r0 = np.eye(4)
    r0[:3, :3] = values['R0_rect'].reshape(3, 3)
    tr = np.eye(4)
    tr[:3, :4] = values['Tr_velo_to_cam'].reshape(3, 4)
    return np.linalg.inv(r0 @ tr)   # rect camera -> LiDAR


def _read_lidar_boxes(label_path, rect_to_lidar):
    boxes = []
    for line in label_path.read_text().splitlines():
        f = line.split()
        if not f or f[0] == 'DontCare':
            continue
        h, w, l_, x, y, z, ry = (float(v) for v in f[8:15])
        # KITTI camera box: bottom centre, y down -> geometric centre is h/2 above (smaller y)
        centre = rect_to_lidar @ np.array([x, y - h / 2, z, 1.0])
        boxes.append([centre[0], centre[1], centre[2], l_, w, h, -(ry + np.pi / 2)])
    return np.array(boxes, dtype=np.float32).reshape(-1, 7)


def test_real_kitti_frames(kitti_samples_dir):
    training = kitti_samples_dir / 'training'
    frame_ids = sorted(p.stem for p in (training / 'label_2').glob('*.txt'))[:4]
    assert frame_ids
    total_inside = 0
    for frame_id in frame_ids:
        rect_to_lidar = _read_calib(training / 'calib' / f'{frame_id}.txt')
        boxes = _read_lidar_boxes(training / 'label_2' / f'{frame_id}.txt', rect_to_lidar)
        points = np.fromfile(training / 'velodyne' / f'{frame_id}.bin', dtype=np.float32).reshape(-1, 4)
        membership = pib.points_in_boxes_cpu(points[:, :3], boxes)
        np.testing.assert_array_equal(membership, brute_force_membership(points, boxes, pib.CPU_MARGIN))
        idx = pib.points_in_boxes_gpu(torch.from_numpy(points[None, :, :3]), torch.from_numpy(boxes[None]))[0]
        np.testing.assert_array_equal(idx.numpy(), first_index(brute_force_membership(points, boxes, pib.GPU_MARGIN)))
        total_inside += int(membership.sum())
    # labelled objects of real scans contain LiDAR returns (a wrong frame conversion would give ~0)
    assert total_inside > 500


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device: CUDA points_in_boxes not run')
def test_cuda_matches_cpu():
    rng = np.random.default_rng(3)
    points, boxes = random_scene(rng, 5000, 40)
    pts = torch.from_numpy(points)[None]
    bxs = torch.from_numpy(boxes)[None]
    cpu = pib.points_in_boxes_gpu(pts, bxs)
    gpu = pib.points_in_boxes_gpu(pts.to('cuda'), bxs.to('cuda')).cpu()
    # float32 kernel vs float64 CPU path: allow only a handful of face-rounding disagreements
    assert (cpu != gpu).sum().item() <= 2
