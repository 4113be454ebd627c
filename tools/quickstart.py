"""Quickstart: distil a 4x PointPillars student on the embedded synthetic set and print the comparison table.

Stages (each reused when rerun, so an interrupted quickstart continues where it stopped):
  1. generate the synthetic KITTI-format set (``pcdet.datasets.synthetic.generate``) and its infos;
  2. train the teacher (``kitti_synth_models/pointpillar.yaml``) with ``tools/train.py``;
  3. train the 4x student without distillation (``pointpillar_4x.yaml``);
  4. train the 4x student with PointDistiller (``pointpillar_4x_pointdistiller.yaml --teacher_ckpt ...``);
  5. evaluate the three checkpoints (KITTI metric, R40) and measure parameters, GFLOPs and CPU latency.

Usage (from anywhere): ``python tools/quickstart.py`` (the README's ``make quickstart`` runs it in the venv).
``--tiny`` shrinks every stage to seconds; the test suite runs it that way.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
CFG_DIR = ROOT / 'tools' / 'cfgs' / 'kitti_synth_models'
sys.path[:0] = [str(ROOT), str(ROOT / 'tools')]

# Sizes of the two modes. 'full' is tuned to finish in about 20 minutes on 2 CPU cores.
PRESETS = {
    'full': dict(num_train=240, num_val=80, teacher_epochs=8, student_epochs=8, batch_size=4),
    'tiny': dict(num_train=4, num_val=2, teacher_epochs=1, student_epochs=1, batch_size=2),
}

class QuickModel(NamedTuple):
    """One row of the quickstart: what to train and with which config to evaluate it."""
    label: str
    train_cfg: str            # config file in tools/cfgs/kitti_synth_models
    eval_cfg: str             # a distilled student evaluates as its plain student (the checkpoint holds it only)
    is_teacher: bool = False  # trained first; its checkpoint teaches the distilled rows
    distilled: bool = False   # needs --teacher_ckpt


MODELS = [
    QuickModel('teacher PointPillars', 'pointpillar.yaml', 'pointpillar.yaml', is_teacher=True),
    QuickModel('4x student', 'pointpillar_4x.yaml', 'pointpillar_4x.yaml'),
    QuickModel('4x student + PointDistiller', 'pointpillar_4x_pointdistiller.yaml', 'pointpillar_4x.yaml',
               distilled=True),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--tiny', action='store_true', help='a few frames and one epoch per model (for tests)')
    p.add_argument('--data_path', default=None, help='where the synthetic set lives (default data/kitti_synth, '
                                                     'data/kitti_synth_tiny with --tiny)')
    p.add_argument('--extra_tag', default=None, help='output sub-folder tag (default quickstart / quickstart_tiny)')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=None, help='where the table is written (default output/quickstart[_tiny])')
    return p.parse_args(argv)


def stage(msg):
    print(f'\n==== {msg}', flush=True)


def run(cmd):
    """Run a command, streaming its output (its tqdm bars included); a failure stops the quickstart."""
    print('$ ' + ' '.join(str(c) for c in cmd), flush=True)
    ret = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if ret.returncode != 0:
        raise SystemExit(f'quickstart: command failed with exit code {ret.returncode}: {" ".join(map(str, cmd))}')


def ensure_dataset(data_path, preset, seed, workers):
    from pcdet.datasets.synthetic.generate import generate_dataset, is_synthetic_root

    marker = data_path / 'kitti_infos_val.pkl'
    if marker.exists():
        print(f'synthetic set and infos found in {data_path}: reused')
        return
    stage(f'generating {preset["num_train"]} + {preset["num_val"]} synthetic frames in {data_path}')
    # an interrupted earlier generation (our own meta file) is redone; any other non-empty folder is refused
    generate_dataset(data_path, num_train=preset['num_train'], num_val=preset['num_val'], seed=seed, workers=workers,
                     overwrite=is_synthetic_root(data_path))
    stage('creating KITTI infos and the GT database')
    run([sys.executable, '-m', 'pcdet.datasets.kitti.kitti_dataset', 'create_kitti_infos',
         ROOT / 'tools/cfgs/dataset_configs/kitti_synth_dataset.yaml', '--data_path', data_path,
         '--workers', workers])


def ckpt_dir(cfg_name, extra_tag):
    return ROOT / 'output' / 'kitti_synth_models' / Path(cfg_name).stem / extra_tag / 'ckpt'


def ensure_trained(cfg_name, epochs, batch_size, data_path, extra_tag, workers, teacher_ckpt=None, seed=None):
    """Train ``cfg_name`` with tools/train.py unless its final checkpoint exists; return the checkpoint path."""
    final = ckpt_dir(cfg_name, extra_tag) / f'checkpoint_epoch_{epochs}.pth'
    if final.exists():
        print(f'{final.relative_to(ROOT)} exists: not retrained')
        return final
    cmd = [sys.executable, ROOT / 'tools' / 'train.py', '--cfg_file', CFG_DIR / cfg_name,
           '--epochs', epochs, '--workers', workers, '--extra_tag', extra_tag, '--fix_random_seed',
           '--num_epochs_to_eval', 0, '--ckpt_save_interval', epochs]
    if batch_size is not None:
        cmd += ['--batch_size', batch_size]
    if seed is not None:
        cmd += ['--seed', seed]
    if teacher_ckpt is not None:
        cmd += ['--teacher_ckpt', teacher_ckpt]
    run(cmd + ['--set', 'DATA_CONFIG.DATA_PATH', str(data_path)])
    if not final.exists():
        raise SystemExit(f'quickstart: training finished but {final} was not written')
    return final


def main(argv=None):
    args = parse_args(argv)
    preset = PRESETS['tiny' if args.tiny else 'full']
    suffix = '_tiny' if args.tiny else ''
    data_path = Path(args.data_path or ROOT / 'data' / f'kitti_synth{suffix}').resolve()
    extra_tag = args.extra_tag or f'quickstart{suffix}'
    out_dir = Path(args.out or ROOT / 'output' / f'quickstart{suffix}').resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    ensure_dataset(data_path, preset, args.seed, args.workers)
    ckpts = {}
    teacher_ckpt = None
    for model in MODELS:
        epochs = preset['teacher_epochs'] if model.is_teacher else preset['student_epochs']
        stage(f'training {model.label} ({model.train_cfg}, {epochs} epochs)')
        ckpts[model.label] = ensure_trained(model.train_cfg, epochs, preset['batch_size'], data_path, extra_tag,
                                            args.workers, teacher_ckpt=teacher_ckpt if model.distilled else None,
                                            seed=args.seed)
        if model.is_teacher:
            teacher_ckpt = ckpts[model.label]

    stage('evaluating (KITTI metric, AP R40) and measuring size and CPU latency')
    from report_utils import evaluate_checkpoint, format_table  # tools/ is on sys.path

    rows = []
    for model in MODELS:
        rows.append(dict(label=model.label, **evaluate_checkpoint(CFG_DIR / model.eval_cfg, ckpts[model.label],
                                                                 data_path, workers=args.workers)))
    table = format_table(rows)
    wall = time.time() - t0
    print('\n' + table)
    print(f'\nquickstart wall time: {wall / 60:.1f} min')
    (out_dir / 'quickstart_table.md').write_text(table + f'\n\nwall time: {wall / 60:.1f} min\n')
    (out_dir / 'quickstart_results.json').write_text(json.dumps(dict(rows=rows, wall_s=wall), indent=2))
    print(f'table written to {out_dir / "quickstart_table.md"}')
    return rows


if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count() or 1))
    main()
