"""PointRCNNHead: PointRCNN's stage-2 refinement (Shi et al., CVPR 2019).

Per RoI: the points inside it (``RoIPointPool3d``, NUM_SAMPLED_POINTS of them) with their backbone features,
first-stage score and normalised depth, moved to the RoI frame (``roi_head_template``); xyz + score + depth are
lifted by ``xyz_up_layer`` and merged with the features (``merge_down_layer``); three PointNet++ set abstractions
(the last groups all points) give one feature vector, from which ``cls_layers`` predicts the confidence and
``reg_layers`` the ``ResidualCoder`` residuals in the RoI frame.

The PointNet++ and RoI point pooling ops are imported when the head is built, never at module import.
"""
import torch
import torch.nn as nn

from pcdet.utils import common_utils

from .roi_head_template import RoIHeadTemplate


def _ops():
    from pcdet.ops.pointnet2.pointnet2_batch import pointnet2_modules
    from pcdet.ops.roipoint_pool3d import roipoint_pool3d_utils
    return pointnet2_modules, roipoint_pool3d_utils


class PointRCNNHead(RoIHeadTemplate):
    """Args: input_channels (backbone point feature width, 128), model_cfg (``ROI_HEAD``: ROI_POINT_POOL
    {POOL_EXTRA_WIDTH, NUM_SAMPLED_POINTS, DEPTH_NORMALIZER}, XYZ_UP_LAYER, CLS_FC, REG_FC, DP_RATIO, USE_BN,
    SA_CONFIG {NPOINTS (-1: group all), RADIUS, NSAMPLE, MLPS}, NMS_CONFIG {TRAIN, TEST}, TARGET_CONFIG,
    LOSS_CONFIG), num_class (1: class-agnostic). Other kwargs (geometry) are accepted and unused."""

    def __init__(self, input_channels, model_cfg, num_class=1, **kwargs):
        super().__init__(num_class=num_class, model_cfg=model_cfg)
        pointnet2_modules, roipoint_pool3d_utils = _ops()
        use_bn = self.model_cfg.USE_BN
        self.SA_modules = nn.ModuleList()  # registered first: its keys lead the state_dict as in OpenPCDet
        self.num_prefix_channels = 3 + 2  # xyz + point score + point depth
        self.xyz_up_layer = self._make_xyz_up_layer([self.num_prefix_channels] + list(self.model_cfg.XYZ_UP_LAYER),
                                                    use_bn)
        c_out = self.model_cfg.XYZ_UP_LAYER[-1]
        self.merge_down_layer = nn.Sequential(
            nn.Conv2d(c_out * 2, c_out, kernel_size=1, bias=not use_bn),
            *([nn.BatchNorm2d(c_out), nn.ReLU()] if use_bn else [nn.ReLU()]))

        sa_cfg = self.model_cfg.SA_CONFIG
        channel_in = input_channels
        for k in range(len(sa_cfg.NPOINTS)):
            mlp = [channel_in] + list(sa_cfg.MLPS[k])
            self.SA_modules.append(pointnet2_modules.PointnetSAModule(
                npoint=sa_cfg.NPOINTS[k] if sa_cfg.NPOINTS[k] != -1 else None, radius=sa_cfg.RADIUS[k],
                nsample=sa_cfg.NSAMPLE[k], mlp=mlp, use_xyz=True, bn=use_bn))
            channel_in = mlp[-1]

        self.cls_layers = self.make_fc_layers(input_channels=channel_in, output_channels=self.num_class,
                                              fc_list=self.model_cfg.CLS_FC)
        self.reg_layers = self.make_fc_layers(input_channels=channel_in,
                                              output_channels=self.box_coder.code_size * self.num_class,
                                              fc_list=self.model_cfg.REG_FC)
        pool_cfg = self.model_cfg.ROI_POINT_POOL
        self.roipoint_pool3d_layer = roipoint_pool3d_utils.RoIPointPool3d(
            num_sampled_points=pool_cfg.NUM_SAMPLED_POINTS, pool_extra_width=pool_cfg.POOL_EXTRA_WIDTH)
        self.init_weights(weight_init='xavier')

    @staticmethod
    def _make_xyz_up_layer(channels, use_bn):
        layers = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=1, bias=not use_bn))
            if use_bn:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def init_weights(self, weight_init='xavier'):
        """Every Conv1d/Conv2d of the head (SA modules included): ``weight_init`` weights, zero bias; the last
        regression layer N(0, 0.001)."""
        init_funcs = {'kaiming': nn.init.kaiming_normal_, 'xavier': nn.init.xavier_normal_,
                      'normal': lambda w: nn.init.normal_(w, mean=0, std=0.001)}
        if weight_init not in init_funcs:
            raise ValueError(f'PointRCNNHead: weight_init must be one of {sorted(init_funcs)}, got {weight_init!r}')
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv1d)):
                init_funcs[weight_init](m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
        nn.init.normal_(self.reg_layers[-1].weight, mean=0, std=0.001)

    def roipool3d_gpu(self, batch_dict):
        """Pool the points of every RoI into its canonical (RoI) frame (the name is OpenPCDet's; any device).

        Reads:
            batch_size; rois (B, R, 7 + C) LiDAR; point_coords (B*N, 4) [b, x, y, z]; point_features (B*N, F);
            point_cls_scores (B*N,).
        Returns:
            (B*R, NUM_SAMPLED_POINTS, 3 + 2 + F) float: xyz in the RoI frame, score, depth / DEPTH_NORMALIZER
            - 0.5, features; all zero for an RoI with no point.
        """
        batch_size = int(batch_dict['batch_size'])
        batch_idx = batch_dict['point_coords'][:, 0]
        point_coords = batch_dict['point_coords'][:, 1:4]
        rois = batch_dict['rois']
        counts = torch.bincount(batch_idx.long(), minlength=batch_size)
        if int(counts.min()) != int(counts.max()):
            raise ValueError(f'PointRCNNHead: every sample needs the same number of points, got {counts.tolist()}')
        point_scores = batch_dict['point_cls_scores'].detach()
        point_depths = point_coords.norm(dim=1) / self.model_cfg.ROI_POINT_POOL.DEPTH_NORMALIZER - 0.5
        point_features_all = torch.cat([point_scores[:, None], point_depths[:, None],
                                        batch_dict['point_features']], dim=1)
        batch_points = point_coords.view(batch_size, -1, 3)
        batch_point_features = point_features_all.view(batch_size, -1, point_features_all.shape[-1])
        with torch.no_grad():
            pooled_features, pooled_empty_flag = self.roipoint_pool3d_layer(batch_points, batch_point_features, rois)
            pooled_features = pooled_features.view(-1, pooled_features.shape[-2], pooled_features.shape[-1])
            flat_rois = rois.reshape(-1, rois.shape[-1])  # (B*R, 7 + C)
            local_xyz = common_utils.rotate_points_along_z(pooled_features[:, :, 0:3] - flat_rois[:, None, 0:3],
                                                           -flat_rois[:, 6])
            pooled_features = torch.cat([local_xyz, pooled_features[:, :, 3:]], dim=-1)
            pooled_features[pooled_empty_flag.view(-1) > 0] = 0
        return pooled_features

    def forward(self, batch_dict):
        """
        Reads:
            the point head's batch_cls_preds / batch_box_preds / batch_index, point_coords, point_features,
            point_cls_scores, batch_size, gt_boxes (B, M, 8) when training.
        Writes:
            rois (B, R, 7), roi_scores (B, R), roi_labels (B, R) 1-based, has_class_labels (proposal layer; in
            training replaced by the S = ROI_PER_IMAGE sampled RoIs and their labels); in eval batch_cls_preds
            (B, R, 1) logits, batch_box_preds (B, R, 7) LiDAR boxes, cls_preds_normalized False.
        """
        targets_dict = self.proposal_layer(
            batch_dict, nms_config=self.model_cfg.NMS_CONFIG['TRAIN' if self.training else 'TEST'])
        if self.training:
            targets_dict = self.assign_targets(batch_dict)
            batch_dict['rois'] = targets_dict['rois']
            batch_dict['roi_labels'] = targets_dict['roi_labels']

        pooled_features = self.roipool3d_gpu(batch_dict)  # (B*R, S, 5 + F)
        xyz_input = pooled_features[..., 0:self.num_prefix_channels].transpose(1, 2).unsqueeze(dim=3).contiguous()
        xyz_features = self.xyz_up_layer(xyz_input)
        point_features = pooled_features[..., self.num_prefix_channels:].transpose(1, 2).unsqueeze(dim=3)
        merged_features = self.merge_down_layer(torch.cat((xyz_features, point_features), dim=1))

        l_xyz, l_features = pooled_features[..., 0:3].contiguous(), merged_features.squeeze(dim=3).contiguous()
        for sa_module in self.SA_modules:
            l_xyz, l_features = sa_module(l_xyz, l_features)
        shared_features = l_features  # (B*R, C, 1)
        rcnn_cls = self.cls_layers(shared_features).transpose(1, 2).contiguous().squeeze(dim=1)  # (B*R, num_class)
        rcnn_reg = self.reg_layers(shared_features).transpose(1, 2).contiguous().squeeze(dim=1)  # (B*R, code)

        if not self.training:
            batch_cls_preds, batch_box_preds = self.generate_predicted_boxes(
                batch_size=int(batch_dict['batch_size']), rois=batch_dict['rois'], cls_preds=rcnn_cls,
                box_preds=rcnn_reg)
            batch_dict['batch_cls_preds'] = batch_cls_preds
            batch_dict['batch_box_preds'] = batch_box_preds
            batch_dict['cls_preds_normalized'] = False
        else:
            targets_dict['rcnn_cls'] = rcnn_cls
            targets_dict['rcnn_reg'] = rcnn_reg
            self.forward_ret_dict = targets_dict
        return batch_dict
