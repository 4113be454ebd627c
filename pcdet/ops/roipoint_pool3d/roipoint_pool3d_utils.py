"""Point pooling in 3D RoIs (OpenPCDet's ``roipoint_pool3d_utils``), on CPU and CUDA tensors.

``RoIPointPool3d`` gathers, for every box, the coordinates and features of the points inside the box enlarged by
``pool_extra_width`` (OpenPCDet v0.6 semantics, its ``roipoint_pool3d_kernel.cu``):
- membership is OpenPCDet's ``check_pt_in_box3d`` with the CUDA margin 1e-5, i.e. the project's one points-in-box
  test ``roiaware_pool3d_utils`` with ``GPU_MARGIN`` (float64 on both devices);
- a box takes the first ``num_sampled_points`` inside points in index order; fewer are repeated cyclically
  (slot s holds inside point ``s % count``);
- a box without any point is flagged in ``pooled_empty_flag`` and its pooled features are zero.
The per-box selection is a numba kernel on CPU and ``src/roipoint_pool3d_kernel.cu`` on CUDA (the extension
``roipoint_pool3d_cuda`` is loaded on first use, never at import). No gradient (as OpenPCDet: call it under
``torch.no_grad()``).
"""
import numba
import numpy as np
import torch
import torch.nn as nn
from torch.autograd import Function

from ...utils import box_utils
from ..roiaware_pool3d import roiaware_pool3d_utils as roiaware

_PAIRS_PER_CHUNK = 1 << 18


class RoIPointPool3d(nn.Module):
    def __init__(self, num_sampled_points=512, pool_extra_width=1.0):
        """
        Args:
            num_sampled_points: points pooled per box.
            pool_extra_width: float or (3,) added to the box sizes dx, dy, dz (the full sizes, so half on each
                side) before the membership test.
        """
        super().__init__()
        self.num_sampled_points = num_sampled_points
        self.pool_extra_width = pool_extra_width

    def forward(self, points, point_features, boxes3d):
        """
        Args:
            points: (B, N, 3) LiDAR ``[x, y, z]``.
            point_features: (B, N, C) float32/float64.
            boxes3d: (B, M, 7) LiDAR ``[x, y, z, dx, dy, dz, heading]``, geometric centre.
        Returns:
            pooled_features: (B, M, num_sampled_points, 3 + C), xyz then features, point_features' dtype.
            pooled_empty_flag: (B, M) int32, 1 for a box without points.
        """
        return RoIPointPool3dFunction.apply(points, point_features, boxes3d, self.pool_extra_width,
                                            self.num_sampled_points)


class RoIPointPool3dFunction(Function):
    @staticmethod
    def forward(ctx, points, point_features, boxes3d, pool_extra_width, num_sampled_points=512):
        """Arguments and returns as ``RoIPointPool3d.forward``."""
        _check_inputs(points, point_features, boxes3d, num_sampled_points)
        batch, num_boxes = boxes3d.shape[:2]
        extra = [float(pool_extra_width)] * 3 if np.isscalar(pool_extra_width) else list(pool_extra_width)
        boxes = box_utils.enlarge_box3d(boxes3d[..., :7].reshape(-1, 7).detach(), extra).view(batch, num_boxes, 7)
        mask = torch.zeros((batch, num_boxes, points.shape[1]), dtype=torch.bool, device=points.device)
        for b in range(batch):
            _membership(points[b].detach(), boxes[b], mask[b])
        pts_idx, empty_flag = _select_points(mask, int(num_sampled_points))
        source = torch.cat([points.detach().to(point_features.dtype), point_features.detach()], dim=-1)
        batch_idx = torch.arange(batch, device=points.device).view(-1, 1, 1)
        pooled_features = source[batch_idx, pts_idx.long()]          # (B, M, S, 3 + C)
        pooled_features[empty_flag > 0] = 0
        return pooled_features, empty_flag

    @staticmethod
    def backward(ctx, grad_features, grad_flag):
        raise NotImplementedError('roipoint_pool3d_utils.py: RoIPointPool3d has no gradient (as OpenPCDet); '
                                  'call it under torch.no_grad()')


