"""Write a synthetic KITTI-format dataset.

Usage (from the repository root)::

    python -m pcdet.datasets.synthetic.generate --out data/kitti_synth --num_train 600 --num_val 200 --seed 0

Output tree (the KITTI object layout, so ``create_kitti_infos`` and every KITTI config run on it unchanged)::

    ImageSets/{train,val,trainval,test}.txt
    training/{velodyne/*.bin, label_2/*.txt, calib/*.txt, image_2/*.png, planes/*.txt}
    testing/{velodyne, calib, image_2, planes}          (only when num_test > 0)

Frame i of a split is drawn from ``numpy.random.default_rng([seed, split_code, i])``, so any frame can be made
alone, in any process, and the same seed gives byte-identical files whatever the number of workers.
"""
import argparse
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from . import image, labels
from .layout import random_scene
from .sensor import LidarSensor, simulate_scan

_SPLIT_CODES = {'training': 0, 'testing': 1}


def make_frame(seed, index, split='training', sensor=None):
    """Simulate one frame.

    Args:
        seed: base seed (int); index: frame index within the split; split: 'training' or 'testing'.
        sensor: ``LidarSensor`` (default HDL-64E-like).
    Returns:
        dict with 'points' (N, 4) float32 LiDAR [x, y, z, reflectance], 'labels' (records of
        ``labels.compute_labels``), 'scene', 'stats', 'entity_of_point' (N,) int32, 'calib'.
    """
    sensor = sensor or LidarSensor()
    rng = np.random.default_rng([int(seed), _SPLIT_CODES[split], int(index)])
    scene = random_scene(rng, sensor.height)
    points, entity_of_point, stats = simulate_scan(scene, sensor, rng)
    calib = labels.kitti_calibration()
    records = labels.compute_labels(scene, stats, calib)
    return {'points': points, 'labels': records, 'scene': scene, 'stats': stats,
            'entity_of_point': entity_of_point, 'calib': calib}


def write_frame(root, split, frame_id, frame, with_label):
    """Write one frame's velodyne / calib / planes / image_2 (and label_2) files under ``root/split``."""
    base = Path(root) / split
    frame['points'].astype(np.float32).tofile(base / 'velodyne' / f'{frame_id}.bin')
    (base / 'calib' / f'{frame_id}.txt').write_text(labels.CALIB_TEXT)
    (base / 'planes' / f'{frame_id}.txt').write_text(labels.road_plane_text(frame['scene'], frame['calib']))
    rgb = image.render_depth_image(frame['points'], frame['calib'], labels.IMAGE_SHAPE)
    (base / 'image_2' / f'{frame_id}.png').write_bytes(image.encode_png(rgb))
    if with_label:
        (base / 'label_2' / f'{frame_id}.txt').write_text(labels.format_label_lines(frame['labels']))


def _job(args):
    root, split, seed, index = args
    frame = make_frame(seed, index, split)
    write_frame(root, split, f'{index:06d}', frame, with_label=(split == 'training'))
    return len(frame['points'])


META_FILE = 'synthetic_meta.json'


def is_synthetic_root(out_dir):
    """True when ``out_dir`` was written by this generator (its ``synthetic_meta.json``, written first)."""
    return (Path(out_dir) / META_FILE).is_file()


def generate_dataset(out_dir, num_train, num_val, seed, num_test=0, workers=None, verbose=False, overwrite=False):
    """Write the whole tree (see the module docstring).

    Args:
        out_dir: output root (created). Training frames 000000..num_train+num_val-1: the first ``num_train``
            are the train split, the rest val. ``num_test`` frames go to ``testing/`` (no labels).
        seed: base seed; workers: processes (default: all CPUs; 1 = in this process).
        overwrite: write into a non-empty ``out_dir`` (its frames 000000.. and ImageSets are replaced); without
            it a non-empty ``out_dir`` raises ``FileExistsError`` (it may be a real KITTI root).
    Returns:
        dict with 'num_frames', 'num_points', 'seconds'.
    """
    for name, value in (('num_train', num_train), ('num_val', num_val), ('num_test', num_test)):
        if int(value) < 0:
            raise ValueError(f'{name} must be >= 0, got {value}')
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f'--out {root}: exists and is not a directory')
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        kind = 'an earlier synthetic set' if is_synthetic_root(root) else 'files that are not ours'
        raise FileExistsError(f'--out {root}: not empty (holds {kind}); its frames 000000.. and ImageSets would be '
                              'replaced: choose an empty folder or pass --overwrite')
    root.mkdir(parents=True, exist_ok=True)
    (root / META_FILE).write_text(json.dumps({'generator': 'pcdet.datasets.synthetic', 'seed': int(seed),
                                              'num_train': int(num_train), 'num_val': int(num_val),
                                              'num_test': int(num_test)}) + '\n')
    num_trainval = int(num_train) + int(num_val)
    jobs = [(str(root), 'training', seed, i) for i in range(num_trainval)]
    jobs += [(str(root), 'testing', seed, i) for i in range(int(num_test))]
    for split, n in (('training', num_trainval), ('testing', int(num_test))):
        if n:
            for sub in ('velodyne', 'calib', 'image_2', 'planes') + (('label_2',) if split == 'training' else ()):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
    sets = root / 'ImageSets'
    sets.mkdir(parents=True, exist_ok=True)
    ids = [f'{i:06d}' for i in range(num_trainval)]
    split_ids = {'train': ids[:num_train], 'val': ids[num_train:], 'trainval': ids,
                 'test': [f'{i:06d}' for i in range(int(num_test))]}
    for name, lst in split_ids.items():
        (sets / f'{name}.txt').write_text(''.join(x + '\n' for x in lst))

    workers = os.cpu_count() if workers is None else int(workers)
    start = time.perf_counter()
    if workers <= 1 or len(jobs) <= 1:
        counts = [_job(j) for j in jobs]
    else:
        # fork keeps numba's compiled kernels and the imported modules; fall back to spawn where unavailable
        method = 'fork' if 'fork' in multiprocessing.get_all_start_methods() else 'spawn'
        with multiprocessing.get_context(method).Pool(workers) as pool:
            counts = pool.map(_job, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
    seconds = time.perf_counter() - start
    if verbose:
        print(f'wrote {len(jobs)} frames ({sum(counts)} points) to {root} in {seconds:.1f} s '
              f'({len(jobs) / max(seconds, 1e-9):.1f} frames/s, {workers} workers)')
    return {'num_frames': len(jobs), 'num_points': int(sum(counts)), 'seconds': seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description='Write a synthetic KITTI-format LiDAR dataset.')
    parser.add_argument('--out', default='data/kitti_synth', help='output root directory')
    parser.add_argument('--num_train', type=int, default=600)
    parser.add_argument('--num_val', type=int, default=200)
    parser.add_argument('--num_test', type=int, default=0)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--workers', type=int, default=None, help='processes (default: all CPUs)')
    parser.add_argument('--overwrite', action='store_true', help='write into a non-empty --out (replaces its '
                        'frames 000000.. and ImageSets)')
    args = parser.parse_args(argv)
    try:
        generate_dataset(args.out, args.num_train, args.num_val, args.seed, num_test=args.num_test,
                         workers=args.workers, verbose=True, overwrite=args.overwrite)
    except (FileExistsError, NotADirectoryError) as err:
        raise SystemExit(f'generate: error: {err}') from None


if __name__ == '__main__':
    main()
