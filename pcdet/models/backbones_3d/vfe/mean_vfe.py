"""MeanVFE (SECOND): the voxel feature is the mean of its points."""
import torch

from .vfe_template import VFETemplate


class MeanVFE(VFETemplate):
    def __init__(self, model_cfg, num_point_features, **kwargs):
        super().__init__(model_cfg=model_cfg)
        self.num_point_features = num_point_features

    def get_output_feature_dim(self):
        return self.num_point_features

    def forward(self, batch_dict, **kwargs):
        """
        Reads:
            voxels (V, P, C) float: points per voxel, zero-padded beyond ``voxel_num_points``.
            voxel_num_points (V,) int/float.
        Writes:
            voxel_features (V, C) float: mean over the valid points (padding rows are zero, so a sum works).
        """
        voxel_features, voxel_num_points = batch_dict['voxels'], batch_dict['voxel_num_points']
        points_sum = voxel_features.sum(dim=1)
        normalizer = torch.clamp_min(voxel_num_points.view(-1, 1), min=1.0).type_as(voxel_features)
        batch_dict['voxel_features'] = (points_sum / normalizer).contiguous()
        return batch_dict
