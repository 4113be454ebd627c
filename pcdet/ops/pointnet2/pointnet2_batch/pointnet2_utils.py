"""Batched PointNet++ ops (OpenPCDet's ``pointnet2_batch.pointnet2_utils`` API) on CPU and CUDA tensors.

Every op takes tensors on any device: CPU tensors run the numba kernels of ``pointnet2_cpu.py``, CUDA tensors the
compiled extension ``pcdet.ops.pointnet2.pointnet2_batch.pointnet2_batch_cuda`` (``src/``), loaded on first use,
never at import. Layouts are OpenPCDet's: coordinates ``(B, N, 3)``, features channel-first ``(B, C, N)``, indices
int32.

Semantics (OpenPCDet v0.6's kernels; both devices give the same indices):
- ``furthest_point_sample``: starts at index 0; each step takes the point whose squared distance to the chosen set
  (initialised to 1e10) is largest; among equal maxima the smallest index (OpenPCDet's CUDA reduction breaks such
  exact ties by thread order instead; the result is the same whenever the maximum is unique).
- ``ball_query``: the first ``nsample`` points in index order with squared distance strictly below radius^2; when
  fewer are found the remaining slots repeat the first found index; a ball with none holds zeros.
- ``three_nn``: the three nearest known points, ascending, equal distances by smaller index; returns the L2
  distances (the square root of the squared ones). With fewer than three known points the missing slots hold
  index 0 and distance inf.
- ``gather_operation``, ``grouping_operation``, ``three_interpolate``: gathers and a weighted sum of three, with
  gradients for the features (scatter-add); the index ops have no gradient.
The index ops compute in float32, as OpenPCDet's kernels (float64 coordinates are rounded to float32 first);
gathers and interpolation keep the feature dtype (float32 or float64). CPU indices are range-checked (an
out-of-range index would read or write outside the array); on CUDA they are not (that would synchronise).
"""
import numpy as np
import torch
import torch.nn as nn
from torch.autograd import Function
from torch.autograd.function import once_differentiable

from . import pointnet2_cpu

_FLOATS = (torch.float32, torch.float64)


def _cuda_ext():
    """The compiled extension, imported on first use with a clear error when it is not built."""
    from ...build_utils import load_cuda_ext
    return load_cuda_ext('pointnet2.pointnet2_batch')


def _check_xyz(xyz, name):
    if not isinstance(xyz, torch.Tensor) or xyz.dim() != 3 or xyz.shape[2] != 3:
        shape = tuple(xyz.shape) if isinstance(xyz, torch.Tensor) else type(xyz).__name__
        raise ValueError(f'pointnet2_utils.py: {name} must be a (B, N, 3) tensor, got {shape}')
    if not xyz.is_floating_point():
        raise TypeError(f'pointnet2_utils.py: {name} must be floating point, got {xyz.dtype}')


def _coords32(xyz):
    """Detached contiguous float32 coordinates (the precision of the index kernels)."""
    return xyz.detach().to(torch.float32).contiguous()


def _check_same_device(*pairs):
    devices = {t.device for _, t in pairs}
    if len(devices) > 1:
        raise ValueError('pointnet2_utils.py: inputs on different devices: '
                         + ', '.join(f'{name} on {t.device}' for name, t in pairs))


def _check_features(features, name='features'):
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f'pointnet2_utils.py: {name} must be a (B, C, N) tensor, got {shape}')
    if features.dtype not in _FLOATS:
        raise TypeError(f'pointnet2_utils.py: {name} must be float32 or float64, got {features.dtype}')


def _index32(idx, name, batch, num_points, device):
    """idx as contiguous int32 on ``device``; on CPU every entry must lie in [0, num_points)."""
    if not isinstance(idx, torch.Tensor) or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise TypeError(f'pointnet2_utils.py: {name} must be an integer tensor, got '
                        f'{idx.dtype if isinstance(idx, torch.Tensor) else type(idx).__name__}')
    if idx.shape[0] != batch:
        raise ValueError(f'pointnet2_utils.py: {name} has batch size {idx.shape[0]}, the features {batch}')
    if idx.device != device:
        raise ValueError(f'pointnet2_utils.py: {name} on {idx.device} but the features on {device}')
    idx = idx.detach().to(torch.int32).contiguous()
    if not idx.is_cuda and idx.numel() > 0 and (int(idx.min()) < 0 or int(idx.max()) >= num_points):
        raise ValueError(f'pointnet2_utils.py: {name} holds indices in [{int(idx.min())}, {int(idx.max())}] '
                         f'but there are {num_points} points')
    return idx


