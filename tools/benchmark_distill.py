"""The distillation benchmark on the synthetic set, in the paper's table layout (Tables 1-3 of PointDistiller).

Stages, each resumable (a finished training or evaluation is reused when rerun):
  teachers (PointPillars, SECOND) -> students (4x/16x PointPillars, 4x SECOND) x methods (plain, PointDistiller,
  FitNet, logit KD, FG mimic; the baselines on 4x PointPillars) x seeds -> evaluation -> results.

Writes ``<out>/benchmark_results.json`` (every run's AP dict), ``<out>/BENCHMARK.md`` (mean +- std over seeds per
cell), ``<out>/map_vs_params.png`` and ``<out>/bev_examples.png``.

    python tools/benchmark_distill.py --seeds 0 1 2 --out output/benchmark
    python tools/benchmark_distill.py --quick --seeds 0  # the quickstart's runs + the baselines, 4x PointPillars
    python tools/benchmark_distill.py --quick --seeds 1 2 --methods PointDistiller   # more seeds, same schedule
    python tools/benchmark_distill.py --quick --students "PointPillars 16x" --seeds 0 1 2   # the other students
    python tools/benchmark_distill.py --quick --teacher_epochs 24 --student_epochs 16 --out output/benchmark_e24
"""
import argparse
import json
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CFG_DIR = ROOT / 'tools' / 'cfgs' / 'kitti_synth_models'
sys.path[:0] = [str(ROOT), str(ROOT / 'tools')]

TEACHERS = {'PointPillars': 'pointpillar.yaml', 'SECOND': 'second.yaml'}
# student label -> (teacher, plain cfg, {method: distillation cfg})
STUDENTS = {
    'PointPillars 4x': ('PointPillars', 'pointpillar_4x.yaml', {
        'PointDistiller': 'pointpillar_4x_pointdistiller.yaml',
        'FitNet': 'pointpillar_4x_fitnet.yaml',
        'logit KD': 'pointpillar_4x_logit_kd.yaml',
        'FG mimic': 'pointpillar_4x_fg_mimic.yaml'}),
    'PointPillars 16x': ('PointPillars', 'pointpillar_16x.yaml', {
        'PointDistiller': 'pointpillar_16x_pointdistiller.yaml'}),
    'SECOND 4x': ('SECOND', 'second_4x.yaml', {'PointDistiller': 'second_4x_pointdistiller.yaml'}),
}
METHOD_ORDER = ['plain', 'PointDistiller', 'FitNet', 'logit KD', 'FG mimic']
# one evaluated training: model label ('PointPillars 4x', 'PointPillars teacher'), method ('plain', ...), seed
RunKey = namedtuple('RunKey', ['model', 'method', 'seed'])


def load_results(path):
    """``{RunKey: result dict}`` from ``benchmark_results.json`` (a list of ``{model, method, seed, result}``;
    the older ``{"model|method|seed": result}`` layout is read too). Empty when the file does not exist."""
    if not Path(path).exists():
        return {}
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        return {RunKey(*k.split('|')[:2], int(k.split('|')[2])): v for k, v in data.items()}
    return {RunKey(r['model'], r['method'], int(r['seed'])): r['result'] for r in data}


def save_results(results, path):
    rows = [dict(model=k.model, method=k.method, seed=k.seed, result=v) for k, v in results.items()]
    Path(path).write_text(json.dumps(rows, indent=1))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--students', nargs='+', default=None, choices=list(STUDENTS),
                   help='default: all three (only PointPillars 4x with --quick)')
    p.add_argument('--teacher_epochs', type=int, default=None, help='default 20 (8 with --quick)')
    p.add_argument('--student_epochs', type=int, default=None, help='default 16 (8 with --quick)')
    p.add_argument('--num_train', type=int, default=None, help='default 1000 (240 with --quick)')
    p.add_argument('--num_val', type=int, default=None, help='default 300 (80 with --quick)')
    p.add_argument('--data_path', default=None, help='default data/kitti_synth_bench (data/kitti_synth with --quick)')
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--out', default=str(ROOT / 'output' / 'benchmark'))
    p.add_argument('--methods', nargs='+', default=METHOD_ORDER[1:], choices=METHOD_ORDER[1:],
                   help='distillation methods to run (the plain student and the teachers always run)')
    p.add_argument('--quick', action='store_true',
                   help="the quickstart's data and schedule (4x PointPillars unless --students says otherwise); "
                        "seed 0 reuses the quickstart's three trainings")
    args = p.parse_args(argv)
    if args.quick:
        from quickstart import PRESETS
        defaults = dict(PRESETS['full'], students=['PointPillars 4x'],
                        data_path=str(ROOT / 'data' / 'kitti_synth'))
    else:
        defaults = dict(teacher_epochs=20, student_epochs=16, num_train=1000, num_val=300, students=list(STUDENTS),
                        data_path=str(ROOT / 'data' / 'kitti_synth_bench'))
    explicit_schedule = args.teacher_epochs is not None or args.student_epochs is not None
    for key in ('students', 'teacher_epochs', 'student_epochs', 'num_train', 'num_val', 'data_path'):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    args.explicit_schedule = explicit_schedule
    return args


