"""Speed of the KITTI evaluator on a KITTI-val-sized synthetic set (3,769 frames, ~10 detections a frame).

Evaluates Car, Pedestrian, Cyclist with all metrics (bbox, bev, 3d, aos; R11 and R40; both overlap sets), the
same work as OpenPCDet's ``get_official_eval_result``. The "cold" run happens in a fresh subprocess with an empty
numba cache (compile included); "cached" is a fresh subprocess reusing that cache (what users see from the second
run on); "warm" is repeated calls inside one process.

    python benchmarks/bench_kitti_eval.py [--frames 3769] [--repeats 3]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# class name, probability of an object, mean (l, h, w)
CLASSES = [('Car', 0.55, (3.9, 1.56, 1.6)), ('Pedestrian', 0.15, (0.8, 1.75, 0.6)),
           ('Cyclist', 0.07, (1.76, 1.74, 0.6)), ('Van', 0.08, (5.1, 2.2, 1.9)),
           ('Truck', 0.03, (10.0, 3.2, 2.6)), ('DontCare', 0.12, (1.0, 1.0, 1.0))]
FOCAL, CU, CV, IMG_W, IMG_H, CAM_Y = 721.5, 609.6, 172.9, 1242.0, 375.0, 1.65


def _image_box(loc, dims, ry):
    """Project the 8 corners of camera boxes (N, [l, h, w]) with a KITTI-like pinhole; clip to the image."""
    l, h, w = dims[:, 0:1], dims[:, 1:2], dims[:, 2:3]
    xs = np.concatenate([l, l, -l, -l, l, l, -l, -l], 1) / 2
    ys = np.concatenate([0 * h, 0 * h, 0 * h, 0 * h, -h, -h, -h, -h], 1)
    zs = np.concatenate([w, -w, -w, w, w, -w, -w, w], 1) / 2
    c, s = np.cos(ry)[:, None], np.sin(ry)[:, None]
    x = c * xs + s * zs + loc[:, 0:1]
    z = -s * xs + c * zs + loc[:, 2:3]
    y = ys + loc[:, 1:2]
    z = np.maximum(z, 0.5)
    u, v = FOCAL * x / z + CU, FOCAL * y / z + CV
    box = np.stack([u.min(1), v.min(1), u.max(1), v.max(1)], 1)
    return np.clip(box, 0, [IMG_W - 1, IMG_H - 1, IMG_W - 1, IMG_H - 1])


def make_frame(rng):
    """One frame of synthetic labels and detections (realistic sizes, distances, occlusion, 2D boxes)."""
    n = int(rng.integers(1, 16))
    names = rng.choice([c[0] for c in CLASSES], size=n, p=[c[1] for c in CLASSES])
    mean = np.array([dict((c[0], c[2]) for c in CLASSES)[k] for k in names])
    dims = mean * rng.uniform(0.85, 1.15, size=(n, 3))
    loc = np.stack([rng.uniform(-15, 15, n), CAM_Y + rng.normal(0, 0.1, n), rng.uniform(4, 70, n)], 1)
    ry = rng.uniform(-np.pi, np.pi, n)
    gt = {'name': names, 'truncated': np.where(rng.random(n) < 0.8, 0.0, rng.uniform(0, 0.8, n)),
          'occluded': rng.choice(4, size=n, p=[0.55, 0.3, 0.12, 0.03]), 'alpha': ry - np.arctan2(loc[:, 0], loc[:, 2]),
          'bbox': _image_box(loc, dims, ry), 'dimensions': dims, 'location': loc, 'rotation_y': ry}
    objects = names != 'DontCare'
    hit = objects & (rng.random(n) < 0.8)
    k = int(hit.sum())
    d_loc = loc[hit] + rng.normal(0, [0.08, 0.04, 0.15], (k, 3))
    d_dims = dims[hit] * rng.uniform(0.95, 1.05, (k, 3))
    d_ry = ry[hit] + rng.normal(0, 0.05, k) + np.where(rng.random(k) < 0.1, np.pi, 0.0)
    d_names = np.where(names[hit] == 'Truck', 'Car', names[hit])
    n_fp = max(0, 10 - k) + int(rng.integers(0, 3))
    fp_names = rng.choice(['Car', 'Pedestrian', 'Cyclist'], size=n_fp, p=[0.6, 0.25, 0.15])
    fp_dims = np.array([dict((c[0], c[2]) for c in CLASSES)[nm] for nm in fp_names]).reshape(-1, 3)
    fp_loc = np.stack([rng.uniform(-15, 15, n_fp), CAM_Y + rng.normal(0, 0.1, n_fp), rng.uniform(4, 70, n_fp)], 1)
    fp_ry = rng.uniform(-np.pi, np.pi, n_fp)
    dt_loc = np.concatenate([d_loc, fp_loc]).reshape(-1, 3)
    dt_dims = np.concatenate([d_dims, fp_dims]).reshape(-1, 3)
    dt_ry = np.concatenate([d_ry, fp_ry])
    dt = {'name': np.concatenate([d_names, fp_names]), 'truncated': np.zeros(len(dt_ry)),
          'occluded': np.zeros(len(dt_ry)), 'alpha': dt_ry - np.arctan2(dt_loc[:, 0], dt_loc[:, 2]),
          'bbox': _image_box(dt_loc, dt_dims, dt_ry), 'dimensions': dt_dims, 'location': dt_loc,
          'rotation_y': dt_ry, 'score': np.concatenate([rng.uniform(0.3, 1.0, k), rng.uniform(0.05, 0.7, n_fp)])}
    return gt, dt


def make_dataset(num_frames, seed=0):
    rng = np.random.default_rng(seed)
    frames = [make_frame(rng) for _ in range(num_frames)]
    return [f[0] for f in frames], [f[1] for f in frames]


def run_once(num_frames, repeats):
    """Evaluate in this process; print first-call and warm times as 'first=... warm=...'."""
    sys.path.insert(0, REPO_ROOT)
    from pcdet.datasets.kitti.kitti_object_eval_python.eval import get_official_eval_result
    gt, dt = make_dataset(num_frames)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result, ret = get_official_eval_result(gt, dt, [0, 1, 2])
        times.append(time.perf_counter() - t0)
    print(f"first={times[0]:.3f} warm={min(times[1:] or times):.3f} car3d_mod_R40={ret['Car_3d/moderate_R40']:.4f}")


def _subprocess(num_frames, repeats, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), '--frames', str(num_frames), '--repeats',
                          str(repeats), '--inner'], env=env, capture_output=True, text=True, check=True).stdout
    line = [x for x in out.splitlines() if x.startswith('first=')][-1]
    return dict(kv.split('=') for kv in line.split())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=3769)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--inner', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        run_once(args.frames, args.repeats)
        return
    with tempfile.TemporaryDirectory(prefix='bench_kitti_eval_numba_') as cache_dir:
        cold = _subprocess(args.frames, args.repeats, cache_dir)
        cached = _subprocess(args.frames, args.repeats, cache_dir)
    fps = args.frames / float(cold['warm'])
    print(f'KITTI eval, {args.frames} synthetic frames, Car/Pedestrian/Cyclist, bbox+bev+3d+aos, R11+R40, 2 sets')
    print(f'  cold (empty numba cache, compile included): {float(cold["first"]):.2f} s')
    print(f'  first call with numba cache (new process):  {float(cached["first"]):.2f} s')
    print(f'  warm (same process, best of {args.repeats - 1 or 1}):            {float(cold["warm"]):.2f} s '
          f'({fps:.0f} frames/s)')
    print(f'  Car 3d moderate R40 on this set: {cold["car3d_mod_R40"]}')


if __name__ == '__main__':
    main()
