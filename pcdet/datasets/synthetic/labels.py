"""KITTI calibration, label and road-plane files of the synthetic set.

The calibration is a fixed real one (KITTI training frame 000001, 2011_09_26 drives, focal 721.5 px), written
byte-for-byte in KITTI's text format. Labels are computed as KITTI defines them: rect-camera boxes (bottom
centre), 2D boxes from projecting the 8 corners with P2 and clipping to the 1242x375 image, truncation = the
fraction of the projected box outside the image, occlusion level from the fraction of the object's LiDAR rays
blocked by other entities, alpha = ry - arctan2(x_cam, z_cam), DontCare for far or tiny objects. Only objects in
the camera view are written.
"""
import numpy as np

from ...utils import box_utils
from ...utils.calibration_kitti import Calibration

IMAGE_SHAPE = (375, 1242)  # (H, W) of image_2
CALIB_TEXT = """\
P0: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 0.000000000000e+00 0.000000000000e+00 \
7.215377000000e+02 1.728540000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 \
1.000000000000e+00 0.000000000000e+00
P1: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 -3.875744000000e+02 0.000000000000e+00 \
7.215377000000e+02 1.728540000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 \
1.000000000000e+00 0.000000000000e+00
P2: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 4.485728000000e+01 0.000000000000e+00 \
7.215377000000e+02 1.728540000000e+02 2.163791000000e-01 0.000000000000e+00 0.000000000000e+00 \
1.000000000000e+00 2.745884000000e-03
P3: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 -3.395242000000e+02 0.000000000000e+00 \
7.215377000000e+02 1.728540000000e+02 2.199936000000e+00 0.000000000000e+00 0.000000000000e+00 \
1.000000000000e+00 2.729905000000e-03
R0_rect: 9.999239000000e-01 9.837760000000e-03 -7.445048000000e-03 -9.869795000000e-03 9.999421000000e-01 \
-4.278459000000e-03 7.402527000000e-03 4.351614000000e-03 9.999631000000e-01
Tr_velo_to_cam: 7.533745000000e-03 -9.999714000000e-01 -6.166020000000e-04 -4.069766000000e-03 \
1.480249000000e-02 7.280733000000e-04 -9.998902000000e-01 -7.631618000000e-02 9.998621000000e-01 \
7.523790000000e-03 1.480755000000e-02 -2.717806000000e-01
Tr_imu_to_velo: 9.999976000000e-01 7.553071000000e-04 -2.035826000000e-03 -8.086759000000e-01 \
-7.854027000000e-04 9.998898000000e-01 -1.482298000000e-02 3.195559000000e-01 2.024406000000e-03 \
1.482454000000e-02 9.998881000000e-01 -7.997231000000e-01

"""
MAX_LABEL_DISTANCE = 70.0  # metres; farther objects in view become DontCare
MIN_BOX_HEIGHT = 12.0  # px; smaller objects in view become DontCare


def kitti_calibration():
    """The fixed ``Calibration`` of the synthetic set (parsed from ``CALIB_TEXT``)."""
    mats = {}
    for line in CALIB_TEXT.strip().splitlines():
        name, values = line.split(':', 1)
        mats[name] = np.array([float(v) for v in values.split()], dtype=np.float64)
    return Calibration({'P2': mats['P2'].reshape(3, 4), 'R0': mats['R0_rect'].reshape(3, 3),
                        'Tr_velo2cam': mats['Tr_velo_to_cam'].reshape(3, 4)})


def occlusion_level(would_rays, visible_rays):
    """KITTI occlusion level from ray counts: 0 fully visible, 1 partly, 2 largely occluded, 3 unknown.

    ``would_rays`` rays reach the object when nothing else is in the way, ``visible_rays`` of them do reach it
    (their first hit is on it). No ray at all (too far or too small for the beams) is 'unknown'.
    """
    if would_rays <= 0:
        return 3
    blocked = 1.0 - visible_rays / would_rays
    return 0 if blocked < 0.15 else (1 if blocked < 0.55 else 2)


def _project_boxes(corners_rect, calib):
    """(N, 8, 3) rect corners -> unclipped (N, 4) [x1, y1, x2, y2] pixel boxes (corners behind the camera are
    pulled to 0.1 m depth so they project far outside the image, as a truncated object should)."""
    c = corners_rect.astype(np.float64).copy()
    c[..., 2] = np.maximum(c[..., 2], 0.1)
    hom = np.concatenate([c, np.ones(c.shape[:2] + (1,))], axis=2) @ calib.P2.T
    u, v = hom[..., 0] / hom[..., 2], hom[..., 1] / hom[..., 2]
    return np.stack([u.min(1), v.min(1), u.max(1), v.max(1)], axis=1)


