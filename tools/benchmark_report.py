"""Statistics, tables and figures of the distillation benchmark (tools/benchmark_distill.py) and the quickstart.

Results are ``{RunKey: result}`` (``benchmark_distill.RunKey``; a result is ``report_utils.evaluate_checkpoint``'s
dict): mean and std over seeds, the gain of a distilled student over the plain student of the same seed with a
95% Student-t interval over seeds, the share of the teacher-student gap closed, the teachers' convergence
verdicts; ``write_report`` writes BENCHMARK.md and the figures.
"""
import math
from pathlib import Path

import numpy as np
from report_utils import mean_std

METHOD_ORDER = ['plain', 'PointDistiller', 'PointDistiller frozen T-GCN', 'FitNet', 'logit KD', 'FG mimic']
CONVERGED_GAIN = 1.0  # mAP points over the last quarter of the teacher's schedule


# ---- statistics ---------------------------------------------------------------------------------------------------
def t_interval(values, level=0.95):
    """``(mean, std, lo, hi)`` of ``values`` (one per seed): sample std (ddof 1) and the two-sided Student-t
    interval of the mean, mean -+ t(level, n - 1) * std / sqrt(n); std and interval nan for one value."""
    from scipy import stats
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float('nan'), float('nan'), float('nan')
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1)) * std / math.sqrt(len(v))
    return float(v.mean()), std, float(v.mean()) - half, float(v.mean()) + half


def shown(lo, hi):
    """The verdict on a gain's interval: 'yes' when it lies above zero, 'loss' below zero, else 'no'."""
    return 'yes' if lo > 0 else 'loss' if hi < 0 else 'no'


def convergence(curve, threshold=CONVERGED_GAIN):
    """Verdict on a teacher curve ``[(epoch, map_3d, map_bev), ...]`` (sorted, the last point = the end of the
    schedule): the gain from the latest point at or before 3/4 of the schedule to the end, per metric; converged
    when both gains are below ``threshold`` points (None: no point that early) and the final mAP (3D or BEV)
    reaches ``threshold``: a curve flat at zero has learned nothing, it has not converged (``learned`` False)."""
    end = curve[-1]
    learned = max(end[1], end[2]) >= threshold
    early = [p for p in curve[:-1] if p[0] <= 0.75 * end[0]]
    if not early:
        return dict(ref_epoch=None, end_epoch=end[0], gain_3d=float('nan'), gain_bev=float('nan'), converged=None,
                    learned=learned)
    ref = early[-1]
    gains = end[1] - ref[1], end[2] - ref[2]
    return dict(ref_epoch=ref[0], end_epoch=end[0], gain_3d=gains[0], gain_bev=gains[1],
                converged=bool(max(gains) < threshold and learned), learned=learned)


def teacher_curves(results):
    """``{(teacher model, seed): [(epoch, map_3d, map_bev), ...]}`` from the teachers' evaluations."""
    curves = {}
    for key, r in results.items():
        if key.method == 'teacher' and (key.epoch is not None or r.get('epochs')):   # 0: a file's unknown schedule
            curves.setdefault((key.model, key.seed), []).append((key.epoch or r['epochs'], r['map_3d'], r['map_bev']))
    return {k: sorted(v) for k, v in curves.items()}


