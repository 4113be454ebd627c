"""AnchorHeadTemplate: anchors, target assignment, losses and box decoding shared by anchor heads.

Anchors are non-persistent buffers (they follow ``.to(device)`` and stay out of the state_dict, as in
OpenPCDet's checkpoints). Training targets and predictions are kept in ``self.forward_ret_dict`` between
``forward`` and ``get_loss`` (OpenPCDet's contract; read only inside this module):
``cls_preds`` (B, H, W, A*C), ``box_preds`` (B, H, W, A*code), ``dir_cls_preds`` (B, H, W, A*bins),
``box_cls_labels`` (B, N), ``box_reg_targets`` (B, N, code), ``reg_weights`` (B, N) with N = H*W*A.
"""
import numpy as np
import torch
import torch.nn as nn

from pcdet.utils.registry import lookup
from pcdet.utils import box_coder_utils, common_utils, loss_utils

from .target_assigner import __all__ as target_assigners
from .target_assigner.anchor_generator import AnchorGenerator

REG_LOSSES = {'WeightedSmoothL1Loss': loss_utils.WeightedSmoothL1Loss}


class AnchorHeadTemplate(nn.Module):
    def __init__(self, model_cfg, num_class, class_names, grid_size, point_cloud_range, predict_boxes_when_training):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_class = num_class
        self.class_names = class_names
        self.predict_boxes_when_training = predict_boxes_when_training
        self.use_multihead = self.model_cfg.get('USE_MULTIHEAD', False)
        if self.use_multihead:
            raise NotImplementedError('anchor_head_template.py: DENSE_HEAD.USE_MULTIHEAD is not supported')
        anchor_target_cfg = self.model_cfg.TARGET_ASSIGNER_CONFIG
        self.box_coder = box_coder_utils.build_box_coder(
            anchor_target_cfg.BOX_CODER, num_dir_bins=anchor_target_cfg.get('NUM_DIR_BINS', 6),
            **anchor_target_cfg.get('BOX_CODER_CONFIG', {}))
        anchors, self.num_anchors_per_location = self.generate_anchors(
            self.model_cfg.ANCHOR_GENERATOR_CONFIG, grid_size=grid_size, point_cloud_range=point_cloud_range,
            anchor_ndim=self.box_coder.code_size)
        self.num_anchor_grids = len(anchors)
        for i, anchor in enumerate(anchors):
            self.register_buffer(f'anchors_{i}', anchor, persistent=False)
        self.target_assigner = self.get_target_assigner(anchor_target_cfg)
        self.forward_ret_dict = {}
        self.build_losses(self.model_cfg.LOSS_CONFIG)

    @property
    def anchors(self):
        """List (one per class) of (1, ny, nx, num_size, num_rot, code_size) anchors on the module's device."""
        return [getattr(self, f'anchors_{i}') for i in range(self.num_anchor_grids)]

    @staticmethod
    def generate_anchors(anchor_generator_cfg, grid_size, point_cloud_range, anchor_ndim=7):
        """Anchor grids on ``grid_size[:2] // feature_map_stride`` per class (CPU; moved with the module)."""
        anchor_generator = AnchorGenerator(anchor_range=point_cloud_range,
                                           anchor_generator_config=anchor_generator_cfg)
        grid_size = np.asarray(grid_size)
        feature_map_size = [grid_size[:2] // config['feature_map_stride'] for config in anchor_generator_cfg]
        anchors_list, num_anchors_per_location = anchor_generator.generate_anchors(feature_map_size)
        if anchor_ndim != 7:
            anchors_list = [torch.cat([a, a.new_zeros((*a.shape[:-1], anchor_ndim - 7))], dim=-1)
                            for a in anchors_list]
        return anchors_list, num_anchors_per_location

    def get_target_assigner(self, anchor_target_cfg):
        cls = lookup(target_assigners, anchor_target_cfg.NAME, 'target assigner',
                     'DENSE_HEAD.TARGET_ASSIGNER_CONFIG.NAME')
        return cls(model_cfg=self.model_cfg, class_names=self.class_names, box_coder=self.box_coder,
                   match_height=anchor_target_cfg.MATCH_HEIGHT)

    def build_losses(self, losses_cfg):
        self.add_module('cls_loss_func', loss_utils.SigmoidFocalClassificationLoss(alpha=0.25, gamma=2.0))
        reg_loss_name = losses_cfg.get('REG_LOSS_TYPE', None) or 'WeightedSmoothL1Loss'
        reg_cls = lookup(REG_LOSSES, reg_loss_name, 'regression loss', 'DENSE_HEAD.LOSS_CONFIG.REG_LOSS_TYPE')
        self.add_module('reg_loss_func', reg_cls(code_weights=losses_cfg.LOSS_WEIGHTS['code_weights']))
        self.add_module('dir_loss_func', loss_utils.WeightedCrossEntropyLoss())

    def assign_targets(self, gt_boxes):
        """gt_boxes (B, M, 8) -> dict of box_cls_labels / box_reg_targets / reg_weights (see the assigner)."""
        return self.target_assigner.assign_targets(self.anchors, gt_boxes)

    def _flat_anchors(self, batch_size):
        anchors = torch.cat(self.anchors, dim=-3)  # class-major per location, matching the conv channel order
        return anchors.view(1, -1, anchors.shape[-1]).repeat(batch_size, 1, 1)

    def get_cls_layer_loss(self):
        cls_preds = self.forward_ret_dict['cls_preds']
        box_cls_labels = self.forward_ret_dict['box_cls_labels']
        batch_size = int(cls_preds.shape[0])
        cared = box_cls_labels >= 0
        positives = box_cls_labels > 0
        negatives = box_cls_labels == 0
        cls_weights = (negatives.float() + positives.float())
        if self.num_class == 1:  # class-agnostic head: every positive is class 1
            box_cls_labels = torch.where(positives, torch.ones_like(box_cls_labels), box_cls_labels)
        pos_normalizer = positives.sum(1, keepdim=True).float()
        cls_weights = cls_weights / torch.clamp(pos_normalizer, min=1.0)
        cls_targets = (box_cls_labels * cared.type_as(box_cls_labels)).long()
        one_hot_targets = torch.zeros(*cls_targets.shape, self.num_class + 1, dtype=cls_preds.dtype,
                                      device=cls_targets.device)
        one_hot_targets.scatter_(-1, cls_targets.unsqueeze(dim=-1), 1.0)
        one_hot_targets = one_hot_targets[..., 1:]
        cls_preds = cls_preds.view(batch_size, -1, self.num_class)
        cls_loss = self.cls_loss_func(cls_preds, one_hot_targets, weights=cls_weights).sum() / batch_size
        cls_loss = cls_loss * self.model_cfg.LOSS_CONFIG.LOSS_WEIGHTS['cls_weight']
        return cls_loss, {'rpn_loss_cls': cls_loss.item()}

    @staticmethod
    def add_sin_difference(boxes1, boxes2, dim=6):
        """Replace the heading of both by ``sin(a)cos(b)`` / ``cos(a)sin(b)``: their difference is sin(a - b)."""
        rad_pred_encoding = torch.sin(boxes1[..., dim:dim + 1]) * torch.cos(boxes2[..., dim:dim + 1])
        rad_tg_encoding = torch.cos(boxes1[..., dim:dim + 1]) * torch.sin(boxes2[..., dim:dim + 1])
        boxes1 = torch.cat([boxes1[..., :dim], rad_pred_encoding, boxes1[..., dim + 1:]], dim=-1)
        boxes2 = torch.cat([boxes2[..., :dim], rad_tg_encoding, boxes2[..., dim + 1:]], dim=-1)
        return boxes1, boxes2

    @staticmethod
    def get_direction_target(anchors, reg_targets, one_hot=True, dir_offset=0, num_bins=2):
        """Direction bin of the GT heading: ``floor(limit_period(rg - dir_offset, 0, 2pi) / (2pi / bins))``."""
        batch_size = reg_targets.shape[0]
        anchors = anchors.view(batch_size, -1, anchors.shape[-1])
        rot_gt = reg_targets[..., 6] + anchors[..., 6]
        offset_rot = common_utils.limit_period(rot_gt - dir_offset, 0, 2 * np.pi)
        dir_cls_targets = torch.floor(offset_rot / (2 * np.pi / num_bins)).long()
        dir_cls_targets = torch.clamp(dir_cls_targets, min=0, max=num_bins - 1)
        if one_hot:
            dir_targets = torch.zeros(*dir_cls_targets.shape, num_bins, dtype=anchors.dtype,
                                      device=dir_cls_targets.device)
            dir_targets.scatter_(-1, dir_cls_targets.unsqueeze(dim=-1), 1.0)
            dir_cls_targets = dir_targets
        return dir_cls_targets

    def get_box_reg_layer_loss(self):
        box_preds = self.forward_ret_dict['box_preds']
        box_dir_cls_preds = self.forward_ret_dict.get('dir_cls_preds', None)
        box_reg_targets = self.forward_ret_dict['box_reg_targets']
        box_cls_labels = self.forward_ret_dict['box_cls_labels']
        batch_size = int(box_preds.shape[0])
        loss_weights = self.model_cfg.LOSS_CONFIG.LOSS_WEIGHTS
        positives = box_cls_labels > 0
        reg_weights = positives.float()
        reg_weights = reg_weights / torch.clamp(positives.sum(1, keepdim=True).float(), min=1.0)
        anchors = self._flat_anchors(batch_size)
        box_preds = box_preds.view(batch_size, -1, box_preds.shape[-1] // self.num_anchors_per_location)
        box_preds_sin, reg_targets_sin = self.add_sin_difference(box_preds, box_reg_targets)
        loc_loss = self.reg_loss_func(box_preds_sin, reg_targets_sin, weights=reg_weights).sum() / batch_size
        loc_loss = loc_loss * loss_weights['loc_weight']
        box_loss = loc_loss
        tb_dict = {'rpn_loss_loc': loc_loss.item()}
        if box_dir_cls_preds is not None:
            num_bins = self.model_cfg.NUM_DIR_BINS
            dir_targets = self.get_direction_target(anchors, box_reg_targets, dir_offset=self.model_cfg.DIR_OFFSET,
                                                    num_bins=num_bins)
            dir_logits = box_dir_cls_preds.view(batch_size, -1, num_bins)
            weights = positives.type_as(dir_logits)
            weights = weights / torch.clamp(weights.sum(-1, keepdim=True), min=1.0)
            dir_loss = self.dir_loss_func(dir_logits, dir_targets, weights=weights).sum() / batch_size
            dir_loss = dir_loss * loss_weights['dir_weight']
            box_loss = box_loss + dir_loss
            tb_dict['rpn_loss_dir'] = dir_loss.item()
        return box_loss, tb_dict

    def get_loss(self):
        """-> (rpn_loss scalar tensor, tb_dict {rpn_loss_cls, rpn_loss_loc, rpn_loss_dir, rpn_loss})."""
        cls_loss, tb_dict = self.get_cls_layer_loss()
        box_loss, tb_dict_box = self.get_box_reg_layer_loss()
        tb_dict.update(tb_dict_box)
        rpn_loss = cls_loss + box_loss
        tb_dict['rpn_loss'] = rpn_loss.item()
        return rpn_loss, tb_dict

    def generate_predicted_boxes(self, batch_size, cls_preds, box_preds, dir_cls_preds=None):
        """
        Args:
            cls_preds (B, H, W, A*C), box_preds (B, H, W, A*code), dir_cls_preds (B, H, W, A*bins) or None.
        Returns:
            batch_cls_preds (B, N, C) float logits; batch_box_preds (B, N, code) decoded LiDAR boxes.
        """
        batch_anchors = self._flat_anchors(batch_size)
        num_anchors = batch_anchors.shape[1]
        batch_cls_preds = cls_preds.view(batch_size, num_anchors, -1).float()
        batch_box_preds = self.box_coder.decode_torch(box_preds.view(batch_size, num_anchors, -1), batch_anchors)
        if dir_cls_preds is not None:
            dir_offset = self.model_cfg.DIR_OFFSET
            dir_limit_offset = self.model_cfg.DIR_LIMIT_OFFSET
            dir_labels = torch.max(dir_cls_preds.view(batch_size, num_anchors, -1), dim=-1)[1]
            period = 2 * np.pi / self.model_cfg.NUM_DIR_BINS
            dir_rot = common_utils.limit_period(batch_box_preds[..., 6] - dir_offset, dir_limit_offset, period)
            heading = dir_rot + dir_offset + period * dir_labels.to(batch_box_preds.dtype)
            batch_box_preds = torch.cat([batch_box_preds[..., :6], heading.unsqueeze(-1), batch_box_preds[..., 7:]],
                                        dim=-1)
        return batch_cls_preds, batch_box_preds

    def forward(self, **kwargs):
        raise NotImplementedError
