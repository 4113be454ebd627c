"""Realism report: the synthetic set side by side with the real KITTI sample frames.

Compares points per frame (full sweep and camera-FOV), points per Car / Pedestrian / Cyclist label box by
distance bin, objects per frame and the easy / moderate / hard shares. Prints a table and saves a figure.

    python benchmarks/synthetic_vs_kitti.py                       # generates 200 synthetic frames in a tmp dir
    python benchmarks/synthetic_vs_kitti.py --synth data/kitti_synth --kitti ../shared/data/kitti_samples
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pcdet.utils import box_utils  # noqa: E402
from pcdet.utils.calibration_kitti import Calibration  # noqa: E402
from pcdet.utils.object3d_kitti import get_objects_from_label  # noqa: E402

CLASSES = ('Car', 'Pedestrian', 'Cyclist')
DIST_BINS = (0, 10, 20, 30, 40, 50, 80)
LEVELS = ('easy', 'moderate', 'hard', 'other')


def points_in_boxes(points, boxes):
    """(M,) number of points inside each LiDAR box. points (N, 3+), boxes (M, 7) [x, y, z, dx, dy, dz, heading]."""
    counts = np.zeros(len(boxes), dtype=np.int64)
    for k, (x, y, z, dx, dy, dz, rz) in enumerate(boxes):
        near = np.abs(points[:, 2] - z) <= dz / 2
        px, py = points[near, 0] - x, points[near, 1] - y
        c, s = np.cos(-rz), np.sin(-rz)
        lx, ly = c * px - s * py, s * px + c * py
        counts[k] = int(((np.abs(lx) <= dx / 2) & (np.abs(ly) <= dy / 2)).sum())
    return counts


def collect(root):
    """Statistics of every frame listed in ``root/training/velodyne`` that has a label file."""
    root = Path(root)
    stats = {'points': [], 'fov_points': [], 'objects': {c: [] for c in CLASSES},
             'per_box': {c: [[] for _ in DIST_BINS[:-1]] for c in CLASSES}, 'levels': {c: [0] * 4 for c in CLASSES}}
    for bin_file in sorted((root / 'training' / 'velodyne').glob('*.bin')):
        fid = bin_file.stem
        label_file = root / 'training' / 'label_2' / f'{fid}.txt'
        if not label_file.exists():
            continue
        points = np.fromfile(bin_file, dtype=np.float32).reshape(-1, 4)
        calib = Calibration(str(root / 'training' / 'calib' / f'{fid}.txt'))
        uv, depth = calib.lidar_to_img(points[:, :3])
        fov = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < 1242) & (uv[:, 1] >= 0) & (uv[:, 1] < 375)
        stats['points'].append(len(points))
        stats['fov_points'].append(int(fov.sum()))
        objs = [o for o in get_objects_from_label(str(label_file)) if o.cls_type in CLASSES]
        for c in CLASSES:
            stats['objects'][c].append(sum(o.cls_type == c for o in objs))
        if not objs:
            continue
        cam = np.array([[*o.loc, o.l, o.h, o.w, o.ry] for o in objs], dtype=np.float64)
        boxes = box_utils.boxes3d_kitti_camera_to_lidar(cam, calib)
        counts = points_in_boxes(points[fov], boxes)
        for o, box, n in zip(objs, boxes, counts):
            b = np.searchsorted(DIST_BINS, np.hypot(box[0], box[1]), side='right') - 1
            if 0 <= b < len(DIST_BINS) - 1:
                stats['per_box'][o.cls_type][b].append(int(n))
            stats['levels'][o.cls_type][o.level if o.level >= 0 else 3] += 1
    return stats


def _fmt_bin(values):
    return f'{np.median(values):7.0f} ({len(values):3d})' if values else '      - (  0)'


def report(real, synth):
    """Text table of the two statistics dicts."""
    lines = [f"{'statistic':34s} {'KITTI samples':>16s} {'synthetic':>16s}",
             f"{'frames':34s} {len(real['points']):16d} {len(synth['points']):16d}",
             f"{'points / frame (360 deg), mean':34s} {np.mean(real['points']):16.0f} {np.mean(synth['points']):16.0f}",
             f"{'points / frame in camera FOV':34s} {np.mean(real['fov_points']):16.0f} "
             f"{np.mean(synth['fov_points']):16.0f}"]
    for c in CLASSES:
        lines.append(f"{c + ' labels / frame':34s} {np.mean(real['objects'][c]):16.2f} "
                     f"{np.mean(synth['objects'][c]):16.2f}")
    lines.append('points in box, median (count) by distance:')
    for c in CLASSES:
        for b in range(len(DIST_BINS) - 1):
            name = f'  {c} {DIST_BINS[b]}-{DIST_BINS[b + 1]} m'
            lines.append(f"{name:34s} {_fmt_bin(real['per_box'][c][b]):>16s} {_fmt_bin(synth['per_box'][c][b]):>16s}")
    lines.append('difficulty shares (easy / moderate / hard / other):')
    for c in CLASSES:
        shares = []
        for s in (real, synth):
            n = max(sum(s['levels'][c]), 1)
            shares.append('/'.join(f'{v / n:.2f}' for v in s['levels'][c]))
        lines.append(f"{'  ' + c:34s} {shares[0]:>16s} {shares[1]:>16s}")
    return '\n'.join(lines)


def plot(real, synth, out_png):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    centers = [(a + b) / 2 for a, b in zip(DIST_BINS[:-1], DIST_BINS[1:])]
    for ax, c in zip(axes[0], CLASSES):
        for s, name, m in ((real, 'KITTI', 'o-'), (synth, 'synthetic', 's--')):
            med = [np.median(v) if v else np.nan for v in s['per_box'][c]]
            ax.semilogy(centers, np.maximum(med, 0.5), m, label=name)
        ax.set_title(f'{c}: points in box (median)')
        ax.set_xlabel('distance (m)')
        ax.legend()
    ax = axes[1, 0]
    ax.hist([real['points'], synth['points']], bins=15, density=True, label=['KITTI', 'synthetic'])
    ax.set_title('points per frame (360 deg)')
    ax.legend()
    ax = axes[1, 1]
    x = np.arange(len(CLASSES))
    ax.bar(x - 0.2, [np.mean(real['objects'][c]) for c in CLASSES], 0.4, label='KITTI')
    ax.bar(x + 0.2, [np.mean(synth['objects'][c]) for c in CLASSES], 0.4, label='synthetic')
    ax.set_xticks(x, CLASSES)
    ax.set_title('labels per frame')
    ax.legend()
    ax = axes[1, 2]
    for off, s in ((-0.2, real), (0.2, synth)):
        tot = np.array([sum(s['levels'][c]) for c in CLASSES], dtype=float)
        shares = np.array([[s['levels'][c][k] for c in CLASSES] for k in range(4)]) / np.maximum(tot, 1)
        bottom = np.zeros(len(CLASSES))
        for k, lvl in enumerate(LEVELS):
            ax.bar(x + off, shares[k], 0.4, bottom=bottom, color=f'C{k}', label=lvl if off < 0 else None,
                   hatch='//' if off > 0 else None, edgecolor='k')
            bottom += shares[k]
    ax.set_xticks(x, CLASSES)
    ax.set_title('difficulty shares (left KITTI, right synthetic)')
    ax.legend()
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--synth', default=None, help='synthetic root; default: generate --num frames to a tmp dir')
    parser.add_argument('--num', type=int, default=200)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--kitti', default=str(REPO.parent / 'shared' / 'data' / 'kitti_samples'))
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results' / 'synthetic_vs_kitti.png'))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        synth_root = args.synth
        if synth_root is None:
            from pcdet.datasets.synthetic import generate_dataset
            synth_root = Path(tmp) / 'kitti_synth'
            generate_dataset(synth_root, args.num, 0, args.seed)
        synth = collect(synth_root)
    real = collect(args.kitti)
    print(report(real, synth))
    plot(real, synth, args.out)
    print(f'figure: {args.out}')


if __name__ == '__main__':
    main()
