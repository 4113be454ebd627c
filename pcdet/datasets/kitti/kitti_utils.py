"""KITTI file readers and annotation dicts used by ``KittiDataset`` (frames as in ``box_utils``).

- velodyne ``*.bin``: float32 (N, 4) [x, y, z, reflectance], LiDAR frame;
- ``planes/*.txt``: road plane [a, b, c, d] in the rect camera frame on line index 3;
- ``image_2/*.png``: only the size is read (from the PNG header, without decoding the image).
"""
import os
import struct

import numpy as np

from ...utils import box_utils

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def read_points_bin(path, num_features=4):
    """Load a velodyne scan as float32 (N, num_features); errors name the file."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'point cloud file not found: {path}')
    size = os.path.getsize(path)
    row_bytes = 4 * num_features
    if size % row_bytes != 0:
        raise ValueError(f'{path}: size {size} bytes is not a multiple of {row_bytes} '
                         f'({num_features} float32 values per point); the file is truncated or not a KITTI scan')
    return np.fromfile(path, dtype=np.float32).reshape(-1, num_features)


def read_image_shape(path):
    """(H, W) int32 of an image; PNG sizes come from the IHDR header, other formats are decoded (skimage)."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'image file not found (needed for the image shape / FOV filter): {path}')
    with open(path, 'rb') as f:
        head = f.read(24)
    if head[:8] == PNG_SIGNATURE and head[12:16] == b'IHDR':
        width, height = struct.unpack('>II', head[16:24])
        return np.array([height, width], dtype=np.int32)
    from skimage import io  # only for non-PNG images

    return np.array(io.imread(path).shape[:2], dtype=np.int32)


def read_road_plane(path):
    """Road plane (4,) float32 [a, b, c, d] (rect camera frame, unit normal pointing up, i.e. b < 0), or None when
    the file does not exist."""
    path = str(path)
    if not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        lines = f.readlines()
    try:
        plane = np.asarray([float(v) for v in lines[3].split()], dtype=np.float64)
    except (IndexError, ValueError):
        raise ValueError(f'{path}:4: expected the plane "a b c d" on line 4') from None
    if plane.shape != (4,):
        raise ValueError(f'{path}:4: expected 4 plane coefficients, got {plane.size}')
    if plane[1] > 0:  # camera y points down: make the normal point up
        plane = -plane
    norm = np.linalg.norm(plane[0:3])
    if norm == 0:
        raise ValueError(f'{path}:4: plane normal is zero')
    return (plane / norm).astype(np.float32)


def get_fov_flag(pts_rect, img_shape, calib):
    """(N,) bool: rect-camera points in front of the camera that project inside the image (H, W)."""
    pts_img, pts_rect_depth = calib.rect_to_img(pts_rect)
    in_u = np.logical_and(pts_img[:, 0] >= 0, pts_img[:, 0] < img_shape[1])
    in_v = np.logical_and(pts_img[:, 1] >= 0, pts_img[:, 1] < img_shape[0])
    return np.logical_and(np.logical_and(in_u, in_v), pts_rect_depth >= 0)


def calib_to_info(calib):
    """Info-style calib dict: 'P2', 'R0_rect', 'Tr_velo_to_cam', each padded to (4, 4) float64."""
    bottom = np.array([[0., 0., 0., 1.]])
    r0_4x4 = np.zeros((4, 4), dtype=np.float64)
    r0_4x4[3, 3] = 1.
    r0_4x4[:3, :3] = calib.R0
    return {'P2': np.concatenate([calib.P2, bottom], axis=0), 'R0_rect': r0_4x4,
            'Tr_velo_to_cam': np.concatenate([calib.V2C, bottom], axis=0)}


