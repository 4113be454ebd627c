"""Rotated BEV / 3D IoU and NMS of LiDAR boxes (OpenPCDet's ``iou3d_nms_utils`` API), on any device.

Boxes are LiDAR ``(N, 7) [x, y, z, dx, dy, dz, heading]`` (geometric centre, heading counter-clockwise from +x).
CPU tensors (and numpy arrays) use the exact float64 numba geometry of ``rotated_geometry``; CUDA tensors use the
compiled extension ``pcdet.ops.iou3d_nms.iou3d_nms_cuda`` (loaded on first use, never at import). Both give
IoU 1 for identical boxes and suppress in NMS when IoU is strictly greater than the threshold.
"""
import numpy as np
import torch

from . import rotated_geometry as geom


def _cuda_ext():
    """The compiled extension, imported lazily with a clear error when it is not built."""
    from ..build_utils import load_cuda_ext
    return load_cuda_ext('iou3d_nms')


def _check_boxes(boxes, name):
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise ValueError(f'iou3d_nms_utils.py: {name} must have shape (N, 7) [x, y, z, dx, dy, dz, heading], '
                         f'got {tuple(boxes.shape)}')


def _bev_numpy(boxes):
    """(N, 7+) LiDAR boxes (numpy) -> (N, 5) float64 [x, y, dx, dy, heading], contiguous."""
    return np.ascontiguousarray(np.asarray(boxes)[:, [0, 1, 3, 4, 6]], dtype=np.float64)


def _to_numpy64(t):
    return t.detach().cpu().numpy().astype(np.float64)


def boxes_bev_iou_cpu(boxes_a, boxes_b):
    """Rotated BEV IoU on the CPU.

    Args:
        boxes_a: (N, 7) LiDAR boxes, numpy array or CPU tensor; boxes_b: (M, 7) of the same kind.
    Returns:
        (N, M) IoU of the same kind (numpy: float64 for float64 input, else float32; torch: float32 like OpenPCDet).
    """
    is_numpy = isinstance(boxes_a, np.ndarray)
    if is_numpy != isinstance(boxes_b, np.ndarray):
        raise TypeError('iou3d_nms_utils.py: boxes_a and boxes_b must both be numpy arrays or both tensors')
    _check_boxes(boxes_a, 'boxes_a')
    _check_boxes(boxes_b, 'boxes_b')
    if is_numpy:
        iou = geom.bev_overlap_matrix(_bev_numpy(boxes_a), _bev_numpy(boxes_b), -1)
        return iou if boxes_a.dtype == np.float64 else iou.astype(np.float32)
    if boxes_a.is_cuda or boxes_b.is_cuda:
        raise ValueError('iou3d_nms_utils.py: boxes_bev_iou_cpu takes CPU tensors; use boxes_iou_bev for CUDA')
    iou = geom.bev_overlap_matrix(_bev_numpy(_to_numpy64(boxes_a)), _bev_numpy(_to_numpy64(boxes_b)), -1)
    return torch.from_numpy(iou.astype(np.float32))


def boxes_iou_bev(boxes_a, boxes_b):
    """Rotated BEV IoU of tensors on any device.

    Args:
        boxes_a: (N, 7) tensor; boxes_b: (M, 7) tensor on the same device.
    Returns:
        (N, M) float32 tensor on that device.
    """
    _check_boxes(boxes_a, 'boxes_a')
    _check_boxes(boxes_b, 'boxes_b')
    if not boxes_a.is_cuda:
        return boxes_bev_iou_cpu(boxes_a, boxes_b).to(boxes_a.device)
    ans = boxes_a.new_zeros((boxes_a.shape[0], boxes_b.shape[0]), dtype=torch.float32)
    _cuda_ext().boxes_iou_bev_gpu(boxes_a[:, :7].float().contiguous(), boxes_b[:, :7].float().contiguous(), ans)
    return ans


def boxes_iou3d_gpu(boxes_a, boxes_b):
    """Rotated 3D IoU of tensors on any device (the name is OpenPCDet's; CPU tensors work too).

    Args:
        boxes_a: (N, 7) tensor; boxes_b: (M, 7) tensor on the same device.
    Returns:
        (N, M) float32 tensor: rotated BEV intersection x vertical overlap / union volume.
    """
    _check_boxes(boxes_a, 'boxes_a')
    _check_boxes(boxes_b, 'boxes_b')
    if not boxes_a.is_cuda:
        a = _to_numpy64(boxes_a)
        b = _to_numpy64(boxes_b)
        iou = geom.iou3d_matrix(_bev_numpy(a), a[:, 2] - 0.5 * a[:, 5], a[:, 2] + 0.5 * a[:, 5],
                                _bev_numpy(b), b[:, 2] - 0.5 * b[:, 5], b[:, 2] + 0.5 * b[:, 5])
        return torch.from_numpy(iou.astype(np.float32)).to(boxes_a.device)
    ans = boxes_a.new_zeros((boxes_a.shape[0], boxes_b.shape[0]), dtype=torch.float32)
    _cuda_ext().boxes_iou3d_gpu(boxes_a[:, :7].float().contiguous(), boxes_b[:, :7].float().contiguous(), ans)
    return ans


def _sorted_order(scores, pre_maxsize):
    # stable: equal scores keep their input order, so results are deterministic on every device
    order = torch.sort(scores, descending=True, stable=True)[1]
    if pre_maxsize is not None:
        order = order[:pre_maxsize]
    return order


def _nms(boxes, scores, thresh, pre_maxsize, rotated):
    _check_boxes(boxes, 'boxes')
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f'iou3d_nms_utils.py: scores must have shape ({boxes.shape[0]},), got {tuple(scores.shape)}')
    order = _sorted_order(scores, pre_maxsize)
    if order.numel() == 0:
        return order.new_zeros((0,), dtype=torch.long)
    sorted_boxes = boxes[order, :7]
    if not boxes.is_cuda:
        bev = _bev_numpy(_to_numpy64(sorted_boxes))
        fn = geom.nms_rotated_sorted if rotated else geom.nms_aligned_sorted
        keep = torch.from_numpy(fn(bev, float(thresh))).to(order.device)
        return order[keep].contiguous()
    ext = _cuda_ext()
    keep = torch.zeros(order.numel(), dtype=torch.long)  # host buffer, filled by the binding
    fn = ext.nms_gpu if rotated else ext.nms_normal_gpu
    num_out = fn(sorted_boxes.float().contiguous(), keep, float(thresh))
    return order[keep[:num_out].to(order.device)].contiguous()


def nms_gpu(boxes, scores, thresh, pre_maxsize=None, **kwargs):
    """Rotated BEV NMS (any device; the name is OpenPCDet's).

    Args:
        boxes: (N, 7) LiDAR boxes; scores: (N,); thresh: suppress when IoU > thresh;
        pre_maxsize: keep only the top-scored boxes before NMS. Extra kwargs are accepted and ignored (OpenPCDet
        passes e.g. ``post_max_size`` through its config).
    Returns:
        (keep, None): keep is a LongTensor of indices into the input, highest score first (ties: lower index first).
    """
    return _nms(boxes, scores, thresh, pre_maxsize, rotated=True), None


def nms_normal_gpu(boxes, scores, thresh, pre_maxsize=None, **kwargs):
    """Axis-aligned BEV NMS (heading ignored); arguments and return value as ``nms_gpu``."""
    return _nms(boxes, scores, thresh, pre_maxsize, rotated=False), None
