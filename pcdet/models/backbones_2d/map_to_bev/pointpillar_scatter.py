"""PointPillarScatter: pillar features -> dense BEV pseudo-image."""
import torch.nn as nn


class PointPillarScatter(nn.Module):
    def __init__(self, model_cfg, grid_size, **kwargs):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_bev_features = self.model_cfg.NUM_BEV_FEATURES
        self.nx, self.ny, self.nz = (int(g) for g in grid_size)
        if self.nz != 1:
            raise ValueError(f'pointpillar_scatter.py: pillars need a grid one voxel high, got grid_size {grid_size} '
                             '(set VOXEL_SIZE z to the POINT_CLOUD_RANGE height)')

    def forward(self, batch_dict, **kwargs):
        """
        Reads:
            pillar_features (V, C) float, voxel_coords (V, 4) [b, z, y, x], batch_size int.
        Writes:
            spatial_features (B, C, ny, nx) float (zeros where there is no pillar).
        """
        pillar_features, coords = batch_dict['pillar_features'], batch_dict['voxel_coords']
        if 'batch_size' in batch_dict:
            batch_size = int(batch_dict['batch_size'])
        else:
            batch_size = int(coords[:, 0].max().item()) + 1 if coords.shape[0] else 1
        num_channels = pillar_features.shape[1]
        coords = coords.long()
        cells = self.ny * self.nx
        flat_index = coords[:, 0] * cells + coords[:, 2] * self.nx + coords[:, 3]
        canvas = pillar_features.new_zeros((batch_size * cells, num_channels))
        canvas[flat_index] = pillar_features
        batch_dict['spatial_features'] = canvas.view(batch_size, self.ny, self.nx, num_channels).permute(
            0, 3, 1, 2).contiguous()
        return batch_dict
