"""KITTI calibration: LiDAR <-> rectified camera <-> image-2 pixel transforms (OpenPCDet names).

Frames: LiDAR (x forward, y left, z up); rect camera (x right, y down, z forward, after R0_rect); image
pixels (u right, v down) of the left colour camera (P2).

Computation is done in float64 from the matrices as written in the file; outputs keep float32 when the input
points are float32 (as velodyne points are), so the numbers match OpenPCDet's while round trips stay exact
to float32 precision.
"""
import numpy as np

# Accepted spellings of each matrix in a calib file (object benchmark first, tracking benchmark second).
_CALIB_KEYS = {
    'P2': (('P2',), 12),
    'R0': (('R0_rect', 'R_rect'), 9),
    'Tr_velo2cam': (('Tr_velo_to_cam', 'Tr_velo_cam'), 12),
}


def get_calib_from_file(calib_file):
    """Parse a KITTI calib txt file.

    Returns:
        dict with 'P2' (3, 4), 'R0' (3, 3), 'Tr_velo2cam' (3, 4) float64 ndarrays, plus 'P3' (3, 4) when present.
    Raises:
        FileNotFoundError / ValueError naming the file (and line) when it is missing or malformed.
    """
    try:
        with open(calib_file, encoding='utf-8') as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise FileNotFoundError(f'calibration file not found: {calib_file}') from None

    entries = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if ':' not in line:
            raise ValueError(f'{calib_file}:{lineno}: expected "NAME: v1 v2 ...", got {line.strip()[:60]!r}')
        name, values = line.split(':', 1)
        try:
            entries[name.strip()] = (lineno, np.array([float(v) for v in values.split()], dtype=np.float64))
        except ValueError:
            raise ValueError(f'{calib_file}:{lineno}: non-numeric value in {name.strip()}') from None

    calib = {}
    wanted = dict(_CALIB_KEYS, P3=(('P3',), 12))
    for out_key, (names, size) in wanted.items():
        found = [n for n in names if n in entries]
        if not found:
            if out_key == 'P3':
                continue
            raise ValueError(f'{calib_file}: missing {names[0]} (have {sorted(entries)})')
        lineno, values = entries[found[0]]
        if values.size != size:
            raise ValueError(f'{calib_file}:{lineno}: {found[0]} has {values.size} values, expected {size}')
        calib[out_key] = values.reshape(3, 3) if size == 9 else values.reshape(3, 4)
    return calib


def _as_matrix(value, rows, cols, name):
    """Accept (rows, cols) or a padded 4x4 (as stored in infos) and return the (rows, cols) float64 block."""
    m = np.asarray(value, dtype=np.float64)
    if m.ndim == 1 and m.size == rows * cols:
        return m.reshape(rows, cols)
    if m.ndim == 2 and m.shape[0] >= rows and m.shape[1] >= cols:
        return m[:rows, :cols].copy()
    raise ValueError(f'calibration {name}: expected shape ({rows}, {cols}) or (4, 4), got {m.shape}')


