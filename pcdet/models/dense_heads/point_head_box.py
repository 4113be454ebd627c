"""PointHeadBox: PointRCNN's stage-1 head (Shi et al., CVPR 2019): per-point foreground segmentation and one box
proposal per point (``PointResidualCoder``), both from MLPs on the backbone's point features."""
import torch

from pcdet.utils import box_coder_utils, box_utils

from .point_head_template import PointHeadTemplate


class PointHeadBox(PointHeadTemplate):
    """Args: num_class (1 if class-agnostic), input_channels (point feature width), model_cfg (``POINT_HEAD``:
    CLS_FC, REG_FC, TARGET_CONFIG {GT_EXTRA_WIDTH, BOX_CODER, BOX_CODER_CONFIG}, LOSS_CONFIG),
    predict_boxes_when_training (an RoI head follows)."""

    def __init__(self, num_class, input_channels, model_cfg, predict_boxes_when_training=False, **kwargs):
        super().__init__(model_cfg=model_cfg, num_class=num_class)
        self.predict_boxes_when_training = predict_boxes_when_training
        self.cls_layers = self.make_fc_layers(fc_cfg=self.model_cfg.CLS_FC, input_channels=input_channels,
                                              output_channels=num_class)
        target_cfg = self.model_cfg.TARGET_CONFIG
        self.box_coder = box_coder_utils.build_box_coder(
            target_cfg.BOX_CODER, cfg_key='POINT_HEAD.TARGET_CONFIG.BOX_CODER',
            **target_cfg.get('BOX_CODER_CONFIG', {}))
        self.box_layers = self.make_fc_layers(fc_cfg=self.model_cfg.REG_FC, input_channels=input_channels,
                                              output_channels=self.box_coder.code_size)

    def assign_targets(self, input_dict):
        """
        Reads ``point_coords`` (ΣN, 4) [b, x, y, z] and ``gt_boxes`` (B, M, 8); GT boxes enlarged by
        ``TARGET_CONFIG.GT_EXTRA_WIDTH`` (dx, dy, dz) bound the ignored band. Returns ``assign_stack_targets``'s
        dict (point_cls_labels, point_box_labels).
        """
        point_coords = input_dict['point_coords']
        gt_boxes = input_dict['gt_boxes']
        if gt_boxes.dim() != 3:
            raise ValueError(f'point head: gt_boxes must be (B, M, 8), got {tuple(gt_boxes.shape)}')
        extend_gt_boxes = box_utils.enlarge_box3d(
            gt_boxes.view(-1, gt_boxes.shape[-1]), extra_width=self.model_cfg.TARGET_CONFIG.GT_EXTRA_WIDTH
        ).view(gt_boxes.shape)
        return self.assign_stack_targets(points=point_coords, gt_boxes=gt_boxes, extend_gt_boxes=extend_gt_boxes,
                                         ret_box_labels=True)

    def get_loss(self, tb_dict=None):
        """-> (point_loss_cls + point_loss_box, tb_dict {point_loss_cls, point_pos_num, point_loss_box})."""
        tb_dict = {} if tb_dict is None else tb_dict
        point_loss_cls, tb_dict = self.get_cls_layer_loss(tb_dict)
        point_loss_box, tb_dict = self.get_box_layer_loss(tb_dict)
        return point_loss_cls + point_loss_box, tb_dict

    def forward(self, batch_dict):
        """
        Reads:
            point_features (ΣN, C) (``point_features_before_fusion`` if USE_POINT_FEATURES_BEFORE_FUSION),
            point_coords (ΣN, 4) [b, x, y, z] LiDAR, gt_boxes (B, M, 8) when training.
        Writes:
            point_cls_scores (ΣN,) sigmoid of the highest class logit; in eval, or in training with
            predict_boxes_when_training: batch_cls_preds (ΣN, num_class) logits, batch_box_preds (ΣN, 7) LiDAR
            boxes, batch_index (ΣN,) float sample index, cls_preds_normalized False.
        """
        if self.model_cfg.get('USE_POINT_FEATURES_BEFORE_FUSION', False):
            point_features = batch_dict['point_features_before_fusion']
        else:
            point_features = batch_dict['point_features']
        point_cls_preds = self.cls_layers(point_features)
        point_box_preds = self.box_layers(point_features)
        batch_dict['point_cls_scores'] = torch.sigmoid(point_cls_preds.max(dim=-1)[0])

        ret_dict = {'point_cls_preds': point_cls_preds, 'point_box_preds': point_box_preds}
        if self.training:
            targets_dict = self.assign_targets(batch_dict)
            ret_dict['point_cls_labels'] = targets_dict['point_cls_labels']
            ret_dict['point_box_labels'] = targets_dict['point_box_labels']
        if not self.training or self.predict_boxes_when_training:
            batch_cls_preds, batch_box_preds = self.generate_predicted_boxes(
                points=batch_dict['point_coords'][:, 1:4], point_cls_preds=point_cls_preds,
                point_box_preds=point_box_preds)
            batch_dict['batch_cls_preds'] = batch_cls_preds
            batch_dict['batch_box_preds'] = batch_box_preds
            batch_dict['batch_index'] = batch_dict['point_coords'][:, 0]
            batch_dict['cls_preds_normalized'] = False
        self.forward_ret_dict = ret_dict
        return batch_dict
