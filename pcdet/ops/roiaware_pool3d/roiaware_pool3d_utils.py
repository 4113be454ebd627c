"""Which points lie inside which 3D boxes (OpenPCDet's ``roiaware_pool3d_utils`` points-in-boxes API).

Frames and shapes: points are LiDAR ``[x, y, z]``; boxes are LiDAR ``[x, y, z, dx, dy, dz, heading]`` with
``(x, y, z)`` the geometric centre, ``dx, dy, dz`` the full sizes and ``heading`` counter-clockwise from +x.

Boundary semantics (the same test as OpenPCDet v0.6's ``check_pt_in_box3d``; its CPU and CUDA ops differ only
in the margin):

- height: inside when ``|z - cz| <= dz / 2`` (inclusive, no margin);
- BEV: the point is rotated into the box frame, ``local = R(-heading) @ (p - c)``, and is inside when
  ``|local_x| < dx / 2 + margin`` and ``|local_y| < dy / 2 + margin`` (strict, with a margin);
- ``points_in_boxes_cpu`` uses OpenPCDet's CPU margin ``CPU_MARGIN = 1e-2`` (1 cm: a point up to 1 cm outside
  a box side counts as inside), ``points_in_boxes_gpu`` the CUDA margin ``GPU_MARGIN = 1e-5``.

The CPU paths compute in float64 (exact for float32 inputs), so they may differ from the float32 CUDA kernel
only for points within float32 rounding of a box face. Nothing here imports a compiled extension at module
import time: the CUDA extension ``roiaware_pool3d_cuda`` is loaded only when CUDA tensors arrive.
"""
import numpy as np
import torch

CPU_MARGIN = 1e-2
GPU_MARGIN = 1e-5

# Chunking bounds the temporaries of the vectorised path to about this many (box, point) pairs.
_PAIRS_PER_CHUNK = 1 << 22