def run_tag(args, seed):
    """Output folder tag of one seed's runs: a run on the quickstart's data and schedule with seed 0 is the
    quickstart's own (its three trainings are not repeated); another schedule gets its own folders."""
    if args.quick and not args.explicit_schedule:
        return 'quickstart' if seed == 0 else f'quickstart_seed{seed}'
    prefix = 'quick' if args.quick else 'bench'
    sched = f'_e{args.teacher_epochs}-{args.student_epochs}' if args.explicit_schedule else ''
    return f'{prefix}{sched}_seed{seed}'


def train(cfg_name, epochs, seed, data_path, workers, tag, teacher_ckpt=None):
    from quickstart import ensure_trained
    return ensure_trained(cfg_name, epochs, None, data_path, tag, workers, teacher_ckpt, seed)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_path = Path(args.data_path)
    results_file = out / 'benchmark_results.json'
    results = load_results(results_file)

    from quickstart import ensure_dataset
    from report_utils import evaluate_checkpoint
    ensure_dataset(data_path, dict(num_train=args.num_train, num_val=args.num_val), 0, args.workers)

    def record(key, cfg_eval, ckpt):
        if key not in results:
            t0 = time.time()
            results[key] = evaluate_checkpoint(CFG_DIR / cfg_eval, ckpt, data_path, workers=args.workers)
            results[key]['eval_s'] = time.time() - t0
            save_results(results, results_file)  # after every run: resumable
        return results[key]

    needed_teachers = {STUDENTS[s][0] for s in args.students}
    for seed in args.seeds:
        teacher_ckpts = {}
        for tname in sorted(needed_teachers):
            cfg_t = TEACHERS[tname]
            teacher_ckpts[tname] = train(cfg_t, args.teacher_epochs, seed, data_path, args.workers,
                                         run_tag(args, seed))
            record(RunKey(f'{tname} teacher', 'teacher', seed), cfg_t, teacher_ckpts[tname])
        for sname in args.students:
            tname, plain_cfg, methods = STUDENTS[sname]
            ckpt = train(plain_cfg, args.student_epochs, seed, data_path, args.workers, run_tag(args, seed))
            record(RunKey(sname, 'plain', seed), plain_cfg, ckpt)
            for method, kd_cfg in [(m, c) for m, c in methods.items() if m in args.methods]:
                path = train(kd_cfg, args.student_epochs, seed, data_path, args.workers, run_tag(args, seed),
                             teacher_ckpts[tname])
                record(RunKey(sname, method, seed), plain_cfg, path)

    write_report(results, out)
    if 'PointPillars 4x' in args.students and 'PointDistiller' in args.methods:
        seed = args.seeds[0]

        def ckpt(cfg_name, epochs):  # all trained above: found, not retrained
            return train(cfg_name, epochs, seed, data_path, args.workers, run_tag(args, seed))

        ckpts = [('teacher', TEACHERS['PointPillars'], ckpt(TEACHERS['PointPillars'], args.teacher_epochs)),
                 ('4x plain', 'pointpillar_4x.yaml', ckpt('pointpillar_4x.yaml', args.student_epochs)),
                 ('4x + PointDistiller', 'pointpillar_4x.yaml',
                  ckpt('pointpillar_4x_pointdistiller.yaml', args.student_epochs))]
        bev_examples(ckpts, data_path, out / 'bev_examples.png')
    print((out / 'BENCHMARK.md').read_text())


def bev_examples(ckpts, data_path, png, frames=(0, 1, 2)):
    """One row per validation frame, one panel per model: points, GT (green) and predictions (red)."""
    from visualize_bev import predict, render
    panels = []
    for index in frames:
        for label, cfg_name, ckpt in ckpts:
            pts, gt, boxes, pcr, fid = predict(CFG_DIR / cfg_name, ckpt, index, data_path)
            panels.append(dict(points=pts, pc_range=pcr, gt_boxes=gt, pred_boxes=boxes, title=f'{fid}: {label}'))
    render(panels, png, ncols=len(ckpts))


