"""ProposalTargetLayer: samples and labels the RoIs the refinement stage trains on (OpenPCDet's sampler).

Per sample, every RoI gets the 3D IoU with its best GT box (only GT boxes of the RoI's class when
``SAMPLE_ROI_BY_EACH_CLASS``) and is

- foreground if IoU >= min(REG_FG_THRESH, CLS_FG_THRESH),
- hard background if CLS_BG_THRESH_LO <= IoU < REG_FG_THRESH,
- easy background if IoU < CLS_BG_THRESH_LO.

``ROI_PER_IMAGE`` RoIs are drawn: up to ``round(FG_RATIO * ROI_PER_IMAGE)`` foreground ones without replacement,
the rest background with replacement, ``HARD_BG_RATIO`` of them hard (as many as there are, the rest easy). With
no background all RoIs are foreground drawn with replacement; with no foreground all are background.
Labels: ``reg_valid_mask = IoU > REG_FG_THRESH``; ``CLS_SCORE_TYPE`` ``cls``: ``rcnn_cls_labels`` 1 if
IoU > CLS_FG_THRESH, -1 (ignored) if CLS_BG_THRESH < IoU < CLS_FG_THRESH, else 0; ``roi_iou``: 1 above
CLS_FG_THRESH, 0 below CLS_BG_THRESH, linear in between.
"""
import numpy as np
import torch
import torch.nn as nn

from pcdet.ops.iou3d_nms import iou3d_nms_utils

CLS_SCORE_TYPES = ('cls', 'roi_iou')


