"""Whole-scene augmentations of points and LiDAR boxes (OpenPCDet names).

Frames: points ``(N, 3 + C)`` float32 ``[x, y, z, ...]`` and boxes ``(M, 7 + C)`` float32
``[x, y, z, dx, dy, dz, heading, ...]`` are both in the LiDAR frame (x forward, y left, z up). Each function
changes points and boxes with the same rigid transform (or scaling), so a point inside a box before stays inside
the transformed box. Random draws use numpy's global generator, so a seeded run is reproducible.

Each function returns ``(gt_boxes, points, param)`` where ``param`` is the drawn parameter (flip flag, angle or
scale) and ``aug_matrix (3, 3)`` float64, the linear map it applied to the point coordinates (column vectors,
``p_new = aug_matrix @ p``), which ``DataAugmentor`` composes into ``lidar_aug_matrix``.
"""
import numpy as np

from ...utils import common_utils


def random_flip_along_x(gt_boxes, points, enable=None):
    """Mirror the scene in the x-z plane (y -> -y, heading -> -heading) with probability 0.5.

    Returns:
        gt_boxes, points (new arrays), enable (bool), aug_matrix (3, 3).
    """
    if enable is None:
        enable = bool(np.random.choice([False, True], replace=False, p=[0.5, 0.5]))
    gt_boxes, points = gt_boxes.copy(), points.copy()
    mat = np.eye(3)
    if enable:
        gt_boxes[:, 1] = -gt_boxes[:, 1]
        gt_boxes[:, 6] = -gt_boxes[:, 6]
        points[:, 1] = -points[:, 1]
        mat[1, 1] = -1
        if gt_boxes.shape[1] > 8:  # velocity (vx, vy) columns, when present
            gt_boxes[:, 8] = -gt_boxes[:, 8]
    return gt_boxes, points, enable, mat


def random_flip_along_y(gt_boxes, points, enable=None):
    """Mirror the scene in the y-z plane (x -> -x, heading -> pi - heading) with probability 0.5.

    Returns:
        gt_boxes, points (new arrays), enable (bool), aug_matrix (3, 3).
    """
    if enable is None:
        enable = bool(np.random.choice([False, True], replace=False, p=[0.5, 0.5]))
    gt_boxes, points = gt_boxes.copy(), points.copy()
    mat = np.eye(3)
    if enable:
        gt_boxes[:, 0] = -gt_boxes[:, 0]
        gt_boxes[:, 6] = -(gt_boxes[:, 6] + np.pi)
        points[:, 0] = -points[:, 0]
        mat[0, 0] = -1
        if gt_boxes.shape[1] > 8:
            gt_boxes[:, 7] = -gt_boxes[:, 7]
    return gt_boxes, points, enable, mat


def global_rotation(gt_boxes, points, rot_range, noise_rotation=None):
    """Rotate the scene about the LiDAR z axis by an angle drawn uniformly from ``rot_range`` (radians).

    Returns:
        gt_boxes, points (new arrays), noise_rotation (float, counter-clockwise), aug_matrix (3, 3).
    """
    if noise_rotation is None:
        noise_rotation = float(np.random.uniform(rot_range[0], rot_range[1]))
    angle = np.array([noise_rotation])
    points = points.copy()
    gt_boxes = gt_boxes.copy()
    points[:, 0:3] = common_utils.rotate_points_along_z(points[np.newaxis, :, 0:3], angle)[0]
    gt_boxes[:, 0:3] = common_utils.rotate_points_along_z(gt_boxes[np.newaxis, :, 0:3], angle)[0]
    gt_boxes[:, 6] += noise_rotation
    if gt_boxes.shape[1] > 8:
        vel = np.hstack((gt_boxes[:, 7:9], np.zeros((gt_boxes.shape[0], 1), dtype=gt_boxes.dtype)))
        gt_boxes[:, 7:9] = common_utils.rotate_points_along_z(vel[np.newaxis], angle)[0][:, 0:2]
    c, s = np.cos(noise_rotation), np.sin(noise_rotation)
    mat = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return gt_boxes, points, noise_rotation, mat


def global_scaling(gt_boxes, points, scale_range, noise_scale=None):
    """Scale coordinates and box sizes by a factor drawn uniformly from ``scale_range``.

    A range narrower than 1e-3 is a no-op (scale 1), as in OpenPCDet.

    Returns:
        gt_boxes, points (new arrays), noise_scale (float), aug_matrix (3, 3).
    """
    if noise_scale is None:
        if scale_range[1] - scale_range[0] < 1e-3:
            noise_scale = 1.0
        else:
            noise_scale = float(np.random.uniform(scale_range[0], scale_range[1]))
    points = points.copy()
    gt_boxes = gt_boxes.copy()
    points[:, 0:3] *= noise_scale
    gt_boxes[:, 0:6] *= noise_scale
    if gt_boxes.shape[1] > 8:
        gt_boxes[:, 7:9] *= noise_scale
    return gt_boxes, points, noise_scale, np.eye(3) * noise_scale
