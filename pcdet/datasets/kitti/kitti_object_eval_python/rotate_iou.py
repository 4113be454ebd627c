"""Rotated BEV overlap of KITTI camera boxes (OpenPCDet's ``rotate_iou_gpu_eval`` name, computed on the CPU).

OpenPCDet's version is numba.cuda only and returns 0-0.33 for identical boxes (its issue #972); this one uses
the exact float64 geometry shared with ``pcdet.ops.iou3d_nms`` and needs no GPU.
"""
import numpy as np

from pcdet.ops.iou3d_nms.rotated_geometry import bev_overlap_matrix


def camera_bev_to_geometry(boxes):
    """(N, 5) camera BEV boxes [x, z, l, w, ry] -> (N, 5) float64 [x, z, l, w, -ry] for ``rotated_geometry``.

    A rotation by ry about the camera's +y axis (pointing down) turns the (x, z) plane by -ry.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(f'rotate_iou.py: expected (N, 5) [x, z, l, w, ry] boxes, got shape {boxes.shape}')
    out = np.array(boxes, dtype=np.float64, order='C')
    out[:, 4] = -out[:, 4]
    return out


def rotate_iou_gpu_eval(boxes, query_boxes, criterion=-1, device_id=0):
    """Pairwise rotated overlap of camera BEV boxes.

    Args:
        boxes: (N, 5) [x, z, l, w, ry]; query_boxes: (K, 5); criterion: -1 IoU, 0 inter / area of boxes,
        1 inter / area of query_boxes; device_id: accepted for OpenPCDet compatibility, unused.
    Returns:
        (N, K) float64.
    """
    return bev_overlap_matrix(camera_bev_to_geometry(boxes), camera_bev_to_geometry(query_boxes), int(criterion))
