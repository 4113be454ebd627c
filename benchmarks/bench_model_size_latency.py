"""Parameters, dense GFLOPs and CPU latency of the teachers and their 4x / 16x students.

Usage (repository root):
    python benchmarks/bench_model_size_latency.py [--repeats 5] [--threads 2] [--skip-train] [--frames DIR]

Inputs: real KITTI velodyne sweeps (``../shared/data/kitti_samples/training/velodyne``), front 90-degree field
of view, cropped to each config's POINT_CLOUD_RANGE and voxelized with spconv's ``PointToVoxel`` using the
config's test-mode voxel settings. Untrained weights (latency does not depend on them, except the handful of
boxes that reach NMS).

Columns:
- params: trainable parameters.
- GFLOPs: dense torch ops only (PFN linear, 2D backbone, head), counted by ``torch.utils.flop_counter``
  (multiply-add = 2 FLOPs); spconv's sparse convolutions are not counted (marked "+sparse").
- fwd ms: eval-mode forward incl. post-processing, batch 1, median over ``--repeats`` after 2 warm-up runs.
- train s/batch (synthetic-range configs): forward + backward + Adam step on 4 scenes, median of 3 after 1
  warm-up, with a few GT boxes per scene.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from easydict import EasyDict

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pcdet.config import cfg_from_yaml_file  # noqa: E402
from pcdet.datasets.dataset_meta import DatasetMeta  # noqa: E402
from pcdet.models import build_network  # noqa: E402

MODELS = ['pointpillar', 'pointpillar_4x', 'pointpillar_16x', 'second', 'second_4x', 'second_16x']


def load_frames(frames_dir, count):
    files = sorted(Path(frames_dir).glob('*.bin'))[:count]
    if not files:
        raise FileNotFoundError(f'no velodyne .bin files in {frames_dir}')
    frames = []
    for f in files:
        pts = np.fromfile(f, dtype=np.float32).reshape(-1, 4)
        fov = np.abs(np.arctan2(pts[:, 1], pts[:, 0])) < np.pi / 4  # camera field of view, roughly
        frames.append(pts[fov & (pts[:, 0] > 0)])
    return frames


def make_batch(frames, cfg, training):
    from spconv.pytorch.utils import PointToVoxel
    geom = DatasetMeta.from_cfg(cfg, training)
    gen = PointToVoxel(vsize_xyz=geom.voxel_size.tolist(), coors_range_xyz=geom.point_cloud_range.tolist(),
                       num_point_features=4, max_num_voxels=geom.max_voxels,
                       max_num_points_per_voxel=geom.max_points_per_voxel)
    voxels, coords, nums = [], [], []
    for b, pts in enumerate(frames):
        v, c, n = gen(torch.from_numpy(pts))
        voxels.append(v)
        coords.append(torch.cat([torch.full((len(c), 1), b, dtype=c.dtype), c], dim=1).float())
        nums.append(n)
    batch = {'voxels': torch.cat(voxels), 'voxel_coords': torch.cat(coords), 'voxel_num_points': torch.cat(nums),
             'batch_size': len(frames)}
    if training:
        rng = np.random.default_rng(0)
        r = geom.point_cloud_range
        gt = np.zeros((len(frames), 8, 8), dtype=np.float32)
        sizes = {1: (3.9, 1.6, 1.56), 2: (0.8, 0.6, 1.73), 3: (1.76, 0.6, 1.73)}
        for b in range(len(frames)):
            for i, cls in enumerate([1, 1, 1, 1, 2, 2, 3, 3]):
                x, y = rng.uniform(r[0] + 3, r[3] - 3), rng.uniform(r[1] + 3, r[4] - 3)
                gt[b, i] = [x, y, -1.0, *sizes[cls], rng.uniform(-np.pi, np.pi), cls]
        batch['gt_boxes'] = torch.from_numpy(gt)
    return batch


def clone(batch):
    return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}


def load_cfg(path):
    return cfg_from_yaml_file(str(path), EasyDict())


def dense_gflops(model, batch):
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(clone(batch))
    return counter.get_total_flops() / 1e9


def time_forward(model, batch, repeats):
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            model(clone(batch))
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_train_step(model, batch, repeats=3):
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        ret, _, _ = model(clone(batch))
        optimizer.zero_grad()
        ret['loss'].backward()
        optimizer.step()
        if i >= 1:
            times.append(time.perf_counter() - t0)
    model.eval()
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch default)')
    parser.add_argument('--skip-train', action='store_true', help='skip the synthetic-range training-step timing')
    parser.add_argument('--frames', default=str(REPO.parent / 'shared/data/kitti_samples/training/velodyne'))
    parser.add_argument('--cfg-root', default=str(REPO / 'tools' / 'cfgs'), help='folder holding kitti_models/ etc.')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = load_frames(args.frames, 4)
    rows = []
    for group in ('kitti_models', 'kitti_synth_models'):
        for name in MODELS:
            cfg = load_cfg(Path(args.cfg_root) / group / f'{name}.yaml')
            geom = DatasetMeta.from_cfg(cfg, training=False)
            torch.manual_seed(0)
            model = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), geom).eval()
            batch = make_batch(frames[:1], cfg, training=False)
            params = sum(p.numel() for p in model.parameters())
            gflops = dense_gflops(model, batch)
            fwd = time_forward(model, batch, args.repeats)
            train = None
            if group == 'kitti_synth_models' and not args.skip_train and not name.endswith('16x'):
                train = time_train_step(model, make_batch(frames[:4], cfg, training=True))
            rows.append((group, name, tuple(int(g) for g in geom.grid_size), batch['voxels'].shape[0], params,
                         gflops, name.startswith('second'), fwd, train))
            print(f'.. {group}/{name} done', file=sys.stderr, flush=True)

    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; batch 1 forward in eval mode')
    header = (f'{"config":<36} {"grid":>16} {"voxels":>7} {"params":>10} {"ratio":>6} {"GFLOPs":>14} '
              f'{"fwd ms":>8} {"train s/4":>9}')
    print(header)
    print('-' * len(header))
    teacher_params = {}
    for group, name, grid, voxels, params, gflops, sparse, fwd, train in rows:
        teacher = name.split('_')[0]
        if name == teacher:
            teacher_params[(group, teacher)] = params
        ratio = teacher_params[(group, teacher)] / params
        flops = f'{gflops:.2f}' + (' +sparse' if sparse else '')
        train_s = f'{train:.2f}' if train is not None else '-'
        print(f'{group + "/" + name:<36} {str(grid):>16} {voxels:>7} {params:>10,} {ratio:>5.1f}x {flops:>14} '
              f'{fwd * 1000:>8.0f} {train_s:>9}')


if __name__ == '__main__':
    main()