def _as_tensor(x, name):
    """Return (tensor, was_numpy) for a numpy array or a torch tensor; anything else is an error."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x), True
    if isinstance(x, torch.Tensor):
        return x, False
    raise TypeError(f'roiaware_pool3d_utils.py: {name} must be a numpy array or a torch tensor, got {type(x)}')


def _check_shapes(points, boxes, batched):
    """Validate ``points (..., N, >=3)`` and ``boxes (..., M, >=7)``; extra columns (intensity, class) are ignored."""
    dims = 3 if batched else 2
    p_desc = '(B, N, 3)' if batched else '(N, 3)'
    b_desc = '(B, M, 7)' if batched else '(M, 7)'
    if points.dim() != dims or points.shape[-1] < 3:
        raise ValueError(f'roiaware_pool3d_utils.py: points must have shape {p_desc}, got {tuple(points.shape)}')
    if boxes.dim() != dims or boxes.shape[-1] < 7:
        raise ValueError(f'roiaware_pool3d_utils.py: boxes must have shape {b_desc} '
                         f'[x, y, z, dx, dy, dz, heading], got {tuple(boxes.shape)}')
    if batched and points.shape[0] != boxes.shape[0]:
        raise ValueError(f'roiaware_pool3d_utils.py: points and boxes batch sizes differ: '
                         f'{points.shape[0]} vs {boxes.shape[0]}')
    if not (points.is_floating_point() and boxes.is_floating_point()):
        raise TypeError(f'roiaware_pool3d_utils.py: points and boxes must be floating point, '
                        f'got {points.dtype} and {boxes.dtype}')


def _inside_mask(points, boxes, margin):
    """(M, N) bool: point n inside box m. ``points (N, 3)``, ``boxes (M, 7)``, both float64, same device."""
    shift = points[None, :, :2] - boxes[:, None, :2]              # (M, N, 2)
    cosa = torch.cos(boxes[:, 6:7])                                # (M, 1)
    sina = torch.sin(boxes[:, 6:7])
    # local = R(-heading) @ shift, as OpenPCDet's lidar_to_local_coords
    local_x = shift[..., 0] * cosa + shift[..., 1] * sina
    local_y = -shift[..., 0] * sina + shift[..., 1] * cosa
    in_z = (points[None, :, 2] - boxes[:, 2:3]).abs() <= boxes[:, 5:6] / 2
    in_x = local_x.abs() < boxes[:, 3:4] / 2 + margin
    in_y = local_y.abs() < boxes[:, 4:5] / 2 + margin
    return in_z & in_x & in_y


def _chunk_size(num_points):
    return max(1, _PAIRS_PER_CHUNK // max(1, num_points))


def points_in_boxes_cpu(points, boxes):
    """Membership matrix of points in boxes (OpenPCDet's CPU op, margin ``CPU_MARGIN``).

    Args:
        points: (N, 3) float LiDAR ``[x, y, z]`` (extra columns are ignored), numpy array or torch tensor.
        boxes: (M, 7) float LiDAR ``[x, y, z, dx, dy, dz, heading]`` (extra columns ignored), same kind.
    Returns:
        (M, N) int32, 1 where point n is inside box m, else 0; a numpy array for numpy input, else a tensor
        on the input device.
    """
    points_t, is_numpy = _as_tensor(points, 'points')
    boxes_t, _ = _as_tensor(boxes, 'boxes')
    _check_shapes(points_t, boxes_t, batched=False)
    pts = points_t[:, :3].to(torch.float64)
    bxs = boxes_t[:, :7].to(device=pts.device, dtype=torch.float64)
    out = torch.zeros((bxs.shape[0], pts.shape[0]), dtype=torch.int32, device=pts.device)
    step = _chunk_size(pts.shape[0])
    for start in range(0, bxs.shape[0], step):
        out[start:start + step] = _inside_mask(pts, bxs[start:start + step], CPU_MARGIN).to(torch.int32)
    return out.numpy() if is_numpy else out


def _first_box_index(points, boxes, margin):
    """(N,) int32 index of the first box (lowest index) containing each point, -1 if none. float64 inputs."""
    result = torch.full((points.shape[0],), -1, dtype=torch.int32, device=points.device)
    step = _chunk_size(points.shape[0])
    for start in range(0, boxes.shape[0], step):
        mask = _inside_mask(points, boxes[start:start + step], margin)   # (m, N)
        hit = mask.any(dim=0)
        # argmax returns the first maximal entry, i.e. the lowest box index, as the CUDA kernel's early break
        first = mask.to(torch.uint8).argmax(dim=0).to(torch.int32) + start
        update = hit & (result < 0)
        result = torch.where(update, first, result)
    return result


def points_in_boxes_gpu(points, boxes):
    """Index of the box containing each point (OpenPCDet's ``points_in_boxes_gpu``, margin ``GPU_MARGIN``).

    Works on any device: CUDA tensors use the compiled ``roiaware_pool3d_cuda`` kernel (float32), CPU tensors a
    chunked vectorised torch path (float64). When boxes overlap, the lowest box index wins (as the kernel).

    Args:
        points: (B, N, 3) float LiDAR ``[x, y, z]`` tensor (extra columns ignored).
        boxes: (B, M, 7) float LiDAR ``[x, y, z, dx, dy, dz, heading]`` tensor (extra columns, e.g. the class
            column of ``gt_boxes``, ignored).
    Returns:
        (B, N) int32 tensor on the input device: box index in ``[0, M)`` or -1.
    """
    if not (isinstance(points, torch.Tensor) and isinstance(boxes, torch.Tensor)):
        raise TypeError('roiaware_pool3d_utils.py: points_in_boxes_gpu takes torch tensors '
                        f'(got {type(points)}, {type(boxes)}); use points_in_boxes_cpu for numpy arrays')
    _check_shapes(points, boxes, batched=True)
    if boxes.device != points.device:
        raise ValueError(f'roiaware_pool3d_utils.py: points on {points.device} but boxes on {boxes.device}')
    if points.is_cuda:
        return _points_in_boxes_cuda(points, boxes)
    pts = points[..., :3].to(torch.float64)
    bxs = boxes[..., :7].to(torch.float64)
    out = torch.full(pts.shape[:2], -1, dtype=torch.int32)
    for b in range(pts.shape[0]):
        out[b] = _first_box_index(pts[b], bxs[b], GPU_MARGIN)
    return out


def _points_in_boxes_cuda(points, boxes):
    """CUDA path: the compiled kernel of ``src/points_in_boxes_kernel.cu`` (float32, raw pointers + stream)."""
    from pcdet.ops.build_utils import load_cuda_ext
    ext = load_cuda_ext('roiaware_pool3d')
    pts = points[..., :3].float().contiguous()
    bxs = boxes[..., :7].float().contiguous()
    out = torch.full(pts.shape[:2], -1, dtype=torch.int32, device=pts.device)
    ext.points_in_boxes_gpu(bxs, pts, out)
    return out


def points_in_boxes_batch_cpu(points, boxes):
    """(B, N, 3), (B, M, 7) tensors -> (B, M, N) int32 membership (the CPU op applied per sample)."""
    return torch.stack([points_in_boxes_cpu(points[b], boxes[b]) for b in range(points.shape[0])], dim=0)
