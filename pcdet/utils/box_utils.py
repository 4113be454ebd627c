"""3D box helpers (OpenPCDet names), numpy and torch on any device.

Frames and box encodings (fixed for the whole project):

- LiDAR boxes: (N, 7) [x, y, z, dx, dy, dz, heading]; (x, y, z) is the geometric centre, dx/dy/dz are
  length/width/height, heading is counter-clockwise from +x (x forward, y left, z up).
- KITTI camera (rect) boxes: (N, 7) [x, y, z, l, h, w, ry]; (x, y, z) is the bottom centre, camera frame
  x right, y down, z forward; ry is the rotation about +y, 0 when the object faces +x.
"""
import numpy as np
import torch

from . import common_utils


def boxes_to_corners_3d(boxes3d):
    """Eight corners of LiDAR boxes.

    Corner order (box frame: x along dx, y along dy, z up)::

            7 -------- 4
           /|         /|
          6 -------- 5 .
          | |        | |
          . 3 -------- 0
          |/         |/
          2 -------- 1

    0-3 are the bottom face, 4-7 the top face above them; 0, 1, 4, 5 are at +dx/2 (the front).

    Args:
        boxes3d: (N, 7 + C) ndarray or tensor [x, y, z, dx, dy, dz, heading, ...], LiDAR frame.
    Returns:
        corners3d: (N, 8, 3) of the same kind (numpy out is float32).
    """
    boxes3d, is_numpy = common_utils.check_numpy_to_torch(boxes3d)
    template = boxes3d.new_tensor((
        [1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1],
        [1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 1, 1],
    )) / 2
    corners3d = boxes3d[:, None, 3:6].repeat(1, 8, 1) * template[None, :, :]
    corners3d = common_utils.rotate_points_along_z(corners3d.view(-1, 8, 3), boxes3d[:, 6]).view(-1, 8, 3)
    corners3d += boxes3d[:, None, 0:3]
    return corners3d.numpy() if is_numpy else corners3d


def in_hull(points, hull_corners):
    """(N,) bool: which ``points`` (N, 3) lie in the convex hull of ``hull_corners`` (K, 3), boundary included.

    OpenPCDet counts ``num_points_in_gt`` of the KITTI infos this way (Delaunay of the 8 box corners, no
    margin), unlike the GT database crop (``points_in_boxes_cpu``, 1 cm margin on the box sides). A degenerate
    hull (a box of zero size) contains nothing.
    """
    from scipy.spatial import Delaunay, QhullError
    try:
        return Delaunay(np.asarray(hull_corners, dtype=np.float64)).find_simplex(
            np.asarray(points, dtype=np.float64)) >= 0
    except QhullError:
        return np.zeros(len(points), dtype=bool)


def mask_boxes_outside_range_numpy(boxes, limit_range, min_num_corners=1, use_center_to_filter=True):
    """Mask of boxes inside ``limit_range``.

    Args:
        boxes: (N, 7 + C) ndarray, LiDAR frame.
        limit_range: [x_min, y_min, z_min, x_max, y_max, z_max].
        min_num_corners: with ``use_center_to_filter=False``, how many BEV corners must lie inside (x, y).
        use_center_to_filter: keep a box when its centre is inside the 3D range (bounds inclusive).
    Returns:
        (N,) bool ndarray.
    """
    if boxes.shape[1] > 7:
        boxes = boxes[:, 0:7]
    limit_range = np.asarray(limit_range)
    if use_center_to_filter:
        centers = boxes[:, 0:3]
        return ((centers >= limit_range[0:3]) & (centers <= limit_range[3:6])).all(axis=-1)
    corners = boxes_to_corners_3d(boxes)[:, :, 0:2]  # (N, 8, 2)
    inside = ((corners >= limit_range[0:2]) & (corners <= limit_range[3:5])).all(axis=2)
    return inside.sum(axis=1) >= min_num_corners


def remove_points_in_boxes3d(points, boxes3d):
    """Drop the points that lie inside any box.

    Args:
        points: (N, 3 + C) ndarray or tensor, LiDAR frame.
        boxes3d: (M, 7) LiDAR boxes, same kind as ``points``.
    Returns:
        the points inside no box, same kind and dtype as ``points``.
    """
    # Imported here: the ops package may load a compiled extension and box_utils must stay importable without.
    from ..ops.roiaware_pool3d import roiaware_pool3d_utils

    point_masks = roiaware_pool3d_utils.points_in_boxes_cpu(points[:, 0:3], boxes3d)  # (M, N)
    if isinstance(points, np.ndarray):
        return points[np.asarray(point_masks).sum(axis=0) == 0]
    return points[point_masks.sum(dim=0) == 0]


