"""RoIHeadTemplate: proposal layer (NMS over the first stage's boxes), RoI target assignment in the RoI frame,
refinement losses and box decoding, shared by RoI heads (OpenPCDet names and keys).

RoI frame: origin at the RoI centre, x along the RoI heading (the LiDAR frame translated by ``-roi[0:3]`` and
turned by ``-roi[6]``). Refinement targets are ``ResidualCoder`` residuals of the GT box in that frame against an
anchor of the RoI's size at the origin with heading 0; predictions are decoded back to the LiDAR frame.

Between ``forward`` and ``get_loss`` a head keeps ``self.forward_ret_dict`` (read only inside the head): the
``ProposalTargetLayer`` dict (rois (B, S, 7), gt_of_rois (B, S, 8) in the RoI frame, gt_of_rois_src (B, S, 8)
LiDAR, gt_iou_of_rois, roi_scores, roi_labels, reg_valid_mask, rcnn_cls_labels (B, S)) plus rcnn_cls (B*S, 1)
logits and rcnn_reg (B*S, code_size).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pcdet.utils import box_coder_utils, common_utils, loss_utils
from pcdet.utils.registry import lookup

from ..model_utils.model_nms_utils import class_agnostic_nms
from .target_assigner.proposal_target_layer import ProposalTargetLayer


def _binary_cross_entropy(rcnn_cls, labels):
    """(R, 1) logits, (R,) labels in [0, 1] or -1 (ignored) -> (R,) loss."""
    return F.binary_cross_entropy_with_logits(rcnn_cls.view(-1), labels.float().clamp(min=0), reduction='none')


def _cross_entropy(rcnn_cls, labels):
    """(R, K) logits, (R,) long labels or -1 (ignored) -> (R,) loss."""
    return F.cross_entropy(rcnn_cls, labels.long(), reduction='none', ignore_index=-1)


CLS_LOSSES = {'BinaryCrossEntropy': _binary_cross_entropy, 'CrossEntropy': _cross_entropy}
REG_LOSS_TYPES = ('smooth-l1',)


class RoIHeadTemplate(nn.Module):
    """Args: num_class (1 if class-agnostic), model_cfg (``ROI_HEAD``: TARGET_CONFIG, LOSS_CONFIG, DP_RATIO)."""

    def __init__(self, num_class, model_cfg):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_class = num_class
        target_cfg = self.model_cfg.TARGET_CONFIG
        self.box_coder = box_coder_utils.build_box_coder(
            target_cfg.BOX_CODER, cfg_key='ROI_HEAD.TARGET_CONFIG.BOX_CODER', **target_cfg.get('BOX_CODER_CONFIG', {}))
        self.proposal_target_layer = ProposalTargetLayer(roi_sampler_cfg=target_cfg)
        self.build_losses(self.model_cfg.LOSS_CONFIG)
        self.forward_ret_dict = None

    def build_losses(self, losses_cfg):
        self.cls_loss_fn = lookup(CLS_LOSSES, losses_cfg.CLS_LOSS, 'RoI classification loss',
                                  'ROI_HEAD.LOSS_CONFIG.CLS_LOSS')
        if losses_cfg.REG_LOSS not in REG_LOSS_TYPES:
            raise ValueError(f'ROI_HEAD.LOSS_CONFIG.REG_LOSS must be one of {REG_LOSS_TYPES}, '
                             f'got {losses_cfg.REG_LOSS!r}')
        self.add_module('reg_loss_func',
                        loss_utils.WeightedSmoothL1Loss(code_weights=losses_cfg.LOSS_WEIGHTS['code_weights']))

    def make_fc_layers(self, input_channels, output_channels, fc_list):
        """``[Conv1d(k=1, no bias), BatchNorm1d, ReLU]`` per entry of ``fc_list`` (a Dropout(DP_RATIO) after the
        first when DP_RATIO >= 0), then ``Conv1d(k=1, bias)`` to ``output_channels``."""
        fc_layers = []
        pre_channel = input_channels
        for k, channels in enumerate(fc_list):
            fc_layers.extend([nn.Conv1d(pre_channel, channels, kernel_size=1, bias=False), nn.BatchNorm1d(channels),
                              nn.ReLU()])
            pre_channel = channels
            if self.model_cfg.DP_RATIO >= 0 and k == 0:
                fc_layers.append(nn.Dropout(self.model_cfg.DP_RATIO))
        fc_layers.append(nn.Conv1d(pre_channel, output_channels, kernel_size=1, bias=True))
        return nn.Sequential(*fc_layers)

    @torch.no_grad()
    def proposal_layer(self, batch_dict, nms_config):
        """Keep the top first-stage boxes of each sample after class-agnostic NMS (scores: max class logit).

        Reads:
            batch_size; batch_cls_preds (ΣN, K) or (B, N, K) logits; batch_box_preds (ΣN, 7 + C) or
            (B, N, 7 + C) LiDAR; batch_index (ΣN,) with stacked predictions.
        Writes (and pops ``batch_index``):
            rois (B, NMS_POST_MAXSIZE, 7 + C) zero-padded; roi_scores (B, NMS_POST_MAXSIZE) logits;
            roi_labels (B, NMS_POST_MAXSIZE) 1-based long (padding: 1); has_class_labels (K > 1).
        """
        if nms_config.MULTI_CLASSES_NMS:
            raise NotImplementedError('ROI_HEAD.NMS_CONFIG.MULTI_CLASSES_NMS True is not supported (OpenPCDet '
                                      'neither)')
        batch_size = int(batch_dict['batch_size'])
        batch_box_preds = batch_dict['batch_box_preds']
        batch_cls_preds = batch_dict['batch_cls_preds']
        num_rois = nms_config.NMS_POST_MAXSIZE
        rois = batch_box_preds.new_zeros((batch_size, num_rois, batch_box_preds.shape[-1]))
        roi_scores = batch_box_preds.new_zeros((batch_size, num_rois))
        roi_labels = batch_box_preds.new_zeros((batch_size, num_rois), dtype=torch.long)
        batch_index = batch_dict.get('batch_index', None)
        for index in range(batch_size):
            batch_mask = (batch_index == index) if batch_index is not None else index
            box_preds = batch_box_preds[batch_mask]
            cur_roi_scores, cur_roi_labels = torch.max(batch_cls_preds[batch_mask], dim=1)
            selected, _ = class_agnostic_nms(box_scores=cur_roi_scores, box_preds=box_preds, nms_config=nms_config)
            rois[index, :len(selected)] = box_preds[selected]
            roi_scores[index, :len(selected)] = cur_roi_scores[selected]
            roi_labels[index, :len(selected)] = cur_roi_labels[selected]
        batch_dict['rois'] = rois
        batch_dict['roi_scores'] = roi_scores
        batch_dict['roi_labels'] = roi_labels + 1
        batch_dict['has_class_labels'] = batch_cls_preds.shape[-1] > 1
        batch_dict.pop('batch_index', None)
        return batch_dict

    def assign_targets(self, batch_dict):
        """Sample RoIs (``ProposalTargetLayer``) and express their GT boxes in the RoI frame.

        The GT heading is taken relative to the RoI heading and turned by pi when it points backwards, so it lies
        in [-pi/2, pi/2]. Returns the target layer's dict with ``gt_of_rois`` in the RoI frame and
        ``gt_of_rois_src`` (LiDAR) added.
        """
        with torch.no_grad():
            targets_dict = self.proposal_target_layer(batch_dict)
        rois = targets_dict['rois']  # (B, S, 7 + C)
        gt_of_rois = targets_dict['gt_of_rois']  # (B, S, 8)
        targets_dict['gt_of_rois_src'] = gt_of_rois.clone().detach()
        roi_ry = rois[:, :, 6] % (2 * np.pi)
        local = torch.cat([gt_of_rois[:, :, 0:3] - rois[:, :, 0:3], gt_of_rois[:, :, 3:6],
                           (gt_of_rois[:, :, 6] - roi_ry).unsqueeze(-1), gt_of_rois[:, :, 7:]], dim=-1)
        local = common_utils.rotate_points_along_z(local.view(-1, 1, local.shape[-1]), -roi_ry.view(-1))
        local = local.view(gt_of_rois.shape)
        heading = local[:, :, 6] % (2 * np.pi)  # [0, 2pi)
        opposite = (heading > np.pi * 0.5) & (heading < np.pi * 1.5)
        heading = torch.where(opposite, (heading + np.pi) % (2 * np.pi), heading)  # [0, pi/2] or [3pi/2, 2pi)
        heading = torch.where(heading > np.pi, heading - np.pi * 2, heading)
        heading = torch.clamp(heading, min=-np.pi / 2, max=np.pi / 2)
        targets_dict['gt_of_rois'] = torch.cat([local[:, :, 0:6], heading.unsqueeze(-1), local[:, :, 7:]], dim=-1)
        return targets_dict

    def decode_roi_residuals(self, residuals, rois):
        """(N, code_size) residuals in the RoI frame of ``rois`` (N, 7 + C) LiDAR -> (N, code_size) LiDAR boxes."""
        local_rois = torch.cat([torch.zeros_like(rois[:, 0:3]), rois[:, 3:]], dim=-1).detach()
        boxes = self.box_coder.decode_torch(residuals, local_rois)
        centres = common_utils.rotate_points_along_z(boxes[:, None, 0:3], rois[:, 6]).squeeze(dim=1)
        return torch.cat([centres + rois[:, 0:3], boxes[:, 3:]], dim=-1)

    def get_box_reg_layer_loss(self, forward_ret_dict):
        """Smooth-L1 on the residuals of foreground RoIs (reg_valid_mask), normalised by their number (min 1),
        plus the corner loss of the decoded boxes (CORNER_LOSS_REGULARIZATION). -> (loss, tb_dict)."""
        loss_cfgs = self.model_cfg.LOSS_CONFIG
        code_size = self.box_coder.code_size
        fg_mask = forward_ret_dict['reg_valid_mask'].view(-1) > 0
        fg_sum = int(fg_mask.long().sum().item())
        gt_local = forward_ret_dict['gt_of_rois'][..., 0:code_size].reshape(-1, code_size)
        rois = forward_ret_dict['rois'].reshape(-1, forward_ret_dict['rois'].shape[-1])
        rcnn_reg = forward_ret_dict['rcnn_reg'].view(gt_local.shape[0], -1)  # (B*S, code_size)

        anchors = torch.cat([torch.zeros_like(rois[:, 0:3]), rois[:, 3:6], torch.zeros_like(rois[:, 6:7]),
                             rois[:, 7:code_size]], dim=-1).detach()
        reg_targets = self.box_coder.encode_torch(gt_local, anchors)
        rcnn_loss_reg = self.reg_loss_func(rcnn_reg.unsqueeze(dim=0), reg_targets.unsqueeze(dim=0))  # (1, B*S, code)
        rcnn_loss_reg = (rcnn_loss_reg.view(rcnn_reg.shape[0], -1) * fg_mask.unsqueeze(dim=-1).float()).sum()
        rcnn_loss_reg = rcnn_loss_reg / max(fg_sum, 1) * loss_cfgs.LOSS_WEIGHTS['rcnn_reg_weight']
        tb_dict = {'rcnn_loss_reg': rcnn_loss_reg.item()}
        if loss_cfgs.CORNER_LOSS_REGULARIZATION:
            loss_corner = rcnn_loss_reg.new_zeros(())
            if fg_sum > 0:
                pred_boxes = self.decode_roi_residuals(rcnn_reg[fg_mask], rois[fg_mask])
                gt_src = forward_ret_dict['gt_of_rois_src'].reshape(-1, forward_ret_dict['gt_of_rois_src'].shape[-1])
                loss_corner = loss_utils.get_corner_loss_lidar(pred_boxes[:, 0:7], gt_src[fg_mask][:, 0:7]).mean()
                loss_corner = loss_corner * loss_cfgs.LOSS_WEIGHTS['rcnn_corner_weight']
            rcnn_loss_reg = rcnn_loss_reg + loss_corner
            tb_dict['rcnn_loss_corner'] = loss_corner.item()
        return rcnn_loss_reg, tb_dict

    def get_box_cls_layer_loss(self, forward_ret_dict):
        """CLS_LOSS over RoIs with label >= 0, normalised by their number (min 1). -> (loss, tb_dict)."""
        rcnn_cls = forward_ret_dict['rcnn_cls']
        rcnn_cls_labels = forward_ret_dict['rcnn_cls_labels'].view(-1)
        cls_valid_mask = (rcnn_cls_labels >= 0).float()
        batch_loss_cls = self.cls_loss_fn(rcnn_cls, rcnn_cls_labels)
        rcnn_loss_cls = (batch_loss_cls * cls_valid_mask).sum() / torch.clamp(cls_valid_mask.sum(), min=1.0)
        rcnn_loss_cls = rcnn_loss_cls * self.model_cfg.LOSS_CONFIG.LOSS_WEIGHTS['rcnn_cls_weight']
        return rcnn_loss_cls, {'rcnn_loss_cls': rcnn_loss_cls.item()}

    def get_loss(self, tb_dict=None):
        """-> (rcnn_loss, tb_dict + {rcnn_loss_cls, rcnn_loss_reg, rcnn_loss_corner, rcnn_loss})."""
        tb_dict = {} if tb_dict is None else tb_dict
        rcnn_loss_cls, cls_tb_dict = self.get_box_cls_layer_loss(self.forward_ret_dict)
        rcnn_loss_reg, reg_tb_dict = self.get_box_reg_layer_loss(self.forward_ret_dict)
        tb_dict.update(cls_tb_dict)
        tb_dict.update(reg_tb_dict)
        rcnn_loss = rcnn_loss_cls + rcnn_loss_reg
        tb_dict['rcnn_loss'] = rcnn_loss.item()
        return rcnn_loss, tb_dict

    def generate_predicted_boxes(self, batch_size, rois, cls_preds, box_preds):
        """
        Args:
            rois: (B, S, 7) LiDAR; cls_preds: (B*S, num_class) logits; box_preds: (B*S, code_size) residuals.
        Returns:
            batch_cls_preds (B, S, num_class) logits; batch_box_preds (B, S, code_size) LiDAR boxes.
        """
        code_size = self.box_coder.code_size
        batch_cls_preds = cls_preds.view(batch_size, -1, cls_preds.shape[-1])
        boxes = self.decode_roi_residuals(box_preds.view(-1, code_size), rois.view(-1, rois.shape[-1]))
        return batch_cls_preds, boxes.view(batch_size, -1, code_size)