def _check_inputs(points, point_features, boxes3d, num_sampled_points):
    if points.dim() != 3 or points.shape[2] != 3:
        raise ValueError(f'roipoint_pool3d_utils.py: points must be (B, N, 3), got {tuple(points.shape)}')
    if point_features.dim() != 3 or point_features.shape[:2] != points.shape[:2]:
        raise ValueError(f'roipoint_pool3d_utils.py: point_features must be (B, N, C) for points '
                         f'{tuple(points.shape)}, got {tuple(point_features.shape)}')
    if boxes3d.dim() != 3 or boxes3d.shape[2] < 7 or boxes3d.shape[0] != points.shape[0]:
        raise ValueError(f'roipoint_pool3d_utils.py: boxes3d must be (B, M, 7) [x, y, z, dx, dy, dz, heading] for '
                         f'points {tuple(points.shape)}, got {tuple(boxes3d.shape)}')
    if point_features.dtype not in (torch.float32, torch.float64) or not points.is_floating_point() \
            or not boxes3d.is_floating_point():
        raise TypeError(f'roipoint_pool3d_utils.py: points, point_features, boxes3d must be floating point '
                        f'(features float32/float64), got {points.dtype}, {point_features.dtype}, {boxes3d.dtype}')
    if len({points.device, point_features.device, boxes3d.device}) > 1:
        raise ValueError(f'roipoint_pool3d_utils.py: points on {points.device}, point_features on '
                         f'{point_features.device}, boxes3d on {boxes3d.device}: need one device')
    if isinstance(num_sampled_points, bool) or not isinstance(num_sampled_points, (int, np.integer)) \
            or num_sampled_points < 1:
        raise ValueError(f'roipoint_pool3d_utils.py: num_sampled_points must be a positive int, '
                         f'got {num_sampled_points!r}')


def _membership(points, boxes, out):
    """out (M, N) bool = point n inside box m: ``roiaware_pool3d_utils``' test with the CUDA margin, in float64.

    ``points (N, 3)``, ``boxes (M, 7)``. Boxes go in chunks of about ``_PAIRS_PER_CHUNK`` (box, point) pairs, whose
    temporaries stay in cache: 3x faster than one (128, 16384) pass on CPU.
    """
    pts = points.to(torch.float64)
    bxs = boxes.to(torch.float64)
    step = max(1, _PAIRS_PER_CHUNK // max(1, pts.shape[0]))
    for start in range(0, bxs.shape[0], step):
        out[start:start + step] = roiaware._inside_mask(pts, bxs[start:start + step], roiaware.GPU_MARGIN)


def _select_points(mask, num_sampled):
    """(B, M, N) bool membership -> pts_idx (B, M, num_sampled) int32, empty_flag (B, M) int32 (see module doc)."""
    batch, num_boxes, _ = mask.shape
    pts_idx = torch.zeros((batch, num_boxes, num_sampled), dtype=torch.int32, device=mask.device)
    empty_flag = torch.zeros((batch, num_boxes), dtype=torch.int32, device=mask.device)
    if batch * num_boxes == 0:
        return pts_idx, empty_flag
    mask = mask.contiguous()
    if mask.is_cuda:
        from ..build_utils import load_cuda_ext
        load_cuda_ext('roipoint_pool3d').select_points(mask, pts_idx, empty_flag)
    else:
        _select_points_kernel(mask.numpy(), pts_idx.numpy(), empty_flag.numpy())
    return pts_idx, empty_flag


@numba.njit(parallel=True, cache=True, nogil=True)
def _select_points_kernel(mask, pts_idx, empty_flag):
    """CPU selection: mask (B, M, N) bool; pts_idx (B, M, S) int32 and empty_flag (B, M) int32 (zeroed) outputs."""
    num_boxes = mask.shape[1]
    num_sampled = pts_idx.shape[2]
    for task in numba.prange(mask.shape[0] * num_boxes):
        b = task // num_boxes
        m = task % num_boxes
        row = mask[b, m]
        out = pts_idx[b, m]
        cnt = 0
        for k in range(row.shape[0]):
            if row[k]:
                out[cnt] = k
                cnt += 1
                if cnt == num_sampled:
                    break
        if cnt == 0:
            empty_flag[b, m] = 1
            continue
        for s in range(cnt, num_sampled):
            out[s] = out[s % cnt]
