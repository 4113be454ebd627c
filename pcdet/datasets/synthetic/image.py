"""image_2 of the synthetic set: a depth rendering of the LiDAR points seen by camera 2, written as an RGB PNG.

The PNG encoder is minimal (8-bit RGB, filter type 0 on every row, one IDAT chunk) and deterministic, so a fixed
seed gives byte-identical files.
"""
import struct
import zlib

import numpy as np


def encode_png(rgb, level=1):
    """Encode an (H, W, 3) uint8 array as PNG bytes."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'encode_png expects an (H, W, 3) uint8 image, got shape {rgb.shape}')
    h, w = rgb.shape[:2]
    raw = np.zeros((h, 1 + 3 * w), dtype=np.uint8)  # leading 0 per row = filter type "None"
    raw[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(tag, data):
        return struct.pack('>I', len(data)) + tag + data + struct.pack('>I', zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)  # 8 bit, colour type 2 (RGB), no interlace
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(raw.tobytes(), level))
            + chunk(b'IEND', b''))


def _depth_colormap():
    """(256, 3) uint8 near = warm, far = cool."""
    t = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([1.0 - t, 1.0 - np.abs(2 * t - 1.0), t], axis=1) * 0.85 + 0.15
    return (rgb * 255).astype(np.uint8)


_CMAP = _depth_colormap()


def render_depth_image(points, calib, image_shape, max_depth=80.0):
    """Splat LiDAR points into camera 2 as 2x2 pixel dots coloured by depth, nearest on top.

    Args:
        points: (N, 3 + C) LiDAR points; calib: ``Calibration``; image_shape: (H, W).
    Returns:
        (H, W, 3) uint8 image on a dark sky-to-ground gradient.
    """
    h, w = image_shape
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = np.linspace(20, 50, h, dtype=np.uint8)[:, None, None]
    front = points[:, 0] > 0.5
    uv, depth = calib.lidar_to_img(points[front, :3])
    u, v = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    ok = (u >= 0) & (u < w - 1) & (v >= 0) & (v < h - 1) & (depth > 0)
    u, v, depth = u[ok], v[ok], depth[ok]
    order = np.argsort(-depth, kind='stable')  # far first so near points overwrite them
    u, v = u[order], v[order]
    color = _CMAP[np.clip(depth[order] / max_depth * 255, 0, 255).astype(np.int64)]
    for du in (0, 1):
        for dv in (0, 1):
            img[v + dv, u + du] = color
    return img
