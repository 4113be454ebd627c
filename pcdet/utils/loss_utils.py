"""Detection losses (OpenPCDet's ``loss_utils``), device-agnostic.

All losses return unreduced, weighted tensors; the heads normalise and sum them.
Shapes: B = batch size, A = anchors per sample, C = classes (or code size for regression).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import box_utils


class SigmoidFocalClassificationLoss(nn.Module):
    """Sigmoid focal loss (Lin et al.): ``alpha_t * (1 - p_t)^gamma * BCE``."""

    def __init__(self, gamma=2.0, alpha=0.25):
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma

    @staticmethod
    def sigmoid_cross_entropy_with_logits(logits, target):
        """Numerically stable BCE with logits, elementwise: ``max(x, 0) - x * t + log(1 + exp(-|x|))``."""
        return torch.clamp(logits, min=0) - logits * target + torch.log1p(torch.exp(-torch.abs(logits)))

    def forward(self, logits, target, weights):
        """
        Args:
            logits: (B, A, C) float raw scores. target: (B, A, C) one-hot float. weights: (B, A) float.
        Returns:
            (B, A, C) weighted focal loss.
        """
        pred_sigmoid = torch.sigmoid(logits)
        alpha_weight = target * self.alpha + (1 - target) * (1 - self.alpha)
        pt = target * (1.0 - pred_sigmoid) + (1.0 - target) * pred_sigmoid
        focal_weight = alpha_weight * torch.pow(pt, self.gamma)
        loss = focal_weight * self.sigmoid_cross_entropy_with_logits(logits, target)
        if weights.dim() == 2 or (weights.dim() == 1 and target.dim() == 2):
            weights = weights.unsqueeze(-1)
        assert weights.dim() == loss.dim(), f'weights {tuple(weights.shape)} do not broadcast to {tuple(loss.shape)}'
        return loss * weights


class WeightedSmoothL1Loss(nn.Module):
    """Smooth-L1 (Huber with transition ``beta``) per code element, scaled by ``code_weights``.

    ``code_weights`` is a non-persistent buffer: it follows ``.to(device)`` and stays out of the state_dict
    (OpenPCDet's checkpoints do not contain it).
    """

    def __init__(self, beta=1.0 / 9.0, code_weights=None):
        super().__init__()
        self.beta = beta
        if code_weights is not None:
            self.register_buffer('code_weights', torch.tensor(code_weights, dtype=torch.float32), persistent=False)
        else:
            self.code_weights = None

    @staticmethod
    def smooth_l1_loss(diff, beta):
        if beta < 1e-5:
            return torch.abs(diff)
        n = torch.abs(diff)
        return torch.where(n < beta, 0.5 * n ** 2 / beta, n - 0.5 * beta)

    def forward(self, pred, target, weights=None):
        """
        Args:
            pred: (B, A, C) float. target: (B, A, C) float (NaN entries are ignored). weights: (B, A) or None.
        Returns:
            (B, A, C) loss.
        """
        target = torch.where(torch.isnan(target), pred, target)
        diff = pred - target
        if self.code_weights is not None:
            diff = diff * self.code_weights.to(diff.dtype).view(1, 1, -1)
        loss = self.smooth_l1_loss(diff, self.beta)
        if weights is not None:
            assert weights.shape == loss.shape[:2], f'weights {tuple(weights.shape)} vs loss {tuple(loss.shape)}'
            loss = loss * weights.unsqueeze(-1)
        return loss


class WeightedCrossEntropyLoss(nn.Module):
    """Softmax cross-entropy with one-hot targets and per-anchor weights (direction classifier)."""

    def forward(self, logits, target, weights):
        """
        Args:
            logits: (B, A, K) float. target: (B, A, K) one-hot float. weights: (B, A) float.
        Returns:
            (B, A) weighted loss.
        """
        loss = F.cross_entropy(logits.permute(0, 2, 1), target.argmax(dim=-1), reduction='none')
        return loss * weights


def get_corner_loss_lidar(pred_bbox3d, gt_bbox3d):
    """Corner loss of PointRCNN's refinement: smooth-L1 (beta 1) of the distance of each of the 8 corners to the
    same corner of the GT box or of the GT box turned by pi, whichever is nearer (heading ambiguity).

    Args:
        pred_bbox3d: (N, 7) LiDAR boxes; gt_bbox3d: (N, 7) LiDAR boxes (same frame).
    Returns:
        (N,) loss per box: the mean over its 8 corners.
    """
    if pred_bbox3d.shape[0] != gt_bbox3d.shape[0]:
        raise ValueError(f'get_corner_loss_lidar: {pred_bbox3d.shape[0]} predicted vs {gt_bbox3d.shape[0]} GT boxes')
    pred_corners = box_utils.boxes_to_corners_3d(pred_bbox3d)
    gt_corners = box_utils.boxes_to_corners_3d(gt_bbox3d)
    gt_flipped = torch.cat([gt_bbox3d[:, :6], gt_bbox3d[:, 6:7] + np.pi, gt_bbox3d[:, 7:]], dim=1)
    gt_corners_flipped = box_utils.boxes_to_corners_3d(gt_flipped)
    corner_dist = torch.min(torch.norm(pred_corners - gt_corners, dim=2),
                            torch.norm(pred_corners - gt_corners_flipped, dim=2))  # (N, 8)
    return WeightedSmoothL1Loss.smooth_l1_loss(corner_dist, beta=1.0).mean(dim=1)
