"""Rotated IoU and NMS of 3D boxes: ``iou3d_nms_utils`` (API), ``rotated_geometry`` (exact numba geometry).

The compiled CUDA extension ``iou3d_nms_cuda`` is imported lazily by ``iou3d_nms_utils``, never here.
"""