def row_order(model_method):
    """Sort key of a (model, method) row: detector family, its teacher first, then 4x before 16x, then methods in
    METHOD_ORDER (others last)."""
    model, method = model_method
    family, _, size = model.partition(' ')
    ratio = int(size[:-1]) if size.endswith('x') and size[:-1].isdigit() else 0
    return (family, ratio, METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def aggregate(results):
    """``{(model, method): {'n', 'map_3d': (mean, std), 'map_bev': ..., 'params', per-AP-key (mean, std)}}`` over
    the seeds' final checkpoints (std nan for one seed); per-AP keys are those that every seed's evaluation has."""
    groups = {}
    for key, r in results.items():
        if key.epoch is None:
            groups.setdefault((key.model, key.method), []).append(r)
    agg = {}
    for k, runs in groups.items():
        a = dict(n=len(runs), params=runs[0]['params'], gflops=runs[0]['gflops'],
                 latency_s=float(np.mean([r['latency_s'] for r in runs])))
        # AP keys every seed has: the KITTI evaluator (as OpenPCDet's) leaves out the aos keys of a run without
        # detections, so a student that detects nothing has fewer keys than its other seeds
        common = [m for m in runs[0]['ap'] if all(m in r['ap'] for r in runs)]
        for m in ('map_3d', 'map_bev', *common):
            v = [r[m] if m.startswith('map_') else r['ap'][m] for r in runs]
            a[m] = t_interval(v)[:2]
        agg[k] = a
    return agg


def distilled_pairs(results):
    """``[(model, method, seeds, runs, plain_runs, teacher_runs)]`` per distilled (model, method) with a plain
    student of the same seed: ``runs`` / ``plain_runs`` ``{seed: result}`` of the final checkpoints, ``seeds`` the
    seeds both have, ``teacher_runs`` the family teacher's final evaluations (one shared teacher)."""
    runs = {}
    for key, r in results.items():
        if key.epoch is None:
            runs.setdefault((key.model, key.method), {})[key.seed] = r
    pairs = []
    for model, method in sorted(runs, key=row_order):
        plain = runs.get((model, 'plain'), {})
        seeds = sorted(set(runs[(model, method)]) & set(plain))
        if method not in ('plain', 'teacher') and seeds:
            pairs.append((model, method, seeds, runs[(model, method)], plain,
                          runs.get((f'{model.split()[0]} teacher', 'teacher'), {})))
    return pairs


def paired_stats(results):
    """Per distilled (model, method): the gains over the plain student trained with the same seed, per metric
    (``t_interval`` of the gains, ``better`` = seeds with a positive gain, ``closed`` = mean gain / (teacher - mean
    plain) over the paired seeds; the teacher is the mean of its final evaluations, one shared teacher)."""
    rows = []
    for model, method, seeds, distilled, plain, teacher in distilled_pairs(results):
        row = dict(model=model, method=method, seeds=seeds)
        for m in ('map_3d', 'map_bev'):
            gains = [distilled[s][m] - plain[s][m] for s in seeds]
            gap = np.mean([t[m] for t in teacher.values()]) - np.mean([plain[s][m] for s in seeds]) \
                if teacher else float('nan')
            mean, std, lo, hi = t_interval(gains)
            row[m] = dict(gains=gains, mean=mean, std=std, lo=lo, hi=hi, shown=shown(lo, hi),
                          better=sum(g > 0 for g in gains), closed=mean / gap if gap > 0 else float('nan'))
        rows.append(row)
    return rows


def per_class_gains(results, level='moderate'):
    """Markdown lines of the paired-by-seed gains per class (``level`` AP R40, 3D and BEV): mean and 95% t interval
    over the seeds a row pairs; 'n/a' where a seed's evaluation lacks the key or one seed is paired."""
    from report_utils import CLASSES
    lines = [f'## Paired by seed, per class: {level} AP gain over the plain student', '',
             f'mean [95% t interval over seeds]; {2 * len(CLASSES)} intervals per row and no correction for their '
             'number, so one interval excluding zero is a lead, not a finding.', '',
             '| model | KD | seeds | ' + ' | '.join(f'{c} {m}' for c in CLASSES for m in ('3D', 'BEV')) + ' |',
             '|---|---|---:|' + '---:|' * (2 * len(CLASSES))]
    for model, method, seeds, distilled, plain, _ in distilled_pairs(results):
        cells = [model, method, str(len(seeds))]
        for c in CLASSES:
            for m in ('3d', 'bev'):
                ap = f'{c}_{m}/{level}_R40'
                if len(seeds) < 2 or any(ap not in r['ap'] for s in seeds for r in (distilled[s], plain[s])):
                    cells.append('n/a')
                    continue
                mean, _, lo, hi = t_interval([distilled[s]['ap'][ap] - plain[s]['ap'][ap] for s in seeds])
                cells.append(f'{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def paired_gains(results):
    """Markdown lines of the paired-by-seed gains (``paired_stats``)."""
    lines = ['## Paired by seed: gain over the plain student (moderate mAP)', '',
             'gain = distilled - plain with the same seed (same initial weights, same teacher), mean +- std over '
             'seeds; 95% CI = mean -+ t(0.975, n-1) std / sqrt(n) (Student t over seeds); shown = the interval '
             'excludes zero (loss: it lies below zero); gap closed = mean gain / (teacher - plain mean).', '',
             '| model | KD | seeds | better | gain 3D | 95% CI 3D | shown 3D | gap closed 3D | gain BEV | 95% CI BEV '
             '| shown BEV | gap closed BEV |', '|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|']
    for row in paired_stats(results):
        cells = [row['model'], row['method'], str(len(row['seeds'])), f'{row["map_3d"]["better"]}/{len(row["seeds"])}']
        for m in ('map_3d', 'map_bev'):
            s = row[m]
            one = len(row['seeds']) < 2
            cells += [mean_std((s['mean'], s['std']), sign=True), 'n/a' if one else f'[{s["lo"]:+.2f}, {s["hi"]:+.2f}]',
                      'n/a' if one else s['shown'], 'n/a' if math.isnan(s['closed']) else f'{100 * s["closed"]:.0f}%']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


# ---- the report ---------------------------------------------------------------------------------------------------
def val_instance_counts(data_path, point_cloud_range):
    """GT instances of the validation split as the KITTI metric counts them, per class: ``[easy, moderate, hard,
    moderate inside the detection range]`` (cumulative: moderate includes easy; the metric also counts objects
    outside the point-cloud range, which no detector can find)."""
    import pickle

    from pcdet.datasets.kitti.kitti_object_eval_python.eval import MAX_OCCLUSION, MAX_TRUNCATION, MIN_HEIGHT
    from report_utils import CLASSES
    infos = pickle.loads((Path(data_path) / 'kitti_infos_val.pkl').read_bytes())
    counts = {c: [0, 0, 0, 0] for c in CLASSES}
    x0, y0, _, x1, y1, _ = point_cloud_range
    for info in infos:
        a = info['annos']
        height = a['bbox'][:, 3] - a['bbox'][:, 1]
        centres = a['gt_boxes_lidar'][:, :2]
        for i, name in enumerate(a['name']):
            if name not in counts:
                continue
            for level in range(3):
                counts[name][level] += int(a['occluded'][i] <= MAX_OCCLUSION[level] and height[i] >= MIN_HEIGHT[level]
                                           and a['truncated'][i] <= MAX_TRUNCATION[level])
            x, y = centres[i]
            counts[name][3] += int(a['occluded'][i] <= MAX_OCCLUSION[1] and height[i] >= MIN_HEIGHT[1]
                                   and a['truncated'][i] <= MAX_TRUNCATION[1] and x0 <= x < x1 and y0 <= y < y1)
    return counts


def protocol_lines(protocol):
    """Markdown: data, runs (schedules, seeds, wall time; a warning for a run whose starts ran on more than one
    machine) and the validation instance counts."""
    if not protocol:
        return []
    d = protocol['data']
    lines = ['## Protocol', '', f'{d["num_train"]} training / {d["num_val"]} validation synthetic frames '
             f'({d["data_path"]}), batch {d.get("batch", 4)}; one teacher per family '
             f'(seed {protocol["teacher_seed"]}), '
             'shared by every student and seed; docs/RESULTS_PROTOCOL.md.', '',
             '| run | students | seeds | methods | epochs (teacher, student) | device | predicted min (idle CPU, first '
             'start) | wall min (all starts) |',
             '|---|---|---|---|---|---|---:|---:|']
    for name, r in protocol['runs'].items():
        epochs = ', '.join(f'{f} {e[0]}/{e[1]}' for f, e in r['schedule'].items())
        lines.append(f'| {name} | {", ".join(r["students"])} | {" ".join(map(str, r["seeds"]))} | '
                     f'{", ".join(r["methods"])} | {epochs} | {r["device"]} x {r["jobs"]} | '
                     f'{r.get("predicted_s", float("nan")) / 60:.0f} | {r.get("wall_s", 0) / 60:.0f} |')
    for name, r in protocol['runs'].items():
        if len(r.get('machines', [])) > 1:
            lines += ['', f'**Warning:** the starts of run {name} ran on {len(r["machines"])} machines '
                      f'({"; ".join(r["machines"])}). Training is deterministic per processor only, so a seed whose '
                      'plain and distilled students trained on different machines is not a paired comparison '
                      '(docs/RESULTS_PROTOCOL.md, "One machine per comparison").']
    lines += ['', 'Validation instances the metric counts (cumulative: moderate includes easy):', '',
              '| class | easy | moderate | hard | moderate inside the range |', '|---|---:|---:|---:|---:|']
    lines += [f'| {c} | ' + ' | '.join(map(str, n)) + ' |' for c, n in protocol['val_counts'].items()]
    return lines + ['']


def convergence_lines(results):
    lines = ['## Teachers: validation mAP over the schedule', '',
             f'converged = less than {CONVERGED_GAIN:g} point gained (3D and BEV) from the last checkpoint at or '
             'before 3/4 of the schedule to its end.', '',
             '| teacher | seed | epoch: mAP 3D / BEV | gain last quarter 3D / BEV | converged |',
             '|---|---:|---|---|---|']
    for (model, seed), curve in sorted(teacher_curves(results).items()):
        v = convergence(curve)
        verdict = {True: 'yes', False: 'NO', None: 'unknown (no early checkpoint)'}[v['converged']]
        verdict += '' if v['learned'] else ' (nothing learned: final mAP below 1)'
        points = ', '.join(f'{e}: {a:.2f} / {b:.2f}' for e, a, b in curve)
        lines.append(f'| {model} | {seed} | {points} | {v["gain_3d"]:+.2f} / {v["gain_bev"]:+.2f} (epoch '
                     f'{v["ref_epoch"]} -> {v["end_epoch"]}) | {verdict} |')
    return lines + ['']


def write_report(results, out, protocol=None):
    """``out/BENCHMARK.md`` (protocol, teacher curves, mean +- std per row in the paper's Table 1/2 layout, paired
    gains, per class too) and the figures."""
    from report_utils import CLASSES, LEVELS
    out = Path(out)
    agg = aggregate(results)
    order = sorted(agg, key=row_order)
    lines = ['# Distillation benchmark (synthetic KITTI-format set, KITTI val metric AP R40)', '',
             *protocol_lines(protocol), *convergence_lines(results),
             '## Results', '', 'mean +- std over seeds; mAP = mean of the Car/Pedestrian/Cyclist moderate APs (the '
             'paper\'s mAP).', '',
             '| model | KD | seeds | params (M) | GFLOPs | mAP 3D | mAP BEV |', '|---|---|---:|---:|---:|---:|---:|']
    for k in order:
        a = agg[k]
        lines.append(f'| {k[0]} | {k[1]} | {a["n"]} | {a["params"] / 1e6:.2f} | {a["gflops"]:.1f} | '
                     f'{mean_std(a["map_3d"])} | {mean_std(a["map_bev"])} |')
    for metric, title in (('bev', 'Table 1 layout: BEV AP R40'), ('3d', 'Table 2 layout: 3D AP R40')):
        lines += ['', f'## {title} (easy/moderate/hard, means)', '',
                  '| model | KD | ' + ' | '.join(CLASSES) + ' | mAP |', '|---|---|' + '---|' * (len(CLASSES) + 1)]
        for k in order:
            a = agg[k]
            cells = ['/'.join(f'{a.get(f"{c}_{metric}/{lv}_R40", (float("nan"),))[0]:.1f}' for lv in LEVELS)
                     for c in CLASSES]
            lines.append(f'| {k[0]} | {k[1]} | ' + ' | '.join(cells) + f' | {a[f"map_{metric}"][0]:.1f} |')
    lines += ['', *paired_gains(results), '', *per_class_gains(results)]
    (out / 'BENCHMARK.md').write_text('\n'.join(lines) + '\n')
    plot_map_vs_params(agg, out / 'map_vs_params.png')
    plot_teacher_curves(teacher_curves(results), out / 'teacher_curve.png')
    plot_paired_gains(paired_stats(results), out / 'paired_gains.png')


def save_two_panels(png, draw, legend=True):
    """A figure of two panels, moderate mAP 3D and BEV: ``draw(ax, metric)`` fills each (metric 'map_3d' /
    'map_bev'); saved to ``png``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ('map_3d', 'map_bev')):
        draw(ax, metric)
        ax.grid(alpha=0.3)
    if legend:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def plot_map_vs_params(agg, png):
    def draw(ax, metric):
        for method in sorted({m for _, m in agg}, key=lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else -1):
            pts = sorted((a['params'] / 1e6, a[metric][0], np.nan_to_num(a[metric][1]))
                         for (_, m), a in agg.items() if m == method)
            x, y, e = map(np.array, zip(*pts))
            ax.errorbar(x, y, yerr=e, marker='o', capsize=3, label=method, linestyle='none' if len(x) == 1 else '-')
        ax.set_xscale('log')
        ax.set_xlabel('parameters (M)')
        ax.set_ylabel(f'moderate mAP {metric[4:].upper()} (R40)')
    save_two_panels(png, draw)


def plot_teacher_curves(curves, png):
    """Each teacher's validation mAP at its saved epochs."""
    def draw(ax, metric):
        for (model, seed), curve in sorted(curves.items()):
            col = 1 if metric == 'map_3d' else 2
            ax.plot([p[0] for p in curve], [p[col] for p in curve], marker='o', label=f'{model} (seed {seed})')
        ax.set_xlabel('epoch')
        ax.set_ylabel(f'moderate mAP {metric[4:].upper()} (R40)')
    if curves:
        save_two_panels(png, draw)


def plot_paired_gains(rows, png):
    """Gain over the plain student per (row, method): the mean with its 95% interval, the seeds as dots."""
    def draw(ax, metric):
        for y, row in enumerate(rows):
            s = row[metric]
            ax.plot(s['gains'], [y] * len(s['gains']), '.', color='0.6')
            if not math.isnan(s['lo']):
                ax.plot([s['lo'], s['hi']], [y, y], '-', color='C0')
            ax.plot([s['mean']], [y], 'o', color='C0')
        ax.axvline(0, color='k', lw=0.8)
        ax.set_yticks(range(len(rows)), [f'{r["model"]}: {r["method"]}' if metric == 'map_3d' else ''
                                         for r in rows], fontsize=7)
        ax.set_xlabel(f'gain over the plain student, mAP {metric[4:].upper()}')
    if rows:
        save_two_panels(png, draw, legend=False)


def bev_examples(ckpts, data_path, png, frames=(0, 1, 2)):
    """One row per validation frame, one panel per model: points, GT (green) and predictions (red)."""
    from visualize_bev import predict, render
    panels = []
    for index in frames:
        for label, cfg_name, ckpt in ckpts:
            pts, gt, boxes, pcr, fid = predict(cfg_name, ckpt, index, data_path)
            panels.append(dict(points=pts, pc_range=pcr, gt_boxes=gt, pred_boxes=boxes, title=f'{fid}: {label}'))
    render(panels, png, ncols=len(ckpts))
