"""Deployment benchmark: the teacher and its 4x / 16x students in PyTorch and in ONNX Runtime (CPU).

Per model: parameters, ONNX file size, the largest |ORT - PyTorch| of the head outputs on the frames, and per
frame (batch 1) the latency of
- net: the exported network alone (pillar VFE -> scatter -> 2D backbone -> head outputs), on voxelised frames:
  PyTorch runs ``PillarNetworkGraph`` (the exported module), ORT runs the session;
- e2e: raw points -> voxels (the dataset's processor) -> network -> box decoding -> score threshold + rotated NMS:
  PyTorch runs the detector's forward, ORT runs ``OnnxPillarDetector`` (same voxeliser, decoding and NMS code).
Timing: every round runs each (model, backend, mode) once over all frames, in an order that alternates between
rounds, so drift of a shared machine hits every cell alike (as bench_kd_overhead.py does); a cell's time is the
mean per frame of its round, and the table gives the median over rounds and the spread (min-max over rounds).

Frames: the first ``--frames`` real KITTI sample frames (``../shared/data/kitti_samples``), camera field of view
only, as the KITTI dataset reads them. Weights: random (latency does not depend on them, except how many boxes
reach NMS: none with the default head init) unless ``--ckpt NAME=PATH`` gives a checkpoint.

    python benchmarks/bench_deploy.py [--group kitti_synth_models] [--frames 4] [--rounds 7] [--threads 1]
        [--ckpt 4x=output/.../checkpoint_epoch_8.pth]
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from pcdet.utils.timing import format_spread, interleaved_rounds  # noqa: E402

MODELS = (('teacher', 'pointpillar.yaml'), ('4x', 'pointpillar_4x.yaml'), ('16x', 'pointpillar_16x.yaml'))
BACKENDS = ('pytorch', 'onnxruntime')
MODES = ('net', 'e2e')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--group', default='kitti_synth_models', help='folder under tools/cfgs')
    parser.add_argument('--frames', type=int, default=4)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--threads', type=int, default=1, help='torch and ONNX Runtime intra-op threads')
    parser.add_argument('--ckpt', nargs='*', default=[], metavar='NAME=PATH',
                        help='checkpoints by model name (teacher, 4x, 16x); others keep random weights')
    parser.add_argument('--kitti_root', default=str(REPO.parent / 'shared' / 'data' / 'kitti_samples'))
    return parser.parse_args()


def load_frames(kitti_root, count):
    from pcdet.deploy.pipeline import read_kitti_points
    split = Path(kitti_root) / 'training'
    ids = sorted(p.stem for p in (split / 'velodyne').glob('*.bin'))[:count]
    if not ids:
        raise FileNotFoundError(f'no velodyne frames under {split} (--kitti_root)')
    return [read_kitti_points(split, i) for i in ids]


def setup_model(name, cfg_name, args, frames, out_dir):
    """Build, export and wrap one model. Returns a dict of closures and figures."""
    from easydict import EasyDict

    from pcdet.config import cfg_from_yaml_file
    from pcdet.datasets.dataset_meta import DatasetMeta
    from pcdet.deploy.onnx_export import INPUT_NAMES, PillarNetworkGraph, export_onnx
    from pcdet.deploy.onnx_runtime import OnnxPillarDetector
    from pcdet.deploy.pipeline import build_test_processor, points_to_batch
    from pcdet.models import build_network

    cfg = cfg_from_yaml_file(str(REPO / 'tools' / 'cfgs' / args.group / cfg_name), EasyDict())
    torch.manual_seed(0)
    model = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), DatasetMeta.from_cfg(cfg, training=False))
    ckpts = dict(item.split('=', 1) for item in args.ckpt)
    if name in ckpts:
        model.load_params_from_file(ckpts[name], logger=logging.getLogger('bench_deploy'), to_cpu=True,
                                    strict=True)
    model.eval()
    onnx_path = export_onnx(model, Path(out_dir) / f'{name}.onnx')
    ort_model = OnnxPillarDetector(model, onnx_path, num_threads=args.threads)
    graph = PillarNetworkGraph(model).eval()
    processor = build_test_processor(cfg)
    batches = [points_to_batch([p], processor) for p in frames]
    net_inputs = [(b['voxels'], b['voxel_num_points'].int(), b['voxel_coords'].int()) for b in batches]
    feeds = [{k: t.numpy() for k, t in zip(INPUT_NAMES, inp)} for inp in net_inputs]
    out_names = graph.output_names

    max_diff = 0.0
    with torch.no_grad():
        for inp, feed in zip(net_inputs, feeds):
            ref = graph(*inp)
            got = ort_model.session.run(out_names, feed)
            max_diff = max(max_diff, max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref)))

    def pytorch_net():
        with torch.no_grad():
            for inp in net_inputs:
                graph(*inp)

    def ort_net():
        for feed in feeds:
            ort_model.session.run(out_names, feed)

    boxes = []

    def pytorch_e2e():
        with torch.no_grad():
            for points in frames:
                preds, _ = model(points_to_batch([points], processor))
                boxes.append(len(preds[0]['pred_boxes']))

    def ort_e2e():
        for points in frames:
            ort_model(points_to_batch([points], processor))

    return {
        'name': name, 'cfg': f'{args.group}/{cfg_name}', 'weights': 'checkpoint' if name in ckpts else 'random',
        'params': sum(p.numel() for p in model.parameters()), 'onnx_mb': os.path.getsize(onnx_path) / 1e6,
        'pillars': [int(b['voxels'].shape[0]) for b in batches], 'max_diff': max_diff, 'boxes': boxes,
        'fns': {('pytorch', 'net'): pytorch_net, ('onnxruntime', 'net'): ort_net,
                ('pytorch', 'e2e'): pytorch_e2e, ('onnxruntime', 'e2e'): ort_e2e},
    }


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    frames = load_frames(args.kitti_root, args.frames)
    with tempfile.TemporaryDirectory(prefix='bench_deploy_') as tmp:
        models = [setup_model(name, cfg_name, args, frames, tmp) for name, cfg_name in MODELS]
        print(f'.. exported {len(models)} models; timing {args.rounds} rounds', file=sys.stderr, flush=True)
        fns = {(m['name'], key): fn for m in models for key, fn in m['fns'].items()}
        times = {cell: [t * 1000 / len(frames) for t in samples]    # ms per frame, one entry per round
                 for cell, samples in interleaved_rounds(fns, args.rounds).items()}
    import onnxruntime
    print(f'torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s), CPU; '
          f'{len(frames)} KITTI frames (camera FOV), batch 1; ms per frame: median (min-max) over {args.rounds} '
          'interleaved rounds')
    print(f'pillars per frame: {models[0]["pillars"]}; boxes after NMS (PyTorch, per model): '
          + ', '.join(f'{m["name"]} {sorted(set(m["boxes"]))}' for m in models))
    header = ('| model | weights | params (M) | ONNX MB | max abs diff | net PyTorch | net ORT | net speed-up '
              '| e2e PyTorch | e2e ORT | e2e speed-up |')
    print(header)
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for m in models:
        t = {key: times[(m['name'], key)] for key in m['fns']}
        speed = {mode: statistics.median(t[('pytorch', mode)]) / statistics.median(t[('onnxruntime', mode)])
                 for mode in MODES}
        cell = {key: format_spread(samples) for key, samples in t.items()}
        print(f'| {m["name"]} ({m["cfg"]}) | {m["weights"]} | {m["params"] / 1e6:.3f} | {m["onnx_mb"]:.2f} | '
              f'{m["max_diff"]:.1e} | {cell[("pytorch", "net")]} | {cell[("onnxruntime", "net")]} | '
              f'{speed["net"]:.2f}x | {cell[("pytorch", "e2e")]} | {cell[("onnxruntime", "e2e")]} | '
              f'{speed["e2e"]:.2f}x |')


if __name__ == '__main__':
    main()