def boxes3d_kitti_camera_to_lidar(boxes3d_camera, calib):
    """KITTI camera boxes -> LiDAR boxes.

    Args:
        boxes3d_camera: (N, 7) ndarray [x, y, z, l, h, w, ry], rect camera frame, bottom centre.
        calib: ``pcdet.utils.calibration_kitti.Calibration``.
    Returns:
        (N, 7) ndarray [x, y, z, dx, dy, dz, heading], LiDAR frame, geometric centre (dtype of the input).
    """
    boxes3d_camera = np.asarray(boxes3d_camera)
    xyz_camera, r = boxes3d_camera[:, 0:3], boxes3d_camera[:, 6:7]
    l, h, w = boxes3d_camera[:, 3:4], boxes3d_camera[:, 4:5], boxes3d_camera[:, 5:6]
    xyz_lidar = calib.rect_to_lidar(xyz_camera).astype(boxes3d_camera.dtype)
    xyz_lidar[:, 2] += h[:, 0] / 2  # bottom centre -> geometric centre (LiDAR z is up)
    # camera ry is measured from camera +x (LiDAR -y) about camera +y (LiDAR -z): heading = -(ry + pi/2)
    return np.concatenate([xyz_lidar, l, w, h, -(r + np.pi / 2)], axis=-1)


def boxes3d_lidar_to_kitti_camera(boxes3d_lidar, calib):
    """LiDAR boxes -> KITTI camera boxes; the exact inverse of ``boxes3d_kitti_camera_to_lidar``.

    Args:
        boxes3d_lidar: (N, 7 + C) ndarray [x, y, z, dx, dy, dz, heading], LiDAR frame.
        calib: ``Calibration``.
    Returns:
        (N, 7) ndarray [x, y, z, l, h, w, ry], rect camera frame, bottom centre.
    """
    boxes3d_lidar = np.asarray(boxes3d_lidar)
    xyz_lidar = boxes3d_lidar[:, 0:3].copy()
    l, w, h = boxes3d_lidar[:, 3:4], boxes3d_lidar[:, 4:5], boxes3d_lidar[:, 5:6]
    r = boxes3d_lidar[:, 6:7]
    xyz_lidar[:, 2] -= h[:, 0] / 2
    xyz_cam = calib.lidar_to_rect(xyz_lidar).astype(boxes3d_lidar.dtype)
    return np.concatenate([xyz_cam, l, h, w, -r - np.pi / 2], axis=-1)


def boxes3d_to_corners3d_kitti_camera(boxes3d, bottom_center=True):
    """Corners of KITTI camera boxes.

    Args:
        boxes3d: (N, 7) ndarray [x, y, z, l, h, w, ry], rect camera frame.
        bottom_center: (x, y, z) is the bottom centre (KITTI labels) rather than the geometric centre.
    Returns:
        (N, 8, 3) float32 ndarray; corners 0-3 at the bottom (larger camera y), 4-7 above them; in the box
        frame corners 0, 1, 4, 5 are at +l/2 and 0, 3, 4, 7 at +w/2.
    """
    boxes3d = np.asarray(boxes3d, dtype=np.float64)
    n = boxes3d.shape[0]
    l, h, w, ry = boxes3d[:, 3:4], boxes3d[:, 4:5], boxes3d[:, 5:6], boxes3d[:, 6]
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1], dtype=np.float64) / 2
    sz = np.array([1, -1, -1, 1, 1, -1, -1, 1], dtype=np.float64) / 2
    x_c, z_c = l * sx, w * sz  # (N, 8)
    if bottom_center:
        y_c = np.concatenate([np.zeros((n, 4)), -np.repeat(h, 4, axis=1)], axis=1)
    else:
        y_c = h * np.array([1, 1, 1, 1, -1, -1, -1, -1], dtype=np.float64) / 2
    # Rotation about camera +y by ry (column vectors): x' = x cos + z sin, z' = -x sin + z cos.
    cos, sin = np.cos(ry)[:, None], np.sin(ry)[:, None]
    x = x_c * cos + z_c * sin + boxes3d[:, 0:1]
    z = -x_c * sin + z_c * cos + boxes3d[:, 2:3]
    y = y_c + boxes3d[:, 1:2]
    return np.stack([x, y, z], axis=2).astype(np.float32)


