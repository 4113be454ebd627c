"""PointPillars fits the 13 real KITTI frames: train on them on CPU, evaluate on the same frames (KITTI metric).

    python benchmarks/bench_fit_kitti_samples.py [--epochs 80] [--samples ../shared/data/kitti_samples]

Builds a KITTI tree in a temporary folder that links the sample frames (nothing is written into them), creates the
infos with ``create_kitti_infos``, trains ``benchmarks/cfgs/pointpillar_kitti_samples.yaml`` with ``tools/train.py``
and prints the Car/Pedestrian/Cyclist AP of the training frames.

The official metric samples 41 score thresholds, which caps AP at (n_gt - 1) / 40 when a class and difficulty has
fewer than 40 ground-truth boxes (there are 35 Cars in all 13 frames): the evaluation split therefore lists every
training frame ``--repeat`` (4) times, which leaves precision and recall unchanged and lifts the cap.
Target (issue 4): Car BEV AP R40 (moderate) above 90.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'tools')]
CFG = ROOT / 'benchmarks' / 'cfgs' / 'pointpillar_kitti_samples.yaml'


def build_tree(samples, work, repeat):
    """KITTI layout under ``work`` linking ``samples/training``; train = every frame, val = every frame x repeat."""
    (work / 'ImageSets').mkdir(parents=True)
    (work / 'training').symlink_to(samples.resolve() / 'training', target_is_directory=True)
    ids = sorted(p.stem for p in (samples / 'training' / 'velodyne').glob('*.bin'))
    if not ids:
        raise SystemExit(f'{samples}/training/velodyne: no .bin frames found')
    (work / 'ImageSets' / 'train.txt').write_text('\n'.join(ids) + '\n')
    (work / 'ImageSets' / 'val.txt').write_text('\n'.join(ids * repeat) + '\n')
    return ids


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--samples', default=str(ROOT.parent / 'shared' / 'data' / 'kitti_samples'))
    p.add_argument('--epochs', type=int, default=80)
    p.add_argument('--repeat', type=int, default=4)
    p.add_argument('--workers', type=int, default=2)
    args = p.parse_args(argv)
    from report_utils import evaluate_checkpoint

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix='kitti_samples_fit_') as tmp:
        work = Path(tmp) / 'kitti'
        ids = build_tree(Path(args.samples), work, args.repeat)
        subprocess.run([sys.executable, '-m', 'pcdet.datasets.kitti.kitti_dataset', 'create_kitti_infos',
                        str(ROOT / 'tools/cfgs/dataset_configs/kitti_dataset.yaml'), '--data_path', str(work)],
                       cwd=ROOT, check=True)
        tag = f'fit_samples_{os.getpid()}'
        subprocess.run([sys.executable, str(ROOT / 'tools' / 'train.py'), '--cfg_file', str(CFG), '--epochs',
                        str(args.epochs), '--workers', str(args.workers), '--extra_tag', tag, '--fix_random_seed',
                        '--ckpt_save_interval', str(args.epochs), '--num_epochs_to_eval', '0',
                        '--set', 'DATA_CONFIG.DATA_PATH', str(work)], cwd=ROOT, check=True)
        ckpt = ROOT / 'output' / 'cfgs' / CFG.stem / tag / 'ckpt' / f'checkpoint_epoch_{args.epochs}.pth'
        if not ckpt.exists():
            ckpt = next((ROOT / 'output').glob(f'**/{CFG.stem}/{tag}/ckpt/checkpoint_epoch_{args.epochs}.pth'))
        res = evaluate_checkpoint(CFG, ckpt, work, workers=args.workers)
    ap = res['ap']
    print(f'\nPointPillars (0.32 m pillars, half width, {res["params"] / 1e6:.2f} M params) trained {args.epochs} '
          f'epochs on the {len(ids)} real KITTI frames, evaluated on them (each listed {args.repeat}x), AP R40:')
    print('| class | BEV easy/mod/hard | 3D easy/mod/hard |\n|---|---|---|')
    for c in ('Car', 'Pedestrian', 'Cyclist'):
        bev = '/'.join(f'{ap[f"{c}_bev/{lv}_R40"]:.1f}' for lv in ('easy', 'moderate', 'hard'))
        d3 = '/'.join(f'{ap[f"{c}_3d/{lv}_R40"]:.1f}' for lv in ('easy', 'moderate', 'hard'))
        print(f'| {c} | {bev} | {d3} |')
    car = ap['Car_bev/moderate_R40']
    print(f'\nCar BEV AP R40 moderate: {car:.2f} (target > 90: {"met" if car > 90 else "NOT met"}); '
          f'wall time {(time.time() - t0) / 60:.1f} min')


if __name__ == '__main__':
    main()
