"""Quickstart: distil a 4x PointPillars student on the embedded synthetic set and print the comparison.

Stages (each reused when rerun, so an interrupted quickstart continues where it stopped):
  1. generate the synthetic KITTI-format set (``pcdet.datasets.synthetic.generate``) and its infos;
  2. the teacher (``kitti_synth_models/pointpillar.yaml``): the checkpoint shipped in ``checkpoints/`` (its sha256
     is checked), or trained here with ``--train_teacher``;
  3. for every seed, the 4x student without distillation (``pointpillar_4x.yaml``) and with PointDistiller
     (``pointpillar_4x_pointdistiller.yaml``), both from the seed's initial weights and sample order, two trainings
     at a time (tools/benchmark_distill.py's stages: the benchmark's protocol at the quickstart's size);
  4. evaluate every checkpoint (KITTI metric, R40), time the networks in interleaved rounds, and print the table
     and the gain of PointDistiller over the plain student paired by seed, with its 95% interval.

Usage (from anywhere): ``python tools/quickstart.py`` (the README's ``make quickstart`` runs it in the venv).
``--tiny`` shrinks every stage to seconds; the test suite runs it that way. The shipped teacher was made with
``python tools/quickstart.py --train_teacher --ship_teacher checkpoints/quickstart_teacher_pointpillar.pth``.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CFG_DIR = ROOT / 'tools' / 'cfgs' / 'kitti_synth_models'
sys.path[:0] = [str(ROOT), str(ROOT / 'tools')]

# Sizes of the two modes; 'full' fits in about 20 minutes on 2 CPU cores with the shipped teacher, install included
# (the teacher's 24 epochs add about 15 minutes with --train_teacher).
PRESETS = {
    'full': dict(num_train=240, num_val=80, teacher_epochs=24, student_epochs=8, seeds=(0, 1, 2)),
    'tiny': dict(num_train=4, num_val=2, teacher_epochs=1, student_epochs=1, seeds=(0, 1)),
}
DATA_SEED = 0   # the synthetic set's seed: the shipped teacher was trained on its training split
TAG_PREFIX = 'quickstart'   # its shipped teacher: benchmark_distill.SHIPPED_TEACHERS[(TAG_PREFIX, 'PointPillars')]
STUDENT = 'PointPillars 4x'
# table rows: (label, benchmark model, benchmark method, config the checkpoint is evaluated and timed with)
ROWS = [('teacher PointPillars', 'PointPillars teacher', 'teacher', 'pointpillar.yaml'),
        ('4x student', STUDENT, 'plain', 'pointpillar_4x.yaml'),
        ('4x student + PointDistiller', STUDENT, 'PointDistiller', 'pointpillar_4x.yaml')]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--tiny', action='store_true', help='a few frames and one epoch per model (for tests)')
    p.add_argument('--data_path', default=None, help='where the synthetic set lives (default data/kitti_synth, '
                                                     'data/kitti_synth_tiny with --tiny)')
    p.add_argument('--extra_tag', default=None, help='output folder tags start with it (default quickstart / '
                                                     'quickstart_tiny)')
    p.add_argument('--workers', type=int, default=2, help='processes generating the synthetic set')
    p.add_argument('--seeds', type=int, nargs='+', default=None, help="students' seeds (default 0 1 2; tiny 0 1)")
    p.add_argument('--jobs', type=int, default=2, help='trainings at once (one thread each)')
    p.add_argument('--train_teacher', action='store_true', help='train the teacher here instead of using the '
                                                                'shipped checkpoint')
    p.add_argument('--ship_teacher', default=None, metavar='PATH',
                   help='write the trained teacher (weights only) to PATH and print its sha256 (with --train_teacher)')
    p.add_argument('--out', default=None, help='tables, results and figures (default output/quickstart[_tiny]'
                                               '[_own_teacher])')
    args = p.parse_args(argv)
    if args.ship_teacher and not args.train_teacher:
        p.error('--ship_teacher writes the teacher this run trains: add --train_teacher')
    return args


def stage(msg):
    print(f'\n==== {msg}', flush=True)


def run(cmd):
    """Run a command, streaming its output; a failure stops the quickstart."""
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


def shipped_teacher():
    """The quickstart's shipped teacher checkpoint (``benchmark_distill.SHIPPED_TEACHERS``), after checking its sha256
    (a changed or truncated file is refused)."""
    from benchmark_distill import SHIPPED_TEACHERS, checked_file
    shipped = SHIPPED_TEACHERS[(TAG_PREFIX, 'PointPillars')]
    return checked_file(shipped.path, shipped.sha256)


def benchmark_args(args, preset, data_path, teacher_ckpt):
    """tools/benchmark_distill.py's arguments for the quickstart: its data, schedule, seeds and teacher, the plain
    and the PointDistiller 4x student."""
    import benchmark_distill
    argv = ['--run', 'quick', '--methods', 'PointDistiller', '--data_path', str(data_path),
            '--num_train', str(preset['num_train']), '--num_val', str(preset['num_val']),
            '--teacher_epochs', str(preset['teacher_epochs']), '--student_epochs', str(preset['student_epochs']),
            '--seeds', *map(str, args.seeds or preset['seeds']), '--jobs', str(args.jobs),
            '--tag_prefix', args.extra_tag or (f'{TAG_PREFIX}_tiny' if args.tiny else TAG_PREFIX),
            '--out', str(args.out_dir), '--device', 'cpu']
    return benchmark_distill.parse_args(argv + (['--teacher_ckpt', str(teacher_ckpt)] if teacher_ckpt else
                                                ['--train_teacher']))


def table_rows(results, latency):
    """One row per model: size, cost, (mean, std) over the seeds in ``results`` of mAP and every AP, the timing
    rounds."""
    from benchmark_report import aggregate
    agg = aggregate(results)
    rows = []
    for label, model, method, _ in ROWS:
        a = agg[(model, method)]
        rows.append(dict(label=label, n=a['n'], params=a['params'], gflops=a['gflops'],
                         map_3d=a['map_3d'], map_bev=a['map_bev'], **latency[label],
                         ap={k: v for k, v in a.items() if '_R40' in k or '_R11' in k}))
    return rows


def time_models(finals, bench):
    """Interleaved timing of the teacher and the first seed's plain and distilled students (same network)."""
    from report_utils import build_eval_model, measure_latency_interleaved
    models = {}
    for label, model, method, cfg in ROWS:
        ckpt = finals[(model, method, bench.teacher_seed if method == 'teacher' else bench.seeds[0])]
        _, dataset, _, net = build_eval_model(CFG_DIR / cfg, ckpt, bench.data_path, workers=0)
        models[label] = (net, dataset)
    return measure_latency_interleaved(models)


