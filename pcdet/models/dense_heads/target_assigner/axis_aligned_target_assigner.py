"""AxisAlignedTargetAssigner: anchor labels and regression targets from GT boxes (SECOND / PointPillars)."""
import numpy as np
import torch

from pcdet.utils import box_utils


class AxisAlignedTargetAssigner:
    """Per class: IoU of anchors and GT boxes of that class (nearest axis-aligned BEV boxes, or rotated 3D IoU
    with MATCH_HEIGHT); IoU >= matched_threshold -> positive; each GT's best anchors (IoU > 0) forced positive;
    IoU < unmatched_threshold -> background (0); in between -> ignored (-1).
    """

    def __init__(self, model_cfg, class_names, box_coder, match_height=False):
        anchor_generator_cfg = model_cfg.ANCHOR_GENERATOR_CONFIG
        anchor_target_cfg = model_cfg.TARGET_ASSIGNER_CONFIG
        self.box_coder = box_coder
        self.match_height = match_height
        self.class_names = np.array(class_names)
        self.anchor_class_names = [config['class_name'] for config in anchor_generator_cfg]
        unknown = [n for n in self.anchor_class_names if n not in class_names]
        if unknown:
            raise ValueError(f'axis_aligned_target_assigner.py: ANCHOR_GENERATOR_CONFIG class_name {unknown} not in '
                             f'CLASS_NAMES {list(class_names)}')
        self.pos_fraction = anchor_target_cfg.POS_FRACTION if anchor_target_cfg.POS_FRACTION >= 0 else None
        self.sample_size = anchor_target_cfg.SAMPLE_SIZE
        self.norm_by_num_examples = anchor_target_cfg.NORM_BY_NUM_EXAMPLES
        self.matched_thresholds = {c['class_name']: c['matched_threshold'] for c in anchor_generator_cfg}
        self.unmatched_thresholds = {c['class_name']: c['unmatched_threshold'] for c in anchor_generator_cfg}
        if model_cfg.get('USE_MULTIHEAD', False):
            raise NotImplementedError('axis_aligned_target_assigner.py: USE_MULTIHEAD is not supported')

    def assign_targets(self, all_anchors, gt_boxes_with_classes):
        """
        Args:
            all_anchors: list (one per class) of (1, ny, nx, num_size, num_rot, 7) anchors.
            gt_boxes_with_classes: (B, M, 8) [x, y, z, dx, dy, dz, heading, class (1-based)], zero-padded rows.
        Returns:
            dict: box_cls_labels (B, A) int32 (class id, 0 background, -1 ignored); box_reg_targets (B, A, code)
            float; reg_weights (B, A) float. Per location the anchors are ordered class -> size -> rotation.
        """
        bbox_targets, cls_labels, reg_weights = [], [], []
        batch_size = gt_boxes_with_classes.shape[0]
        code_size = self.box_coder.code_size
        for k in range(batch_size):
            cur = gt_boxes_with_classes[k]
            valid = cur.abs().sum(dim=1) > 0  # zero rows are padding
            cur_gt, cur_gt_classes = cur[valid, :-1], cur[valid, -1].long()
            gt_names = self.class_names[(cur_gt_classes - 1).cpu().numpy()] if len(cur_gt_classes) else []
            target_list = []
            feature_map_size = None
            for anchor_class_name, anchors in zip(self.anchor_class_names, all_anchors):
                mask = torch.from_numpy(np.asarray(gt_names) == anchor_class_name).to(cur.device).view(-1)
                feature_map_size = anchors.shape[:3]
                target_list.append(self.assign_targets_single(
                    anchors.view(-1, anchors.shape[-1]), cur_gt[mask], gt_classes=cur_gt_classes[mask],
                    matched_threshold=self.matched_thresholds[anchor_class_name],
                    unmatched_threshold=self.unmatched_thresholds[anchor_class_name]))
            # interleave classes per location: (1, ny, nx, per-class anchors) concatenated on the last axis
            cls_labels.append(torch.cat(
                [t['box_cls_labels'].view(*feature_map_size, -1) for t in target_list], dim=-1).view(-1))
            bbox_targets.append(torch.cat(
                [t['box_reg_targets'].view(*feature_map_size, -1, code_size) for t in target_list],
                dim=-2).view(-1, code_size))
            reg_weights.append(torch.cat(
                [t['reg_weights'].view(*feature_map_size, -1) for t in target_list], dim=-1).view(-1))
        return {'box_cls_labels': torch.stack(cls_labels, dim=0),
                'box_reg_targets': torch.stack(bbox_targets, dim=0),
                'reg_weights': torch.stack(reg_weights, dim=0)}

    def _overlaps(self, anchors, gt_boxes):
        if self.match_height:
            from pcdet.ops.iou3d_nms import iou3d_nms_utils
            return iou3d_nms_utils.boxes_iou3d_gpu(anchors[:, 0:7], gt_boxes[:, 0:7])
        return box_utils.boxes3d_nearest_bev_iou(anchors[:, 0:7], gt_boxes[:, 0:7])

    def assign_targets_single(self, anchors, gt_boxes, gt_classes, matched_threshold=0.6, unmatched_threshold=0.45):
        """anchors (A, 7), gt_boxes (G, 7), gt_classes (G,) 1-based -> targets of one class in one sample."""
        num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
        device = anchors.device
        labels = torch.full((num_anchors,), -1, dtype=torch.int32, device=device)
        anchors_with_max_overlap = gt_inds_force = None
        if num_gt > 0 and num_anchors > 0:
            overlap = self._overlaps(anchors, gt_boxes)  # (A, G)
            anchor_to_gt_max, anchor_to_gt_argmax = overlap.max(dim=1)
            gt_to_anchor_max = overlap.max(dim=0)[0]
            gt_to_anchor_max = torch.where(gt_to_anchor_max == 0, torch.full_like(gt_to_anchor_max, -1),
                                           gt_to_anchor_max)  # a GT touching no anchor forces none
            anchors_with_max_overlap = (overlap == gt_to_anchor_max[None, :]).nonzero()[:, 0]
            gt_inds_force = anchor_to_gt_argmax[anchors_with_max_overlap]
            labels[anchors_with_max_overlap] = gt_classes[gt_inds_force].int()
            pos_inds = anchor_to_gt_max >= matched_threshold
            labels[pos_inds] = gt_classes[anchor_to_gt_argmax[pos_inds]].int()
            bg_inds = (anchor_to_gt_max < unmatched_threshold).nonzero()[:, 0]
        else:
            bg_inds = torch.arange(num_anchors, device=device)

        if self.pos_fraction is not None:
            fg_inds = (labels > 0).nonzero()[:, 0]
            num_fg = int(self.pos_fraction * self.sample_size)
            if len(fg_inds) > num_fg:
                disable = fg_inds[torch.randperm(len(fg_inds), device=device)[:len(fg_inds) - num_fg]]
                labels[disable] = -1
            num_bg = self.sample_size - int((labels > 0).sum())
            if len(bg_inds) > num_bg:
                labels[bg_inds[torch.randint(0, len(bg_inds), size=(num_bg,), device=device)]] = 0
            else:
                labels[bg_inds] = 0
        elif num_gt == 0 or num_anchors == 0:
            labels[:] = 0
        else:
            labels[bg_inds] = 0
            labels[anchors_with_max_overlap] = gt_classes[gt_inds_force].int()  # forced positives win over bg

        fg_inds = (labels > 0).nonzero()[:, 0]
        bbox_targets = anchors.new_zeros((num_anchors, self.box_coder.code_size))
        if num_gt > 0 and num_anchors > 0 and len(fg_inds) > 0:
            bbox_targets[fg_inds] = self.box_coder.encode_torch(gt_boxes[anchor_to_gt_argmax[fg_inds]],
                                                                anchors[fg_inds])
        reg_weights = anchors.new_zeros((num_anchors,))
        if self.norm_by_num_examples:
            num_examples = max(1.0, float((labels >= 0).sum()))
            reg_weights[labels > 0] = 1.0 / num_examples
        else:
            reg_weights[labels > 0] = 1.0
        return {'box_cls_labels': labels, 'box_reg_targets': bbox_targets, 'reg_weights': reg_weights}
