"""PointNet++ set-abstraction and feature-propagation modules (OpenPCDet's ``pointnet2_batch.pointnet2_modules``).

Submodule names and layers are OpenPCDet's, so state_dicts load unchanged: ``mlps.<scale>`` (SA) and ``mlp`` (FP)
are ``nn.Sequential`` of ``Conv2d(1x1, bias=False)``, ``BatchNorm2d``, ``ReLU`` per layer (indices 0, 1, 2, then
3, 4, 5, ...). As in OpenPCDet v0.6 the ``bn`` argument is accepted and ignored: the layers always have batch norm.
One difference: the ``mlps`` / ``mlp`` lists passed in are not modified (OpenPCDet adds 3 to ``mlps[i][0]`` of the
caller's list when ``use_xyz``).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import pointnet2_utils


def _shared_mlp(channels):
    """Conv2d 1x1 (no bias) + BatchNorm2d + ReLU for each consecutive pair of ``channels``."""
    layers = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers.extend([nn.Conv2d(c_in, c_out, kernel_size=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()])
    return nn.Sequential(*layers)


class _PointnetSAModuleBase(nn.Module):
    def __init__(self):
        super().__init__()
        self.npoint = None
        self.groupers = None
        self.mlps = None
        self.pool_method = 'max_pool'

    def forward(self, xyz, features=None, new_xyz=None):
        """
        Args:
            xyz: (B, N, 3) point coordinates.
            features: (B, C, N) point features or None.
            new_xyz: (B, npoint, 3) centres; None: furthest point sampling of ``npoint`` from xyz (or, with
                ``npoint`` None, one group of all points and new_xyz None).
        Returns:
            new_xyz: (B, npoint, 3) or None.
            new_features: (B, sum_k mlps[k][-1], npoint) (npoint = 1 for a group-all module).
        """
        if new_xyz is None and self.npoint is not None:
            sample_idx = pointnet2_utils.furthest_point_sample(xyz.contiguous(), self.npoint)
            new_xyz = pointnet2_utils.gather_operation(xyz.transpose(1, 2).contiguous(), sample_idx)
            new_xyz = new_xyz.transpose(1, 2).contiguous()
        new_features_list = []
        for grouper, mlp in zip(self.groupers, self.mlps):
            new_features = mlp(grouper(xyz, new_xyz, features))      # (B, mlp[-1], npoint, nsample)
            if self.pool_method == 'max_pool':
                new_features = F.max_pool2d(new_features, kernel_size=[1, new_features.size(3)])
            elif self.pool_method == 'avg_pool':
                new_features = F.avg_pool2d(new_features, kernel_size=[1, new_features.size(3)])
            else:
                raise ValueError(f"pointnet2_modules.py: pool_method must be 'max_pool' or 'avg_pool', "
                                 f'got {self.pool_method!r}')
            new_features_list.append(new_features.squeeze(-1))
        return new_xyz, torch.cat(new_features_list, dim=1)


class PointnetSAModuleMSG(_PointnetSAModuleBase):
    """PointNet++ set abstraction with multi-scale grouping: one ball query and shared MLP per radius."""

    def __init__(self, *, npoint, radii, nsamples, mlps, bn=True, use_xyz=True, pool_method='max_pool'):
        """
        Args:
            npoint: int, centres sampled by FPS; None: group all points (``GroupAll``).
            radii: list of float, one radius per scale.
            nsamples: list of int, points per ball per scale.
            mlps: list of channel lists per scale, e.g. ``[[C, 16, 16, 32], [C, 32, 32, 64]]`` (input channels
                first, without the 3 coordinates that ``use_xyz`` adds).
            bn: ignored (always batch norm, as OpenPCDet).
            use_xyz: concatenate relative coordinates to the grouped features.
            pool_method: 'max_pool' or 'avg_pool' over the samples of a ball.
        """
        super().__init__()
        if not len(radii) == len(nsamples) == len(mlps):
            raise ValueError(f'pointnet2_modules.py: radii, nsamples and mlps need one entry per scale, got '
                             f'{len(radii)}, {len(nsamples)} and {len(mlps)}')
        self.npoint = npoint
        self.groupers = nn.ModuleList()
        self.mlps = nn.ModuleList()
        for radius, nsample, mlp_spec in zip(radii, nsamples, mlps):
            self.groupers.append(pointnet2_utils.QueryAndGroup(radius, nsample, use_xyz=use_xyz)
                                 if npoint is not None else pointnet2_utils.GroupAll(use_xyz))
            channels = list(mlp_spec)
            if use_xyz:
                channels[0] += 3
            self.mlps.append(_shared_mlp(channels))
        self.pool_method = pool_method


class PointnetSAModule(PointnetSAModuleMSG):
    """PointNet++ set abstraction with a single scale."""

    def __init__(self, *, mlp, npoint=None, radius=None, nsample=None, bn=True, use_xyz=True, pool_method='max_pool'):
        """
        Args:
            mlp: channel list, input channels first (without the coordinates).
            npoint, radius, nsample: as ``PointnetSAModuleMSG`` for one scale; npoint None groups all points.
            bn, use_xyz, pool_method: as ``PointnetSAModuleMSG``.
        """
        super().__init__(mlps=[mlp], npoint=npoint, radii=[radius], nsamples=[nsample], bn=bn, use_xyz=use_xyz,
                         pool_method=pool_method)


class PointnetFPModule(nn.Module):
    """PointNet++ feature propagation: inverse-distance interpolation from three neighbours, then a shared MLP."""

    def __init__(self, *, mlp, bn=True):
        """
        Args:
            mlp: channel list, ``[C2 + C1, ...]`` (interpolated plus skip channels first).
            bn: ignored (always batch norm, as OpenPCDet).
        """
        super().__init__()
        self.mlp = _shared_mlp(list(mlp))

    def forward(self, unknown, known, unknow_feats, known_feats):
        """
        Args:
            unknown: (B, n, 3) coordinates of the points that receive features.
            known: (B, m, 3) coordinates of the points that have them, or None (known_feats (B, C2, 1) is then
                broadcast to all n points).
            unknow_feats: (B, C1, n) skip features or None.
            known_feats: (B, C2, m) features to propagate.
        Returns:
            (B, mlp[-1], n).
        """
        if known is not None:
            dist, idx = pointnet2_utils.three_nn(unknown, known)
            dist_recip = 1.0 / (dist + 1e-8)
            weight = dist_recip / torch.sum(dist_recip, dim=2, keepdim=True)
            interpolated_feats = pointnet2_utils.three_interpolate(known_feats, idx, weight)
        else:
            interpolated_feats = known_feats.expand(*known_feats.size()[0:2], unknown.size(1))
        if unknow_feats is not None:
            new_features = torch.cat([interpolated_feats, unknow_feats], dim=1)   # (B, C2 + C1, n)
        else:
            new_features = interpolated_feats
        return self.mlp(new_features.unsqueeze(-1)).squeeze(-1)