def boxes3d_kitti_camera_to_imageboxes(boxes3d, calib, image_shape=None):
    """2D image boxes enclosing the projected corners of KITTI camera boxes.

    Args:
        boxes3d: (N, 7) ndarray [x, y, z, l, h, w, ry], rect camera frame.
        calib: ``Calibration``.
        image_shape: (H, W) to clip to, or None.
    Returns:
        (N, 4) ndarray [x1, y1, x2, y2] pixels.
    """
    corners3d = boxes3d_to_corners3d_kitti_camera(boxes3d)
    pts_img, _ = calib.rect_to_img(corners3d.reshape(-1, 3))
    corners_in_image = pts_img.reshape(-1, 8, 2)
    boxes2d = np.concatenate([corners_in_image.min(axis=1), corners_in_image.max(axis=1)], axis=1)
    if image_shape is not None:
        boxes2d[:, [0, 2]] = np.clip(boxes2d[:, [0, 2]], 0, image_shape[1] - 1)
        boxes2d[:, [1, 3]] = np.clip(boxes2d[:, [1, 3]], 0, image_shape[0] - 1)
    return boxes2d


def enlarge_box3d(boxes3d, extra_width=(0, 0, 0)):
    """Copy of ``boxes3d`` (N, 7 + C) with ``extra_width`` (3,) added to dx, dy, dz; numpy or tensor."""
    if isinstance(boxes3d, np.ndarray):
        large = boxes3d.copy()
        large[:, 3:6] += np.asarray(extra_width, dtype=boxes3d.dtype)[None, :]
        return large
    large = boxes3d.clone()
    large[:, 3:6] += boxes3d.new_tensor(extra_width)[None, :]
    return large


def boxes3d_lidar_to_aligned_bev_boxes(boxes3d):
    """Axis-aligned BEV boxes approximating rotated LiDAR boxes.

    A box whose heading is nearer to +-pi/2 than to 0 / pi gets dx and dy swapped.

    Args:
        boxes3d: (N, 7 + C) tensor or ndarray, LiDAR frame.
    Returns:
        (N, 4) [x1, y1, x2, y2] of the same kind.
    """
    boxes3d, is_numpy = common_utils.check_numpy_to_torch(boxes3d)
    rot_angle = common_utils.limit_period(boxes3d[:, 6], offset=0.5, period=np.pi).abs()
    choose_dims = torch.where(rot_angle[:, None] < np.pi / 4, boxes3d[:, [3, 4]], boxes3d[:, [4, 3]])
    aligned = torch.cat((boxes3d[:, 0:2] - choose_dims / 2, boxes3d[:, 0:2] + choose_dims / 2), dim=1)
    return aligned.numpy() if is_numpy else aligned


def boxes3d_nearest_bev_iou(boxes_a, boxes_b):
    """IoU of the nearest axis-aligned BEV boxes of (N, 7) and (M, 7) LiDAR boxes -> (N, M)."""
    boxes_bev_a = boxes3d_lidar_to_aligned_bev_boxes(boxes_a)
    boxes_bev_b = boxes3d_lidar_to_aligned_bev_boxes(boxes_b)
    return boxes_iou_normal(boxes_bev_a, boxes_bev_b)


def boxes_iou_normal(boxes_a, boxes_b):
    """IoU of axis-aligned 2D boxes.

    Args:
        boxes_a: (N, 4) [x1, y1, x2, y2] tensor or ndarray; boxes_b: (M, 4), same kind.
    Returns:
        (N, M) IoU, same kind.
    """
    assert boxes_a.shape[1] == boxes_b.shape[1] == 4, f'expected (N, 4) boxes, got {boxes_a.shape}, {boxes_b.shape}'
    boxes_a, is_numpy = common_utils.check_numpy_to_torch(boxes_a)
    boxes_b, _ = common_utils.check_numpy_to_torch(boxes_b)
    x_min = torch.max(boxes_a[:, 0, None], boxes_b[None, :, 0])
    x_max = torch.min(boxes_a[:, 2, None], boxes_b[None, :, 2])
    y_min = torch.max(boxes_a[:, 1, None], boxes_b[None, :, 1])
    y_max = torch.min(boxes_a[:, 3, None], boxes_b[None, :, 3])
    inter = torch.clamp_min(x_max - x_min, 0) * torch.clamp_min(y_max - y_min, 0)
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    iou = inter / torch.clamp_min(area_a[:, None] + area_b[None, :] - inter, min=1e-6)
    return iou.numpy() if is_numpy else iou
