"""HeightCompression: sparse 3D features (B, C, D, H, W) -> dense BEV map (B, C*D, H, W)."""
import torch.nn as nn


class HeightCompression(nn.Module):
    def __init__(self, model_cfg, **kwargs):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_bev_features = self.model_cfg.NUM_BEV_FEATURES

    def forward(self, batch_dict):
        """
        Reads:
            encoded_spconv_tensor (SparseConvTensor), encoded_spconv_tensor_stride int.
        Writes:
            spatial_features (B, C*D, H, W) float, spatial_features_stride int.
        """
        spatial_features = batch_dict['encoded_spconv_tensor'].dense()
        n, c, d, h, w = spatial_features.shape
        if c * d != self.num_bev_features:
            raise ValueError(f'height_compression.py: MAP_TO_BEV.NUM_BEV_FEATURES is {self.num_bev_features} but the '
                             f'3D backbone gives {c} channels x {d} height planes = {c * d}')
        batch_dict['spatial_features'] = spatial_features.view(n, c * d, h, w)
        batch_dict['spatial_features_stride'] = batch_dict['encoded_spconv_tensor_stride']
        return batch_dict