def row_order(model_method):
    """Sort key of a (model, method) row: detector family, its teacher first, then 4x before 16x, then methods in
    METHOD_ORDER (others last)."""
    model, method = model_method
    family, _, size = model.partition(' ')
    ratio = int(size[:-1]) if size.endswith('x') and size[:-1].isdigit() else 0
    return (family, ratio, METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def aggregate(results):
    """{(model, method): {'n', 'map_3d': (mean, std), 'map_bev': ..., 'params', per-AP-key (mean, std)}}."""
    groups = {}
    for key, r in results.items():
        groups.setdefault((key.model, key.method), []).append(r)
    agg = {}
    for k, runs in groups.items():
        a = dict(n=len(runs), params=runs[0]['params'], gflops=runs[0]['gflops'],
                 latency_s=float(np.mean([r['latency_s'] for r in runs])))
        for m in ('map_3d', 'map_bev'):
            v = np.array([r[m] for r in runs])
            a[m] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
        for apk in runs[0]['ap']:
            v = np.array([r['ap'][apk] for r in runs])
            a[apk] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
        agg[k] = a
    return agg


def write_report(results, out):
    from report_utils import CLASSES, LEVELS
    agg = aggregate(results)
    order = sorted(agg, key=row_order)
    lines = ['# Distillation benchmark (synthetic KITTI-format set, KITTI val metric AP R40)', '',
             'mean +- std over seeds; mAP = mean of the Car/Pedestrian/Cyclist moderate APs (the paper\'s mAP).', '',
             '| model | KD | seeds | params (M) | GFLOPs | mAP 3D | mAP BEV |', '|---|---|---:|---:|---:|---:|---:|']
    for k in order:
        a = agg[k]
        lines.append(f'| {k[0]} | {k[1]} | {a["n"]} | {a["params"] / 1e6:.2f} | {a["gflops"]:.1f} | '
                     f'{a["map_3d"][0]:.2f} +- {a["map_3d"][1]:.2f} | {a["map_bev"][0]:.2f} +- {a["map_bev"][1]:.2f} |')
    for metric, title in (('bev', 'Table 1 layout: BEV AP R40'), ('3d', 'Table 2 layout: 3D AP R40')):
        lines += ['', f'## {title} (easy/moderate/hard, means)', '',
                  '| model | KD | ' + ' | '.join(CLASSES) + ' | mAP |', '|---|---|' + '---|' * (len(CLASSES) + 1)]
        for k in order:
            a = agg[k]
            cells = ['/'.join(f'{a.get(f"{c}_{metric}/{lv}_R40", (float("nan"),))[0]:.1f}' for lv in LEVELS)
                     for c in CLASSES]
            lines.append(f'| {k[0]} | {k[1]} | ' + ' | '.join(cells) + f' | {a[f"map_{metric}"][0]:.1f} |')
    lines += ['', *paired_gains(results)]
    (out / 'BENCHMARK.md').write_text('\n'.join(lines) + '\n')
    plot_map_vs_params(agg, out / 'map_vs_params.png')


def _seed_std(values):
    """Sample std (ddof 1) over seeds; nan for a single seed."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else float('nan')


def paired_gains(results):
    """Markdown lines: each distilled student against the plain one trained with the same seed (same teacher,
    same data order), i.e. the issue's targets: gain > 2 x the plain student's seed std, >= half the gap."""
    runs = {}
    for key, r in results.items():
        runs.setdefault((key.model, key.method), {})[key.seed] = r
    lines = ['## Paired by seed: gain over the plain student (moderate mAP)', '',
             'gain = distilled - plain, same seed; 2 std = twice the plain student\'s std over seeds; gap closed = '
             'mean gain / (teacher - plain), means over the paired seeds.', '',
             '| model | KD | seeds | gain 3D | better | 2 std (plain) | gap closed 3D | gain BEV | gap closed BEV |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    for model, method in sorted(runs, key=row_order):
        by_seed = runs[(model, method)]
        plain = runs.get((model, 'plain'), {})
        teacher = runs.get((f'{model.split()[0]} teacher', 'teacher'), {})
        seeds = sorted(set(by_seed) & set(plain) & set(teacher))
        if method in ('plain', 'teacher') or not seeds:
            continue
        cells = []
        for m in ('map_3d', 'map_bev'):
            gain = np.array([by_seed[s][m] - plain[s][m] for s in seeds])
            gap = np.mean([teacher[s][m] - plain[s][m] for s in seeds])
            plain_std = _seed_std([plain[s][m] for s in seeds])
            cells.append((gain, plain_std, gain.mean() / gap if gap > 0 else float('nan'), _seed_std(gain)))
        (g3, s3, c3, sd3), (gb, _, cb, sdb) = cells
        lines.append(f'| {model} | {method} | {len(seeds)} | {g3.mean():+.2f} +- {sd3:.2f} | {(g3 > 0).sum()}/'
                     f'{len(seeds)} | {2 * s3:.2f} | {100 * c3:.0f}% | {gb.mean():+.2f} +- {sdb:.2f} | '
                     f'{100 * cb:.0f}% |')
    return lines


def plot_map_vs_params(agg, png):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ('map_3d', 'map_bev')):
        methods = sorted({m for _, m in agg}, key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else -1)
        for method in methods:
            pts = sorted((a['params'] / 1e6, a[metric][0], a[metric][1]) for (_, m), a in agg.items() if m == method)
            x, y, e = map(np.array, zip(*pts))
            ax.errorbar(x, y, yerr=e, marker='o', capsize=3, label=method, linestyle='none' if len(x) == 1 else '-')
        ax.set_xscale('log')
        ax.set_xlabel('parameters (M)')
        ax.set_ylabel(f'moderate mAP {metric[4:].upper()} (R40)')
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


if __name__ == '__main__':
    main()