class ProposalTargetLayer(nn.Module):
    """Args: roi_sampler_cfg (``ROI_HEAD.TARGET_CONFIG``, keys in the module docstring)."""

    def __init__(self, roi_sampler_cfg):
        super().__init__()
        self.roi_sampler_cfg = roi_sampler_cfg
        if roi_sampler_cfg.CLS_SCORE_TYPE not in CLS_SCORE_TYPES:
            raise ValueError(f'ROI_HEAD.TARGET_CONFIG.CLS_SCORE_TYPE must be one of {CLS_SCORE_TYPES}, '
                             f'got {roi_sampler_cfg.CLS_SCORE_TYPE!r}')

    def forward(self, batch_dict):
        """
        Reads:
            batch_size, rois (B, R, 7 + C) LiDAR, roi_scores (B, R), roi_labels (B, R) 1-based long,
            gt_boxes (B, M, 8) LiDAR + 1-based class, zero-padded.
        Returns:
            {rois (B, S, 7 + C), gt_of_rois (B, S, 8) the assigned GT box (+ class), gt_iou_of_rois (B, S),
            roi_scores (B, S), roi_labels (B, S), reg_valid_mask (B, S) long, rcnn_cls_labels (B, S) long
            (float for roi_iou)}, S = ROI_PER_IMAGE.
        """
        rois, gt_of_rois, roi_ious, roi_scores, roi_labels = self.sample_rois_for_rcnn(batch_dict)
        cfg = self.roi_sampler_cfg
        reg_valid_mask = (roi_ious > cfg.REG_FG_THRESH).long()
        if cfg.CLS_SCORE_TYPE == 'cls':
            cls_labels = (roi_ious > cfg.CLS_FG_THRESH).long()
            cls_labels[(roi_ious > cfg.CLS_BG_THRESH) & (roi_ious < cfg.CLS_FG_THRESH)] = -1
        else:
            span = cfg.CLS_FG_THRESH - cfg.CLS_BG_THRESH
            cls_labels = ((roi_ious - cfg.CLS_BG_THRESH) / span).clamp(min=0.0, max=1.0)
        return {'rois': rois, 'gt_of_rois': gt_of_rois, 'gt_iou_of_rois': roi_ious, 'roi_scores': roi_scores,
                'roi_labels': roi_labels, 'reg_valid_mask': reg_valid_mask, 'rcnn_cls_labels': cls_labels}

    def sample_rois_for_rcnn(self, batch_dict):
        """Draw ROI_PER_IMAGE RoIs per sample; returns (rois, gt_of_rois, ious, scores, labels), see ``forward``."""
        rois, gt_boxes = batch_dict['rois'], batch_dict['gt_boxes']
        roi_scores, roi_labels = batch_dict['roi_scores'], batch_dict['roi_labels']
        batch_size, per_image = int(batch_dict['batch_size']), self.roi_sampler_cfg.ROI_PER_IMAGE
        batch_rois = rois.new_zeros(batch_size, per_image, rois.shape[-1])
        batch_gt_of_rois = rois.new_zeros(batch_size, per_image, gt_boxes.shape[-1])
        batch_roi_ious = rois.new_zeros(batch_size, per_image)
        batch_roi_scores = rois.new_zeros(batch_size, per_image)
        batch_roi_labels = rois.new_zeros((batch_size, per_image), dtype=torch.long)
        for index in range(batch_size):
            cur_gt = gt_boxes[index]
            cur_gt = cur_gt[cur_gt[:, 0:7].abs().sum(dim=1) > 0]
            if len(cur_gt) == 0:  # no GT: one zero box, every RoI is easy background
                cur_gt = gt_boxes.new_zeros((1, gt_boxes.shape[-1]))
            cur_roi, cur_roi_labels = rois[index], roi_labels[index]
            if self.roi_sampler_cfg.get('SAMPLE_ROI_BY_EACH_CLASS', False):
                max_overlaps, gt_assignment = self.get_max_iou_with_same_class(
                    rois=cur_roi, roi_labels=cur_roi_labels, gt_boxes=cur_gt[:, 0:7], gt_labels=cur_gt[:, -1].long())
            else:
                iou3d = iou3d_nms_utils.boxes_iou3d_gpu(cur_roi[:, 0:7], cur_gt[:, 0:7])  # (R, M)
                max_overlaps, gt_assignment = torch.max(iou3d, dim=1)
            sampled_inds = self.subsample_rois(max_overlaps)
            batch_rois[index] = cur_roi[sampled_inds]
            batch_roi_labels[index] = cur_roi_labels[sampled_inds]
            batch_roi_ious[index] = max_overlaps[sampled_inds]
            batch_roi_scores[index] = roi_scores[index][sampled_inds]
            batch_gt_of_rois[index] = cur_gt[gt_assignment[sampled_inds]]
        return batch_rois, batch_gt_of_rois, batch_roi_ious, batch_roi_scores, batch_roi_labels

    def subsample_rois(self, max_overlaps):
        """(R,) IoUs -> (ROI_PER_IMAGE,) long indices: the sampled foreground RoIs first, then the background."""
        cfg = self.roi_sampler_cfg
        per_image = cfg.ROI_PER_IMAGE
        fg_thresh = min(cfg.REG_FG_THRESH, cfg.CLS_FG_THRESH)
        fg_inds = torch.nonzero(max_overlaps >= fg_thresh).view(-1)
        easy_bg_inds = torch.nonzero(max_overlaps < cfg.CLS_BG_THRESH_LO).view(-1)
        hard_bg_inds = torch.nonzero((max_overlaps < cfg.REG_FG_THRESH)
                                     & (max_overlaps >= cfg.CLS_BG_THRESH_LO)).view(-1)
        num_fg, num_bg = fg_inds.numel(), hard_bg_inds.numel() + easy_bg_inds.numel()
        if num_fg == 0 and num_bg == 0:
            raise ValueError(f'ProposalTargetLayer: no RoI is foreground or background (IoUs '
                             f'{max_overlaps.tolist()[:10]}...); NaN boxes?')
        if num_bg == 0:  # only foreground: draw all with replacement
            return fg_inds[_randint(num_fg, per_image, max_overlaps.device)]
        num_fg_sampled = min(int(np.round(cfg.FG_RATIO * per_image)), num_fg)
        fg_inds = fg_inds[torch.randperm(num_fg, device=max_overlaps.device)[:num_fg_sampled]]
        bg_inds = self.sample_bg_inds(hard_bg_inds, easy_bg_inds, per_image - num_fg_sampled, cfg.HARD_BG_RATIO)
        return torch.cat((fg_inds, bg_inds), dim=0).long()

    @staticmethod
    def sample_bg_inds(hard_bg_inds, easy_bg_inds, bg_rois_per_this_image, hard_bg_ratio):
        """``bg_rois_per_this_image`` indices drawn with replacement: ``int(n * hard_bg_ratio)`` hard ones (capped
        at the number of hard RoIs) and easy ones for the rest; all from one kind when the other is empty."""
        if hard_bg_inds.numel() == 0:
            num_hard = 0
        elif easy_bg_inds.numel() == 0:
            num_hard = bg_rois_per_this_image
        else:
            num_hard = min(int(bg_rois_per_this_image * hard_bg_ratio), hard_bg_inds.numel())
        num_easy = bg_rois_per_this_image - num_hard
        parts = []
        if num_hard > 0:
            parts.append(hard_bg_inds[_randint(hard_bg_inds.numel(), num_hard, hard_bg_inds.device)])
        if num_easy > 0:
            parts.append(easy_bg_inds[_randint(easy_bg_inds.numel(), num_easy, easy_bg_inds.device)])
        return torch.cat(parts, dim=0) if parts else hard_bg_inds.new_zeros((0,))

    @staticmethod
    def get_max_iou_with_same_class(rois, roi_labels, gt_boxes, gt_labels):
        """
        Args:
            rois: (R, 7 + C) LiDAR; roi_labels: (R,) 1-based; gt_boxes: (M, 7) LiDAR; gt_labels: (M,) 1-based.
        Returns:
            max_overlaps (R,) 3D IoU with the best GT box of the same class (0 if none), gt_assignment (R,) long
            index of that GT box (0 if none).
        """
        max_overlaps = rois.new_zeros(rois.shape[0])
        gt_assignment = roi_labels.new_zeros(roi_labels.shape[0], dtype=torch.long)
        for k in torch.unique(gt_labels).tolist():
            roi_mask, gt_mask = roi_labels == k, gt_labels == k
            if not bool(roi_mask.any()):
                continue
            iou3d = iou3d_nms_utils.boxes_iou3d_gpu(rois[roi_mask][:, 0:7], gt_boxes[gt_mask])  # (r, m)
            cur_max_overlaps, cur_gt_assignment = torch.max(iou3d, dim=1)
            max_overlaps[roi_mask] = cur_max_overlaps
            gt_assignment[roi_mask] = torch.nonzero(gt_mask).view(-1)[cur_gt_assignment]
        return max_overlaps, gt_assignment


def _randint(high, size, device):
    return torch.randint(low=0, high=high, size=(size,), device=device)
