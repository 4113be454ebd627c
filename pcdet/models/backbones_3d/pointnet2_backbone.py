"""PointNet2MSG: PointRCNN's PointNet++ backbone (multi-scale set abstraction + feature propagation).

The batched PointNet++ modules (``pcdet.ops.pointnet2.pointnet2_batch.pointnet2_modules``) are imported when the
backbone is built, never when this module or the registry is imported.

Channels for OpenPCDet's ``pointrcnn.yaml`` (4 point features: xyz + intensity, so 1 feature channel besides xyz):
SA outputs 96 / 256 / 512 / 1024 on 4096 / 1024 / 256 / 64 points; FP inputs 257 / 608 / 768 / 1536; output 128.
"""
import torch
import torch.nn as nn


def _pointnet2_modules():
    from pcdet.ops.pointnet2.pointnet2_batch import pointnet2_modules
    return pointnet2_modules


class PointNet2MSG(nn.Module):
    """Args: model_cfg (``BACKBONE_3D``: SA_CONFIG {NPOINTS, RADIUS, NSAMPLE, MLPS, USE_XYZ (default True)},
    FP_MLPS), input_channels (point features incl. xyz, e.g. 4). Geometry kwargs are accepted and unused."""

    def __init__(self, model_cfg, input_channels, **kwargs):
        super().__init__()
        self.model_cfg = model_cfg
        modules = _pointnet2_modules()
        sa_cfg = self.model_cfg.SA_CONFIG
        self.SA_modules = nn.ModuleList()
        channel_in = input_channels - 3
        skip_channel_list = [channel_in]
        for k in range(len(sa_cfg.NPOINTS)):
            mlps = [[channel_in] + list(mlp) for mlp in sa_cfg.MLPS[k]]
            channel_out = sum(mlp[-1] for mlp in mlps)
            self.SA_modules.append(modules.PointnetSAModuleMSG(
                npoint=sa_cfg.NPOINTS[k], radii=sa_cfg.RADIUS[k], nsamples=sa_cfg.NSAMPLE[k], mlps=mlps,
                use_xyz=sa_cfg.get('USE_XYZ', True)))
            skip_channel_list.append(channel_out)
            channel_in = channel_out

        fp_mlps = self.model_cfg.FP_MLPS
        self.FP_modules = nn.ModuleList()
        for k in range(len(fp_mlps)):
            pre_channel = fp_mlps[k + 1][-1] if k + 1 < len(fp_mlps) else channel_out
            mlp = [pre_channel + skip_channel_list[k]] + list(fp_mlps[k])
            self.FP_modules.append(modules.PointnetFPModule(mlp=mlp))
        self.num_point_features = fp_mlps[0][-1]

    @staticmethod
    def break_up_pc(pc):
        """(ΣN, 4 + C) [b, x, y, z, f...] -> batch index (ΣN,), xyz (ΣN, 3), features (ΣN, C) or None."""
        batch_idx = pc[:, 0]
        xyz = pc[:, 1:4].contiguous()
        features = pc[:, 4:].contiguous() if pc.size(-1) > 4 else None
        return batch_idx, xyz, features

    def forward(self, batch_dict):
        """
        Reads:
            points (ΣN, 1 + 3 + C) [b, x, y, z, f...] LiDAR, every sample with the same N (``sample_points``),
            samples in order; batch_size int.
        Writes:
            point_features (B*N, num_point_features) and point_coords (B*N, 4) [b, x, y, z], same point order.
        """
        batch_size = int(batch_dict['batch_size'])
        batch_idx, xyz, features = self.break_up_pc(batch_dict['points'])
        counts = torch.bincount(batch_idx.long(), minlength=batch_size)
        if counts.numel() != batch_size or int(counts.min()) != int(counts.max()):
            raise ValueError(f'PointNet2MSG: every sample needs the same number of points (DATA_PROCESSOR '
                             f'sample_points), got {counts.tolist()}')
        xyz = xyz.view(batch_size, -1, 3)
        if features is not None:
            features = features.view(batch_size, -1, features.shape[-1]).permute(0, 2, 1).contiguous()

        l_xyz, l_features = [xyz], [features]
        for sa_module in self.SA_modules:
            li_xyz, li_features = sa_module(l_xyz[-1], l_features[-1])
            l_xyz.append(li_xyz)
            l_features.append(li_features)
        for i in range(-1, -(len(self.FP_modules) + 1), -1):
            l_features[i - 1] = self.FP_modules[i](l_xyz[i - 1], l_xyz[i], l_features[i - 1], l_features[i])

        point_features = l_features[0].permute(0, 2, 1).contiguous()  # (B, N, C)
        batch_dict['point_features'] = point_features.view(-1, point_features.shape[-1])
        batch_dict['point_coords'] = torch.cat((batch_idx[:, None].float(), l_xyz[0].view(-1, 3)), dim=1)
        return batch_dict