def objects_to_annos(obj_list, calib):
    """KITTI label objects -> OpenPCDet ``annos`` dict (without ``num_points_in_gt``).

    DontCare objects are moved after the others (stable), as KITTI files already have them. Arrays over all
    N objects: name, truncated, occluded, alpha, bbox (N, 4), dimensions (N, 3) [l, h, w], location (N, 3)
    camera bottom centre, rotation_y, score, difficulty int32, index int32 (-1 for DontCare); over the n_obj
    non-DontCare objects: gt_boxes_lidar (n_obj, 7) float32 LiDAR.
    """
    obj_list = [o for o in obj_list if o.cls_type != 'DontCare'] + [o for o in obj_list if o.cls_type == 'DontCare']
    num_objects = sum(o.cls_type != 'DontCare' for o in obj_list)
    num_gt = len(obj_list)
    annos = {
        'name': np.array([o.cls_type for o in obj_list], dtype=str),
        'truncated': np.array([o.truncation for o in obj_list], dtype=np.float64),
        'occluded': np.array([o.occlusion for o in obj_list], dtype=np.float64),
        'alpha': np.array([o.alpha for o in obj_list], dtype=np.float64),
        'bbox': np.array([o.box2d for o in obj_list], dtype=np.float32).reshape(num_gt, 4),
        'dimensions': np.array([[o.l, o.h, o.w] for o in obj_list], dtype=np.float64).reshape(num_gt, 3),
        'location': np.array([o.loc for o in obj_list], dtype=np.float32).reshape(num_gt, 3),
        'rotation_y': np.array([o.ry for o in obj_list], dtype=np.float64),
        'score': np.array([o.score for o in obj_list], dtype=np.float64),
        'difficulty': np.array([o.level for o in obj_list], dtype=np.int32),
        'index': np.array(list(range(num_objects)) + [-1] * (num_gt - num_objects), dtype=np.int32),
    }
    boxes_camera = np.concatenate([annos['location'][:num_objects], annos['dimensions'][:num_objects],
                                   annos['rotation_y'][:num_objects, None]], axis=1).astype(np.float32)
    annos['gt_boxes_lidar'] = box_utils.boxes3d_kitti_camera_to_lidar(boxes_camera, calib).astype(np.float32) \
        if num_objects > 0 else np.zeros((0, 7), dtype=np.float32)
    return annos


def empty_prediction_dict(num_samples):
    """Template of one frame's KITTI-format prediction (``generate_prediction_dicts``)."""
    return {
        'name': np.zeros(num_samples, dtype='<U16'), 'truncated': np.zeros(num_samples),
        'occluded': np.zeros(num_samples), 'alpha': np.zeros(num_samples), 'bbox': np.zeros([num_samples, 4]),
        'dimensions': np.zeros([num_samples, 3]), 'location': np.zeros([num_samples, 3]),
        'rotation_y': np.zeros(num_samples), 'score': np.zeros(num_samples), 'boxes_lidar': np.zeros([num_samples, 7]),
    }


def _to_numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, 'detach') else np.asarray(x)


def predictions_to_kitti(box_dict, calib, image_shape, class_names):
    """One frame's model output -> KITTI annos dict.

    Args:
        box_dict: ``pred_boxes`` (K, 7) LiDAR, ``pred_scores`` (K,), ``pred_labels`` (K,) 1-based (tensors or numpy).
        calib: ``Calibration``; image_shape: (H, W) for clipping the 2D boxes.
    Returns:
        dict with name, truncated, occluded, alpha, bbox (K, 4), dimensions (K, 3) [l, h, w], location (K, 3)
        camera bottom centre, rotation_y, score, boxes_lidar (K, 7).
    """
    pred_scores = _to_numpy(box_dict['pred_scores'])
    pred_boxes = _to_numpy(box_dict['pred_boxes'])
    pred_labels = _to_numpy(box_dict['pred_labels']).astype(np.int64)
    pred_dict = empty_prediction_dict(pred_scores.shape[0])
    if pred_scores.shape[0] == 0:
        return pred_dict
    boxes_camera = box_utils.boxes3d_lidar_to_kitti_camera(pred_boxes, calib)
    boxes_img = box_utils.boxes3d_kitti_camera_to_imageboxes(boxes_camera, calib, image_shape=image_shape)
    pred_dict['name'] = np.array(class_names)[pred_labels - 1]
    pred_dict['alpha'] = -np.arctan2(-pred_boxes[:, 1], pred_boxes[:, 0]) + boxes_camera[:, 6]
    pred_dict['bbox'] = boxes_img
    pred_dict['dimensions'] = boxes_camera[:, 3:6]
    pred_dict['location'] = boxes_camera[:, 0:3]
    pred_dict['rotation_y'] = boxes_camera[:, 6]
    pred_dict['score'] = pred_scores
    pred_dict['boxes_lidar'] = pred_boxes
    return pred_dict


def write_kitti_result(path, pred_dict):
    """Write one frame's predictions as KITTI result lines
    ``name -1 -1 alpha x1 y1 x2 y2 h w l x y z ry score``."""
    bbox, loc, dims = pred_dict['bbox'], pred_dict['location'], pred_dict['dimensions']  # dims are l, h, w
    with open(path, 'w', encoding='utf-8') as f:
        for i in range(len(bbox)):
            f.write('%s -1 -1 %.4f %.4f %.4f %.4f %.4f %.4f %.4f %.4f %.4f %.4f %.4f %.4f %.4f\n' % (
                pred_dict['name'][i], pred_dict['alpha'][i], bbox[i][0], bbox[i][1], bbox[i][2], bbox[i][3],
                dims[i][1], dims[i][2], dims[i][0], loc[i][0], loc[i][1], loc[i][2],
                pred_dict['rotation_y'][i], pred_dict['score'][i]))
