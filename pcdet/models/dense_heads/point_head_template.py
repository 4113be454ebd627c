"""PointHeadTemplate: per-point targets, losses and box decoding shared by point heads (OpenPCDet names).

Points are stacked over the batch: ``point_coords`` (N1 + N2 + ..., 4) ``[b, x, y, z]`` in the LiDAR frame.
Between ``forward`` and ``get_loss`` the head keeps ``self.forward_ret_dict`` (OpenPCDet's contract, read only
inside the head): ``point_cls_preds`` (ΣN, num_class) logits, ``point_box_preds`` (ΣN, code_size) and, in
training, ``point_cls_labels`` (ΣN,) long (0 background, -1 ignored, else the 1-based class or 1 when the head
is class-agnostic) and ``point_box_labels`` (ΣN, code_size) (zeros off the foreground).
"""
import torch
import torch.nn as nn

from pcdet.ops.roiaware_pool3d import roiaware_pool3d_utils
from pcdet.utils import loss_utils
from pcdet.utils.registry import lookup

REG_LOSSES = {'WeightedSmoothL1Loss': loss_utils.WeightedSmoothL1Loss}


class PointHeadTemplate(nn.Module):
    """Args: model_cfg (the ``POINT_HEAD`` block), num_class (1 if class-agnostic)."""

    def __init__(self, model_cfg, num_class):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_class = num_class
        self.build_losses(self.model_cfg.LOSS_CONFIG)
        self.forward_ret_dict = None

    def build_losses(self, losses_cfg):
        """Focal classification loss (alpha 0.25, gamma 2) and ``LOSS_REG`` (default WeightedSmoothL1Loss)."""
        self.add_module('cls_loss_func', loss_utils.SigmoidFocalClassificationLoss(alpha=0.25, gamma=2.0))
        reg_cls = lookup(REG_LOSSES, losses_cfg.get('LOSS_REG', None) or 'WeightedSmoothL1Loss', 'regression loss',
                         'POINT_HEAD.LOSS_CONFIG.LOSS_REG')
        self.add_module('reg_loss_func', reg_cls(code_weights=losses_cfg.LOSS_WEIGHTS.get('code_weights', None)))

    @staticmethod
    def make_fc_layers(fc_cfg, input_channels, output_channels):
        """``[Linear(no bias), BatchNorm1d, ReLU] * len(fc_cfg)`` then ``Linear(bias)`` to ``output_channels``."""
        fc_layers = []
        c_in = input_channels
        for c_out in fc_cfg:
            fc_layers.extend([nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()])
            c_in = c_out
        fc_layers.append(nn.Linear(c_in, output_channels, bias=True))
        return nn.Sequential(*fc_layers)

    def assign_stack_targets(self, points, gt_boxes, extend_gt_boxes, ret_box_labels=False):
        """Foreground / ignore labels of stacked points (OpenPCDet's ``set_ignore_flag`` rule).

        A point inside a GT box is foreground (label: its box's class, or 1 for a class-agnostic head); a point
        inside the enlarged box ``extend_gt_boxes`` but in no GT box is ignored (-1); every other point is
        background (0). Points in overlapping boxes belong to the lowest-indexed box.

        Args:
            points: (ΣN, 4) [b, x, y, z] LiDAR. gt_boxes, extend_gt_boxes: (B, M, 8) LiDAR boxes + 1-based class,
            zero-padded rows. ret_box_labels: also encode each foreground point's box with ``self.box_coder``.
        Returns:
            {'point_cls_labels': (ΣN,) long, 'point_box_labels': (ΣN, code_size) float or None}.
        """
        if points.dim() != 2 or points.shape[1] != 4:
            raise ValueError(f'point head: points must be (N, 4) [b, x, y, z], got {tuple(points.shape)}')
        if gt_boxes.dim() != 3 or gt_boxes.shape[2] != 8 or extend_gt_boxes.shape != gt_boxes.shape:
            raise ValueError(f'point head: gt_boxes and extend_gt_boxes must be (B, M, 8), got '
                             f'{tuple(gt_boxes.shape)} and {tuple(extend_gt_boxes.shape)}')
        point_cls_labels = points.new_zeros(points.shape[0], dtype=torch.long)
        point_box_labels = gt_boxes.new_zeros((points.shape[0], self.box_coder.code_size)) if ret_box_labels else None
        for k in range(gt_boxes.shape[0]):
            bs_mask = points[:, 0] == k
            points_single = points[bs_mask][:, 1:4]
            box_idxs = self._box_index(points_single, gt_boxes[k])
            fg_flag = box_idxs >= 0
            ignore_flag = fg_flag ^ (self._box_index(points_single, extend_gt_boxes[k]) >= 0)
            fg_boxes = gt_boxes[k][box_idxs[fg_flag]]
            labels = point_cls_labels.new_zeros(points_single.shape[0])
            labels[ignore_flag] = -1
            labels[fg_flag] = 1 if self.num_class == 1 else fg_boxes[:, -1].long()
            point_cls_labels[bs_mask] = labels
            if ret_box_labels:
                box_labels = point_box_labels.new_zeros((points_single.shape[0], self.box_coder.code_size))
                box_labels[fg_flag] = self.box_coder.encode_torch(
                    gt_boxes=fg_boxes[:, :-1], points=points_single[fg_flag], gt_classes=fg_boxes[:, -1].long())
                point_box_labels[bs_mask] = box_labels
        return {'point_cls_labels': point_cls_labels, 'point_box_labels': point_box_labels}

    @staticmethod
    def _box_index(points, boxes):
        """(N,) long index of the box (M, 8) containing each point (N, 3), -1 if none."""
        return roiaware_pool3d_utils.points_in_boxes_gpu(
            points.unsqueeze(dim=0), boxes[:, 0:7].unsqueeze(dim=0).contiguous()).long().squeeze(dim=0)

    def get_cls_layer_loss(self, tb_dict=None):
        """Focal loss over all cared points, normalised by the number of foreground points (min 1).

        Returns (point_loss_cls, tb_dict + {point_loss_cls, point_pos_num}).
        """
        point_cls_labels = self.forward_ret_dict['point_cls_labels'].view(-1)
        point_cls_preds = self.forward_ret_dict['point_cls_preds'].view(-1, self.num_class)
        positives = point_cls_labels > 0
        pos_normalizer = positives.sum().float()
        cls_weights = (point_cls_labels >= 0).float() / torch.clamp(pos_normalizer, min=1.0)
        # one-hot over classes 1..num_class; background and ignored points get an all-zero row
        classes = torch.arange(1, self.num_class + 1, device=point_cls_labels.device)
        one_hot_targets = (point_cls_labels.unsqueeze(dim=-1) == classes).to(point_cls_preds.dtype)
        point_loss_cls = self.cls_loss_func(point_cls_preds, one_hot_targets, weights=cls_weights).sum()
        point_loss_cls = point_loss_cls * self.model_cfg.LOSS_CONFIG.LOSS_WEIGHTS['point_cls_weight']
        tb_dict = {} if tb_dict is None else tb_dict
        tb_dict.update({'point_loss_cls': point_loss_cls.item(), 'point_pos_num': pos_normalizer.item()})
        return point_loss_cls, tb_dict

    def get_box_layer_loss(self, tb_dict=None):
        """Regression loss on foreground points, normalised by their number (min 1).

        Returns (point_loss_box, tb_dict + {point_loss_box}).
        """
        pos_mask = self.forward_ret_dict['point_cls_labels'] > 0
        reg_weights = pos_mask.float() / torch.clamp(pos_mask.sum().float(), min=1.0)
        point_loss_box = self.reg_loss_func(self.forward_ret_dict['point_box_preds'][None, ...],
                                            self.forward_ret_dict['point_box_labels'][None, ...],
                                            weights=reg_weights[None, ...]).sum()
        point_loss_box = point_loss_box * self.model_cfg.LOSS_CONFIG.LOSS_WEIGHTS['point_box_weight']
        tb_dict = {} if tb_dict is None else tb_dict
        tb_dict.update({'point_loss_box': point_loss_box.item()})
        return point_loss_box, tb_dict

    def generate_predicted_boxes(self, points, point_cls_preds, point_box_preds):
        """
        Args:
            points: (N, 3) LiDAR [x, y, z]; point_cls_preds: (N, num_class) logits; point_box_preds: (N, code).
        Returns:
            point_cls_preds (N, num_class) unchanged; point_box_preds (N, 7) LiDAR boxes decoded with the mean
            size of each point's highest-scoring class.
        """
        pred_classes = point_cls_preds.max(dim=-1)[1]
        return point_cls_preds, self.box_coder.decode_torch(point_box_preds, points, pred_classes + 1)

    def forward(self, **kwargs):
        raise NotImplementedError
