"""PillarVFE (PointPillars): a small PointNet over the points of each pillar."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .vfe_template import VFETemplate


class PFNLayer(nn.Module):
    """Linear -> BN -> ReLU per point, then max over the pillar's points.

    Non-last layers output ``out_channels // 2`` point features concatenated with the repeated pillar max
    (OpenPCDet's layout, kept for checkpoint compatibility).
    """

    def __init__(self, in_channels, out_channels, use_norm=True, last_layer=False):
        super().__init__()
        self.last_vfe = last_layer
        self.use_norm = use_norm
        if not self.last_vfe:
            out_channels = out_channels // 2
        if self.use_norm:
            self.linear = nn.Linear(in_channels, out_channels, bias=False)
            self.norm = nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01)
        else:
            self.linear = nn.Linear(in_channels, out_channels, bias=True)

    def forward(self, inputs):
        """inputs (V, P, Cin) float -> (V, 1, Cout) if last layer else (V, P, Cout)."""
        x = self.linear(inputs)
        if self.use_norm:
            x = self.norm(x.permute(0, 2, 1)).permute(0, 2, 1)
        x = F.relu(x)
        x_max = torch.max(x, dim=1, keepdim=True)[0]
        if self.last_vfe:
            return x_max
        return torch.cat([x, x_max.expand(-1, inputs.shape[1], -1)], dim=2)


class PillarVFE(VFETemplate):
    """Config keys: ``WITH_DISTANCE``, ``USE_ABSLOTE_XYZ`` (sic, OpenPCDet's spelling), ``USE_NORM``, ``NUM_FILTERS``.

    Point decoration: raw features (xyz only when USE_ABSLOTE_XYZ) + offset to the pillar's point mean +
    offset to the pillar's geometric centre (+ range when WITH_DISTANCE): 4 + 3 + 3 = 10 inputs for KITTI.
    """

    def __init__(self, model_cfg, num_point_features, voxel_size, point_cloud_range, **kwargs):
        super().__init__(model_cfg=model_cfg)
        self.use_norm = self.model_cfg.USE_NORM
        self.with_distance = self.model_cfg.WITH_DISTANCE
        self.use_absolute_xyz = self.model_cfg.USE_ABSLOTE_XYZ
        num_point_features += 6 if self.use_absolute_xyz else 3
        if self.with_distance:
            num_point_features += 1
        self.num_filters = list(self.model_cfg.NUM_FILTERS)
        if len(self.num_filters) == 0:
            raise ValueError('pillar_vfe.py: VFE.NUM_FILTERS must list at least one width')
        num_filters = [num_point_features] + self.num_filters
        self.pfn_layers = nn.ModuleList([
            PFNLayer(num_filters[i], num_filters[i + 1], self.use_norm, last_layer=(i >= len(num_filters) - 2))
            for i in range(len(num_filters) - 1)])
        self.voxel_x, self.voxel_y, self.voxel_z = (float(v) for v in voxel_size[:3])
        self.x_offset = self.voxel_x / 2 + float(point_cloud_range[0])
        self.y_offset = self.voxel_y / 2 + float(point_cloud_range[1])
        self.z_offset = self.voxel_z / 2 + float(point_cloud_range[2])

    def get_output_feature_dim(self):
        return self.num_filters[-1]

    def forward(self, batch_dict, **kwargs):
        """
        Reads:
            voxels (V, P, C) float LiDAR points per pillar (zero-padded), voxel_num_points (V,),
            voxel_coords (V, 4) [b, z, y, x] grid indices.
        Writes:
            pillar_features (V, NUM_FILTERS[-1]) float.
        """
        voxel_features = batch_dict['voxels']
        voxel_num_points = batch_dict['voxel_num_points']
        coords = batch_dict['voxel_coords']
        dtype = voxel_features.dtype
        num_points = voxel_num_points.type_as(voxel_features).clamp_min(1.0).view(-1, 1, 1)
        points_mean = voxel_features[:, :, :3].sum(dim=1, keepdim=True) / num_points
        f_cluster = voxel_features[:, :, :3] - points_mean
        centers = torch.stack([
            coords[:, 3].to(dtype) * self.voxel_x + self.x_offset,
            coords[:, 2].to(dtype) * self.voxel_y + self.y_offset,
            coords[:, 1].to(dtype) * self.voxel_z + self.z_offset], dim=1)
        f_center = voxel_features[:, :, :3] - centers[:, None, :]
        if self.use_absolute_xyz:
            features = [voxel_features, f_cluster, f_center]
        else:
            features = [voxel_features[..., 3:], f_cluster, f_center]
        if self.with_distance:
            features.append(torch.norm(voxel_features[:, :, :3], 2, 2, keepdim=True))
        features = torch.cat(features, dim=-1)
        # zero the decorations of padding slots so they cannot win the max
        max_points = features.shape[1]
        mask = torch.arange(max_points, device=features.device)[None, :] < voxel_num_points.view(-1, 1)
        features = features * mask.unsqueeze(-1).type_as(features)
        for pfn in self.pfn_layers:
            features = pfn(features)
        batch_dict['pillar_features'] = features.squeeze(1)
        return batch_dict