def compute_labels(scene, stats, calib, image_shape=IMAGE_SHAPE):
    """KITTI label records of the labelled entities of ``scene`` that are in the camera view.

    Args:
        scene: ``scene.Scene``; stats: dict from ``sensor.simulate_scan``; calib: ``Calibration``.
    Returns:
        list of dicts (objects first, DontCare last) with keys name, truncated, occluded, alpha, bbox (4,),
        dimensions (3,) [h, w, l], location (3,) rect bottom centre, rotation_y, entity (id), num_points.
    """
    ids, boxes, names = scene.label_boxes()
    if len(ids) == 0:
        return []
    cam = box_utils.boxes3d_lidar_to_kitti_camera(boxes, calib)  # (N, 7) [x, y, z, l, h, w, ry]
    corners = box_utils.boxes3d_to_corners3d_kitti_camera(cam)
    full = _project_boxes(corners, calib)
    h_img, w_img = image_shape
    clipped = full.copy()
    clipped[:, [0, 2]] = np.clip(full[:, [0, 2]], 0, w_img - 1)
    clipped[:, [1, 3]] = np.clip(full[:, [1, 3]], 0, h_img - 1)
    area_full = (full[:, 2] - full[:, 0]) * (full[:, 3] - full[:, 1])
    area_clip = np.maximum(clipped[:, 2] - clipped[:, 0], 0) * np.maximum(clipped[:, 3] - clipped[:, 1], 0)
    objects, dontcare = [], []
    for k, eid in enumerate(ids):
        centre_z = cam[k, 2]
        if centre_z <= 0.5 or area_clip[k] < 1.0:
            continue  # behind the camera or outside the image
        truncated = float(np.clip(1.0 - area_clip[k] / max(area_full[k], 1e-9), 0.0, 1.0))
        if truncated > 0.9:
            continue
        would, visible = int(stats['would_rays'][eid]), int(stats['visible_rays'][eid])
        if would > 0 and visible == 0:
            continue  # completely hidden: an annotator would not see it either
        distance = float(np.hypot(boxes[k, 0], boxes[k, 1]))
        height_px = clipped[k, 3] - clipped[k, 1]
        if distance > MAX_LABEL_DISTANCE or height_px < MIN_BOX_HEIGHT:
            dontcare.append({'name': 'DontCare', 'truncated': -1.0, 'occluded': -1, 'alpha': -10.0,
                             'bbox': clipped[k], 'dimensions': np.array([-1.0, -1.0, -1.0]),
                             'location': np.array([-1000.0, -1000.0, -1000.0]), 'rotation_y': -10.0,
                             'entity': int(eid), 'num_points': int(stats['num_points'][eid])})
            continue
        ry = float(_wrap(cam[k, 6]))
        objects.append({
            'name': names[k], 'truncated': truncated, 'occluded': occlusion_level(would, visible),
            'alpha': float(_wrap(ry - np.arctan2(cam[k, 0], cam[k, 2]))), 'bbox': clipped[k],
            'dimensions': np.array([cam[k, 4], cam[k, 5], cam[k, 3]]), 'location': cam[k, 0:3].copy(),
            'rotation_y': ry, 'entity': int(eid), 'num_points': int(stats['num_points'][eid]),
        })
    return objects + dontcare


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


def format_label_lines(records):
    """KITTI ``label_2`` text (15 fields per line, 2 decimals like the KITTI release) of ``compute_labels``."""
    lines = []
    for r in records:
        b, d, loc = r['bbox'], r['dimensions'], r['location']
        lines.append(f"{r['name']} {r['truncated']:.2f} {int(r['occluded'])} {r['alpha']:.2f} "
                     f"{b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f} {d[0]:.2f} {d[1]:.2f} {d[2]:.2f} "
                     f"{loc[0]:.2f} {loc[1]:.2f} {loc[2]:.2f} {r['rotation_y']:.2f}")
    return ''.join(line + '\n' for line in lines)


def road_plane_text(scene, calib):
    """KITTI ``planes/*.txt``: the ground plane (a, b, c, d), a x + b y + c z + d = 0 in the rect camera frame.

    The LiDAR ground ``z = -h + gx x + gy y`` has normal (-gx, -gy, 1) and offset h; with p_rect = A p_lidar + t
    the rect normal is A^-T n and the offset h - n_rect . t. Normalised; the normal points up (camera -y) like
    KITTI's.
    """
    h, gx, gy = scene.ground
    lidar_to_rect = calib.R0 @ calib.V2C  # (3, 4)
    a_mat, t = lidar_to_rect[:, :3], lidar_to_rect[:, 3]
    n_rect = np.linalg.solve(a_mat.T, np.array([-gx, -gy, 1.0]))
    d = h - n_rect @ t
    plane = np.append(n_rect, d) / np.linalg.norm(n_rect)
    return '# Matrix\nWIDTH 4\nHEIGHT 1\n' + ' '.join(f'{v:e}' for v in plane) + ' \n'