def main(argv=None):
    args = parse_args(argv)
    preset = PRESETS['tiny' if args.tiny else 'full']
    suffix = '_tiny' if args.tiny else ''
    data_path = Path(args.data_path or ROOT / 'data' / f'kitti_synth{suffix}').resolve()
    # a teacher trained here gets its own folder: results of two teachers never share one report
    own = '_own_teacher' if args.train_teacher else ''
    args.out_dir = Path(args.out or ROOT / 'output' / f'quickstart{suffix}{own}').resolve()
    t0 = time.time()

    ensure_dataset(data_path, preset, DATA_SEED, args.workers)
    teacher = None if args.train_teacher else shipped_teacher()
    stage(f'teacher: {"trained here" if teacher is None else teacher.relative_to(ROOT)}; 4x students plain and with '
          f'PointDistiller, seeds {" ".join(map(str, args.seeds or preset["seeds"]))} ({preset["student_epochs"]} '
          f'epochs, {args.jobs} at a time)')
    from benchmark_distill import run_protocol
    from benchmark_report import paired_gains
    from report_utils import format_table
    bench = benchmark_args(args, preset, data_path, teacher)
    results, finals = run_protocol(bench)
    if args.ship_teacher:
        from benchmark_distill import write_teacher_weights
        sha = write_teacher_weights(finals[('PointPillars teacher', 'teacher', bench.teacher_seed)], args.ship_teacher)
        print(f'teacher weights written to {args.ship_teacher}: sha256 {sha}')

    stage('timing the networks (interleaved rounds, batch 1)')
    # this run's seeds only (an earlier run into the same folder may have had others)
    results_now = {k: v for k, v in results.items() if k.epoch is None and (k.method == 'teacher' or
                                                                            k.seed in bench.seeds)}
    rows = table_rows(results_now, time_models(finals, bench))
    table = format_table(rows) + '\n\n' + '\n'.join(paired_gains(results_now))
    wall = time.time() - t0
    print('\n' + table)
    print(f'\nquickstart wall time: {wall / 60:.1f} min')
    (args.out_dir / 'quickstart_table.md').write_text(table + f'\n\nwall time: {wall / 60:.1f} min\n')
    (args.out_dir / 'quickstart_results.json').write_text(json.dumps(dict(rows=rows, wall_s=wall), indent=2))
    print(f'table written to {args.out_dir / "quickstart_table.md"}; figures and BENCHMARK.md beside it')
    return rows


if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count() or 1))
    main()
