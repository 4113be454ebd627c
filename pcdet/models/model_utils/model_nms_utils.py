"""Score filtering + rotated / axis-aligned NMS for post-processing (OpenPCDet's ``model_nms_utils``).

``nms_config`` keys: NMS_TYPE (``nms_gpu`` rotated BEV | ``nms_normal_gpu`` axis-aligned; both run on any
device), NMS_THRESH, NMS_PRE_MAXSIZE, NMS_POST_MAXSIZE.
"""
import torch

from pcdet.utils.registry import lookup

NMS_TYPES = ('nms_gpu', 'nms_normal_gpu')


def _nms_fn(nms_config):
    from pcdet.ops.iou3d_nms import iou3d_nms_utils  # lazy: compiled ops load only when used
    registry = {name: getattr(iou3d_nms_utils, name) for name in NMS_TYPES}
    return lookup(registry, nms_config.NMS_TYPE, 'NMS type', 'POST_PROCESSING.NMS_CONFIG.NMS_TYPE')


def _topk_nms(box_scores, box_preds, nms_config):
    """Indices (into the inputs) kept by NMS among the top NMS_PRE_MAXSIZE scores, at most NMS_POST_MAXSIZE."""
    if box_scores.shape[0] == 0:
        return torch.zeros((0,), dtype=torch.long, device=box_scores.device)
    box_scores_nms, indices = torch.topk(box_scores, k=min(nms_config.NMS_PRE_MAXSIZE, box_scores.shape[0]))
    keep_idx, _ = _nms_fn(nms_config)(box_preds[indices][:, 0:7], box_scores_nms, nms_config.NMS_THRESH,
                                      **nms_config)
    return indices[keep_idx[:nms_config.NMS_POST_MAXSIZE]]


def class_agnostic_nms(box_scores, box_preds, nms_config, score_thresh=None):
    """
    Args:
        box_scores: (N,) float scores; box_preds: (N, 7+) LiDAR boxes; score_thresh: drop scores below it.
    Returns:
        selected (K,) long indices into the inputs, highest score first; their scores (K,).
    """
    src_box_scores = box_scores
    if score_thresh is not None:
        scores_mask = box_scores >= score_thresh
        box_scores, box_preds = box_scores[scores_mask], box_preds[scores_mask]
    selected = _topk_nms(box_scores, box_preds, nms_config)
    if score_thresh is not None:
        selected = scores_mask.nonzero().view(-1)[selected]
    return selected, src_box_scores[selected]


def multi_classes_nms(cls_scores, box_preds, nms_config, score_thresh=None):
    """
    Args:
        cls_scores: (N, C) float per-class scores; box_preds: (N, 7+).
    Returns:
        pred_scores (K,), pred_labels (K,) 0-based class index, pred_boxes (K, 7+); NMS per class.
    """
    pred_scores, pred_labels, pred_boxes = [], [], []
    for k in range(cls_scores.shape[1]):
        if score_thresh is not None:
            scores_mask = cls_scores[:, k] >= score_thresh
            box_scores, cur_box_preds = cls_scores[scores_mask, k], box_preds[scores_mask]
        else:
            box_scores, cur_box_preds = cls_scores[:, k], box_preds
        selected = _topk_nms(box_scores, cur_box_preds, nms_config)
        pred_scores.append(box_scores[selected])
        pred_labels.append(torch.full((len(selected),), k, dtype=torch.long, device=box_scores.device))
        pred_boxes.append(cur_box_preds[selected])
    return torch.cat(pred_scores, dim=0), torch.cat(pred_labels, dim=0), torch.cat(pred_boxes, dim=0)