class Calibration:
    """KITTI calibration of one frame.

    Args:
        calib_file: path of a KITTI calib txt file, or a dict with keys 'P2', 'R0', 'Tr_velo2cam' (as returned by
            ``get_calib_from_file``) or the info-style keys 'P2', 'R0_rect', 'Tr_velo_to_cam' (4x4 padded ok).
    Attributes:
        P2 (3, 4), R0 (3, 3), V2C (3, 4) float64 ndarrays; cu, cv, fu, fv, tx, ty intrinsics of P2.
    """

    def __init__(self, calib_file):
        calib = calib_file if isinstance(calib_file, dict) else get_calib_from_file(calib_file)
        r0 = calib['R0'] if 'R0' in calib else calib.get('R0_rect')
        v2c = calib['Tr_velo2cam'] if 'Tr_velo2cam' in calib else calib.get('Tr_velo_to_cam')
        if 'P2' not in calib or r0 is None or v2c is None:
            raise KeyError(f'calibration dict needs P2, R0 (or R0_rect), Tr_velo2cam (or Tr_velo_to_cam); '
                           f'got {sorted(calib)}')
        self.P2 = _as_matrix(calib['P2'], 3, 4, 'P2')
        self.R0 = _as_matrix(r0, 3, 3, 'R0')
        self.V2C = _as_matrix(v2c, 3, 4, 'Tr_velo2cam')

        self.cu = self.P2[0, 2]
        self.cv = self.P2[1, 2]
        self.fu = self.P2[0, 0]
        self.fv = self.P2[1, 1]
        self.tx = self.P2[0, 3] / (-self.fu)
        self.ty = self.P2[1, 3] / (-self.fv)

        # lidar hom -> rect: (4, 4) [R0 @ V2C; 0 0 0 1]; its inverse maps rect back to lidar.
        r0_ext = np.eye(4)
        r0_ext[:3, :3] = self.R0
        v2c_ext = np.eye(4)
        v2c_ext[:3, :4] = self.V2C
        self._lidar_to_rect_mat = r0_ext @ v2c_ext
        self._rect_to_lidar_mat = np.linalg.inv(self._lidar_to_rect_mat)

    @staticmethod
    def cart_to_hom(pts):
        """(N, 3) -> (N, 4) homogeneous, float64."""
        pts = np.asarray(pts, dtype=np.float64)
        return np.hstack((pts, np.ones((pts.shape[0], 1))))

    @staticmethod
    def _out_dtype(pts):
        return np.float32 if np.asarray(pts).dtype == np.float32 else np.float64

    def rect_to_lidar(self, pts_rect):
        """(N, 3) rect camera points -> (N, 3) LiDAR points."""
        pts_lidar = self.cart_to_hom(pts_rect) @ self._rect_to_lidar_mat.T
        return pts_lidar[:, 0:3].astype(self._out_dtype(pts_rect))

    def lidar_to_rect(self, pts_lidar):
        """(N, 3 + C) LiDAR points (only xyz used) -> (N, 3) rect camera points."""
        pts_rect = self.cart_to_hom(np.asarray(pts_lidar)[:, 0:3]) @ self._lidar_to_rect_mat[:3].T
        return pts_rect.astype(self._out_dtype(pts_lidar))

    def rect_to_img(self, pts_rect):
        """Project rect camera points with P2.

        Returns:
            pts_img (N, 2) [u, v] pixels, pts_rect_depth (N,) depth along camera z.
        Like OpenPCDet, u and v are divided by the rect z (not the third row of P2 @ p, which differs by P2's
        tiny z translation); ``img_to_rect`` is the exact inverse of this.
        """
        pts_rect_hom = self.cart_to_hom(pts_rect)
        pts_2d_hom = pts_rect_hom @ self.P2.T
        pts_img = pts_2d_hom[:, 0:2] / pts_rect_hom[:, 2:3]
        pts_rect_depth = pts_2d_hom[:, 2] - self.P2[2, 3]
        dtype = self._out_dtype(pts_rect)
        return pts_img.astype(dtype), pts_rect_depth.astype(dtype)

    def lidar_to_img(self, pts_lidar):
        """(N, 3) LiDAR points -> pts_img (N, 2) pixels, pts_depth (N,) rect depth."""
        return self.rect_to_img(self.lidar_to_rect(pts_lidar))

    def img_to_rect(self, u, v, depth_rect):
        """Back-project pixels: u, v, depth_rect (N,) -> (N, 3) rect camera points."""
        u, v, depth_rect = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (u, v, depth_rect))
        x = ((u - self.cu) * depth_rect) / self.fu + self.tx
        y = ((v - self.cv) * depth_rect) / self.fv + self.ty
        return np.stack((x, y, depth_rect), axis=1)

    def corners3d_to_img_boxes(self, corners3d):
        """Project (N, 8, 3) rect-camera corners.

        Returns:
            boxes (N, 4) [x1, y1, x2, y2] pixel extents, boxes_corner (N, 8, 2) projected corners.
        """
        corners3d = np.asarray(corners3d, dtype=np.float64)
        n = corners3d.shape[0]
        corners_hom = np.concatenate((corners3d, np.ones((n, 8, 1))), axis=2)  # (N, 8, 4)
        img_pts = corners_hom @ self.P2.T  # (N, 8, 3)
        x, y = img_pts[:, :, 0] / img_pts[:, :, 2], img_pts[:, :, 1] / img_pts[:, :, 2]
        boxes = np.stack((x.min(axis=1), y.min(axis=1), x.max(axis=1), y.max(axis=1)), axis=1)
        boxes_corner = np.stack((x, y), axis=2)
        return boxes, boxes_corner