def _gather(features, idx):
    """features (B, C, N), idx (B, K) int32 -> (B, C, K) (gather and grouping forward)."""
    features = features.detach().contiguous()
    out = features.new_empty((features.shape[0], features.shape[1], idx.shape[1]))
    if out.numel() == 0:
        return out
    if features.is_cuda:
        _cuda_ext().gather_points(features, idx, out)
    else:
        pointnet2_cpu.gather_points_kernel(features.numpy(), idx.numpy(), out.numpy(), False)
    return out


def _scatter_add(grad_out, idx, num_points):
    """grad_out (B, C, K), idx (B, K) int32 -> (B, C, N): the backward of ``_gather``."""
    grad_out = grad_out.contiguous()
    grad_features = grad_out.new_zeros((grad_out.shape[0], grad_out.shape[1], num_points))
    if grad_out.numel() == 0:
        return grad_features
    if grad_out.is_cuda:
        _cuda_ext().gather_points_grad(grad_out, idx, grad_features)
    else:
        pointnet2_cpu.gather_points_kernel(grad_out.numpy(), idx.numpy(), grad_features.numpy(), True)
    return grad_features


class FurthestPointSampling(Function):
    @staticmethod
    def forward(ctx, xyz, npoint):
        """
        Args:
            xyz: (B, N, 3) float tensor.
            npoint: int, samples per batch element (N >= 1 when npoint >= 1).
        Returns:
            (B, npoint) int32 indices into N, the first one 0.
        """
        _check_xyz(xyz, 'xyz')
        batch, num_points, _ = xyz.shape
        if isinstance(npoint, bool) or not isinstance(npoint, (int, np.integer)) or npoint < 0:
            raise ValueError(f'pointnet2_utils.py: npoint must be a non-negative int, got {npoint!r}')
        if npoint > 0 and num_points == 0:
            raise ValueError('pointnet2_utils.py: furthest_point_sample needs at least one point (N = 0)')
        pts = _coords32(xyz)
        out = torch.zeros((batch, int(npoint)), dtype=torch.int32, device=xyz.device)
        if out.numel() > 0:
            if pts.is_cuda:
                temp = torch.full((batch, num_points), float(pointnet2_cpu.FPS_INIT), dtype=torch.float32,
                                  device=pts.device)
                _cuda_ext().furthest_point_sampling(pts, temp, out)
            else:
                pointnet2_cpu.furthest_point_sample_kernel(pointnet2_cpu.pad_points(pts.numpy()), int(npoint),
                                                           out.numpy())
        ctx.mark_non_differentiable(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return None, None


furthest_point_sample = FurthestPointSampling.apply


class GatherOperation(Function):
    @staticmethod
    def forward(ctx, features, idx):
        """
        Args:
            features: (B, C, N) float32/float64 tensor.
            idx: (B, npoint) integer tensor of indices into N.
        Returns:
            (B, C, npoint): ``out[b, c, i] = features[b, c, idx[b, i]]``.
        """
        _check_features(features)
        if idx.dim() != 2:
            raise ValueError(f'pointnet2_utils.py: idx must be (B, npoint), got {tuple(idx.shape)}')
        idx = _index32(idx, 'idx', features.shape[0], features.shape[2], features.device)
        ctx.save_for_backward(idx)
        ctx.num_points = features.shape[2]
        return _gather(features, idx)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (idx,) = ctx.saved_tensors
        return _scatter_add(grad_out, idx, ctx.num_points), None


gather_operation = GatherOperation.apply


class ThreeNN(Function):
    @staticmethod
    def forward(ctx, unknown, known):
        """
        Args:
            unknown: (B, n, 3) float tensor of query points.
            known: (B, m, 3) float tensor, m >= 1.
        Returns:
            dist: (B, n, 3) L2 distances to the three nearest known points, ascending (unknown's dtype).
            idx: (B, n, 3) int32 indices into m.
        """
        _check_xyz(unknown, 'unknown')
        _check_xyz(known, 'known')
        _check_same_device(('unknown', unknown), ('known', known))
        if unknown.shape[0] != known.shape[0]:
            raise ValueError(f'pointnet2_utils.py: unknown {tuple(unknown.shape)} and known {tuple(known.shape)} '
                             'differ in batch size')
        if known.shape[1] == 0:
            raise ValueError('pointnet2_utils.py: three_nn needs at least one known point (m = 0)')
        query, ref = _coords32(unknown), _coords32(known)
        batch, num_query, _ = query.shape
        dist2 = torch.empty((batch, num_query, 3), dtype=torch.float32, device=query.device)
        idx = torch.empty((batch, num_query, 3), dtype=torch.int32, device=query.device)
        if dist2.numel() > 0:
            if query.is_cuda:
                _cuda_ext().three_nn(query, ref, dist2, idx)
            else:
                pointnet2_cpu.three_nn_kernel(query.numpy(), pointnet2_cpu.channel_major(ref.numpy()), dist2.numpy(),
                                              idx.numpy())
        dist = torch.sqrt(dist2).to(unknown.dtype)
        ctx.mark_non_differentiable(dist, idx)
        return dist, idx

    @staticmethod
    def backward(ctx, grad_dist=None, grad_idx=None):
        return None, None


three_nn = ThreeNN.apply


class ThreeInterpolate(Function):
    @staticmethod
    def forward(ctx, features, idx, weight):
        """
        Args:
            features: (B, C, m) float32/float64 tensor to interpolate from.
            idx: (B, n, 3) integer tensor of indices into m (``three_nn``'s).
            weight: (B, n, 3) float tensor (cast to the features' dtype).
        Returns:
            (B, C, n): ``out[b, c, i] = sum_j weight[b, i, j] * features[b, c, idx[b, i, j]]``.
        """
        _check_features(features)
        if idx.dim() != 3 or idx.shape[2] != 3 or tuple(weight.shape) != tuple(idx.shape):
            raise ValueError(f'pointnet2_utils.py: idx and weight must both be (B, n, 3), got {tuple(idx.shape)} '
                             f'and {tuple(weight.shape)}')
        _check_same_device(('features', features), ('weight', weight))
        idx = _index32(idx, 'idx', features.shape[0], features.shape[2], features.device)
        weight = weight.detach().to(features.dtype).contiguous()
        features = features.detach().contiguous()
        out = features.new_empty((features.shape[0], features.shape[1], idx.shape[1]))
        if out.numel() > 0:
            if features.is_cuda:
                _cuda_ext().three_interpolate(features, idx, weight, out)
            else:
                pointnet2_cpu.three_interpolate_kernel(features.numpy(), idx.numpy(), weight.numpy(), out.numpy(),
                                                       False)
        ctx.save_for_backward(idx, weight)
        ctx.num_known = features.shape[2]
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        idx, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_features = grad_out.new_zeros((grad_out.shape[0], grad_out.shape[1], ctx.num_known))
        if grad_out.numel() > 0:
            if grad_out.is_cuda:
                _cuda_ext().three_interpolate_grad(grad_out, idx, weight, grad_features)
            else:
                pointnet2_cpu.three_interpolate_kernel(grad_out.numpy(), idx.numpy(), weight.numpy(),
                                                       grad_features.numpy(), True)
        return grad_features, None, None


three_interpolate = ThreeInterpolate.apply


class GroupingOperation(Function):
    @staticmethod
    def forward(ctx, features, idx):
        """
        Args:
            features: (B, C, N) float32/float64 tensor.
            idx: (B, npoint, nsample) integer tensor of indices into N.
        Returns:
            (B, C, npoint, nsample): ``out[b, c, p, s] = features[b, c, idx[b, p, s]]``.
        """
        _check_features(features)
        if idx.dim() != 3:
            raise ValueError(f'pointnet2_utils.py: idx must be (B, npoint, nsample), got {tuple(idx.shape)}')
        batch, npoint, nsample = idx.shape
        flat = _index32(idx, 'idx', features.shape[0], features.shape[2], features.device).view(batch, -1)
        ctx.save_for_backward(flat)
        ctx.num_points = features.shape[2]
        return _gather(features, flat).view(batch, features.shape[1], npoint, nsample)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (flat,) = ctx.saved_tensors
        grad = grad_out.reshape(grad_out.shape[0], grad_out.shape[1], -1)
        return _scatter_add(grad, flat, ctx.num_points), None


grouping_operation = GroupingOperation.apply


class BallQuery(Function):
    @staticmethod
    def forward(ctx, radius, nsample, xyz, new_xyz):
        """
        Args:
            radius: float, ball radius (a point is inside when its squared distance < radius^2).
            nsample: int >= 1, slots per ball.
            xyz: (B, N, 3) float tensor of the points, N >= 1.
            new_xyz: (B, npoint, 3) float tensor of the ball centres.
        Returns:
            (B, npoint, nsample) int32 indices into N (see the module docstring for the fill rule).
        """
        _check_xyz(xyz, 'xyz')
        _check_xyz(new_xyz, 'new_xyz')
        _check_same_device(('xyz', xyz), ('new_xyz', new_xyz))
        if xyz.shape[0] != new_xyz.shape[0]:
            raise ValueError(f'pointnet2_utils.py: xyz {tuple(xyz.shape)} and new_xyz {tuple(new_xyz.shape)} '
                             'differ in batch size')
        if isinstance(nsample, bool) or not isinstance(nsample, (int, np.integer)) or nsample < 1:
            raise ValueError(f'pointnet2_utils.py: nsample must be a positive int, got {nsample!r}')
        if xyz.shape[1] == 0:
            raise ValueError('pointnet2_utils.py: ball_query needs at least one point (N = 0)')
        pts, centres = _coords32(xyz), _coords32(new_xyz)
        idx = torch.zeros((pts.shape[0], centres.shape[1], int(nsample)), dtype=torch.int32, device=pts.device)
        if idx.numel() > 0:
            if pts.is_cuda:
                _cuda_ext().ball_query(centres, pts, float(radius), idx)
            else:
                pointnet2_cpu.ball_query_kernel(pointnet2_cpu.channel_major(pts.numpy()), centres.numpy(),
                                                np.float32(radius), int(nsample), idx.numpy())
        ctx.mark_non_differentiable(idx)
        return idx

    @staticmethod
    def backward(ctx, grad_out):
        return None, None, None, None


ball_query = BallQuery.apply


class QueryAndGroup(nn.Module):
    def __init__(self, radius, nsample, use_xyz=True):
        """
        Args:
            radius: float, ball radius.
            nsample: int, points gathered per ball.
            use_xyz: whether the relative coordinates are concatenated before the features.
        """
        super().__init__()
        self.radius, self.nsample, self.use_xyz = radius, nsample, use_xyz

    def forward(self, xyz, new_xyz, features=None):
        """
        Args:
            xyz: (B, N, 3) point coordinates.
            new_xyz: (B, npoint, 3) ball centres.
            features: (B, C, N) point features or None.
        Returns:
            (B, 3 + C, npoint, nsample) with use_xyz (coordinates relative to the centre first), else
            (B, C, npoint, nsample).
        """
        idx = ball_query(self.radius, self.nsample, xyz, new_xyz)
        grouped_xyz = grouping_operation(xyz.transpose(1, 2).contiguous(), idx)       # (B, 3, npoint, nsample)
        grouped_xyz = grouped_xyz - new_xyz.transpose(1, 2).unsqueeze(-1)
        if features is None:
            if not self.use_xyz:
                raise ValueError('pointnet2_utils.py: QueryAndGroup without features needs use_xyz=True')
            return grouped_xyz
        grouped_features = grouping_operation(features, idx)
        if self.use_xyz:
            return torch.cat([grouped_xyz, grouped_features], dim=1)
        return grouped_features


class GroupAll(nn.Module):
    def __init__(self, use_xyz=True):
        super().__init__()
        self.use_xyz = use_xyz

    def forward(self, xyz, new_xyz, features=None):
        """
        Args:
            xyz: (B, N, 3) point coordinates (absolute: nothing is subtracted).
            new_xyz: ignored.
            features: (B, C, N) point features or None.
        Returns:
            (B, 3 + C, 1, N) with use_xyz, else (B, C, 1, N); (B, 3, 1, N) without features.
        """
        grouped_xyz = xyz.transpose(1, 2).unsqueeze(2)
        if features is None:
            return grouped_xyz
        grouped_features = features.unsqueeze(2)
        if self.use_xyz:
            return torch.cat([grouped_xyz, grouped_features], dim=1)
        return grouped_features
