"""Base class of voxel feature encoders (VFE): per-voxel point sets -> one feature vector per voxel."""
import torch.nn as nn


class VFETemplate(nn.Module):
    def __init__(self, model_cfg, **kwargs):
        super().__init__()
        self.model_cfg = model_cfg

    def get_output_feature_dim(self):
        """Channels of the per-voxel feature this VFE writes into the batch dict."""
        raise NotImplementedError

    def forward(self, batch_dict):
        raise NotImplementedError
