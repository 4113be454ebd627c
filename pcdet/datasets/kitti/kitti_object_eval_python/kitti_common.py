"""Read KITTI label / result files into OpenPCDet-style annotation dicts (camera frame, numpy arrays)."""
import os
from pathlib import Path

import numpy as np


def get_image_index_str(img_idx):
    return f'{int(img_idx):06d}'


def read_imageset_file(path):
    """ImageSets split file -> list of int frame ids (one per non-blank line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'kitti_common.py: split file not found: {path}')
    with open(path, encoding='utf-8') as f:
        return [int(line.strip()) for line in f if line.strip()]


def get_label_anno(label_path):
    """Parse one label (15 fields a line) or result (16, with score) file.

    Returns:
        dict: name (N,) str, truncated (N,), occluded (N,) int64, alpha (N,), bbox (N, 4) [x1, y1, x2, y2],
        dimensions (N, 3) [l, h, w] (the file stores h, w, l), location (N, 3) bottom centre in the rect camera
        frame, rotation_y (N,), score (N,) (zeros for labels), all float64 unless stated.
    """
    with open(label_path, encoding='utf-8') as f:
        rows = [(lineno, line.split()) for lineno, line in enumerate(f, start=1) if line.strip()]
    for lineno, row in rows:
        if len(row) not in (15, 16):
            raise ValueError(f'{label_path}:{lineno}: expected 15 fields (16 with score), got {len(row)}')
    try:
        vals = np.array([[float(x) for x in row[1:15]] + [float(row[15]) if len(row) == 16 else 0.0]
                         for _, row in rows], dtype=np.float64).reshape(-1, 15)
    except ValueError as exc:
        raise ValueError(f'{label_path}: non-numeric field ({exc})') from None
    return {
        'name': np.array([row[0] for _, row in rows], dtype=str),
        'truncated': vals[:, 0],
        'occluded': vals[:, 1].astype(np.int64),
        'alpha': vals[:, 2],
        'bbox': vals[:, 3:7],
        'dimensions': vals[:, [9, 7, 8]],
        'location': vals[:, 10:13],
        'rotation_y': vals[:, 13],
        'score': vals[:, 14],
    }


def get_label_annos(label_folder, image_ids=None):
    """Annotations of several frames.

    Args:
        label_folder: directory of ``%06d.txt`` files; image_ids: list of int ids, an int n (ids 0..n-1) or None
            (every .txt file in the folder, sorted).
    Returns:
        list of dicts (``get_label_anno``), in the order of image_ids.
    """
    label_folder = Path(label_folder)
    if not label_folder.is_dir():
        raise FileNotFoundError(f'kitti_common.py: label folder not found: {label_folder}')
    if image_ids is None:
        files = sorted(p for p in label_folder.iterdir() if p.suffix == '.txt')
    else:
        if not isinstance(image_ids, (list, tuple)):
            image_ids = list(range(image_ids))
        files = [label_folder / (get_image_index_str(i) + '.txt') for i in image_ids]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f'kitti_common.py: {len(missing)} file(s) missing, e.g. {missing[0]}')
    return [get_label_anno(os.fspath(p)) for p in files]


def filter_annos_low_score(image_annos, thresh):
    """Drop detections with score < thresh (every per-object array is filtered)."""
    out = []
    for anno in image_annos:
        keep = np.asarray(anno['score']) >= thresh
        out.append({k: (np.asarray(v)[keep] if np.ndim(v) > 0 and len(v) == len(keep) else v)
                    for k, v in anno.items()})
    return out
