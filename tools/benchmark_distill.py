"""The distillation benchmark of issue 17: does distillation help, by how much, with what confidence.
Protocol, schedules and measured costs: docs/RESULTS_PROTOCOL.md; statistics, tables and figures:
tools/benchmark_report.py.

- One teacher per detector family, trained once (``--teacher_seed``) and evaluated at every quarter of its schedule
  (the convergence curve: converged = less than 1 mAP point gained over the last quarter), shared by every student
  and seed; where the repository ships it (``SHIPPED_TEACHERS``), the file and its recorded curve are used.
- Per student row: the plain student and each method (PointDistiller, PointDistiller with ``TEACHER_GCN: frozen``,
  FitNet) over seeds; plain and distilled runs of a seed share ``--seed`` and their initial weights (a saved
  per-seed initial checkpoint, ``--pretrained_model``).
- Per method: mean and std over seeds, the gain over the plain student paired by seed with a 95% t interval over
  seeds (a gain is "shown" where the interval excludes zero), and the share of the teacher-student gap closed.

Stages (trainings with tools/train.py, evaluations with report_utils.evaluate_checkpoint) run as subprocesses,
``--jobs`` at a time with ``--threads`` threads each; a finished training (its final checkpoint) or evaluation (its
entry in benchmark_results.json) is reused, so an interrupted run continues where it stopped.

    python tools/benchmark_distill.py --run headline   # 4x PointPillars students, 4 methods x 5 seeds
    python tools/benchmark_distill.py --run others     # 16x PointPillars and SECOND 4x, 4 methods x 3 seeds
    python tools/benchmark_distill.py --run headline --dry_run       # the plan and its predicted wall time
    python tools/benchmark_distill.py --run all --device cuda --seeds 0 1 2 3 4 5 6 7 8 9 --epochs_scale 4 \\
        --jobs 4 --out output/benchmark_gpu                          # a larger version on a GPU
    python tools/benchmark_distill.py --quick --seeds 0 1 2          # the quickstart's data and schedule

Writes to ``--out``: ``benchmark_results.json`` (a list of {model, method, seed, [epoch,] result}),
``BENCHMARK.md``, ``benchmark_protocol.json`` (data, schedules, validation instance counts, wall times),
``stage_times.json``, the figures ``map_vs_params.png``, ``teacher_curve.png``, ``paired_gains.png``,
``bev_examples.png``, and ``logs/`` (one per stage), ``init/`` (initial weights), ``evals/``.
"""
import argparse
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Callable, NamedTuple, Optional


ROOT = Path(__file__).resolve().parents[1]
CFG_DIR = ROOT / 'tools' / 'cfgs' / 'kitti_synth_models'
BENCH_CFG_DIR = ROOT / 'benchmarks' / 'cfgs'
RUNS_ROOT = ROOT / 'output'  # where tools/train.py writes <EXP_GROUP_PATH>/<cfg stem>/<extra_tag>/
sys.path[:0] = [str(ROOT), str(ROOT / 'tools')]
from benchmark_report import METHOD_ORDER, bev_examples, val_instance_counts, write_report  # noqa: E402

TEACHERS = {'PointPillars': CFG_DIR / 'pointpillar.yaml', 'SECOND': CFG_DIR / 'second_coarse.yaml',
            'PointRCNN': CFG_DIR / 'pointrcnn.yaml'}
# student label -> (teacher family, plain cfg, {method: distillation cfg})
STUDENTS = {
    'PointPillars 4x': ('PointPillars', CFG_DIR / 'pointpillar_4x.yaml', {
        'PointDistiller': CFG_DIR / 'pointpillar_4x_pointdistiller.yaml',
        'PointDistiller frozen T-GCN': BENCH_CFG_DIR / 'pointpillar_4x_pointdistiller_frozen_tgcn.yaml',
        'FitNet': CFG_DIR / 'pointpillar_4x_fitnet.yaml',
        'logit KD': CFG_DIR / 'pointpillar_4x_logit_kd.yaml',
        'FG mimic': CFG_DIR / 'pointpillar_4x_fg_mimic.yaml'}),
    'PointPillars 16x': ('PointPillars', CFG_DIR / 'pointpillar_16x.yaml', {
        'PointDistiller': CFG_DIR / 'pointpillar_16x_pointdistiller.yaml',
        'PointDistiller frozen T-GCN': BENCH_CFG_DIR / 'pointpillar_16x_pointdistiller_frozen_tgcn.yaml',
        'FitNet': CFG_DIR / 'pointpillar_16x_fitnet.yaml'}),
    'SECOND 4x': ('SECOND', CFG_DIR / 'second_coarse_4x.yaml', {
        'PointDistiller': CFG_DIR / 'second_coarse_4x_pointdistiller.yaml',
        'PointDistiller frozen T-GCN': BENCH_CFG_DIR / 'second_coarse_4x_pointdistiller_frozen_tgcn.yaml',
        'FitNet': CFG_DIR / 'second_coarse_4x_fitnet.yaml'}),
    'PointRCNN 8x': ('PointRCNN', CFG_DIR / 'pointrcnn_8x.yaml', {
        'PointDistiller': CFG_DIR / 'pointrcnn_8x_pointdistiller.yaml'}),
}
PROTOCOL_METHODS = METHOD_ORDER[1:4]
BATCH = 4   # frames per training step, every family but PointRCNN
# PointRCNN's synthetic configs train 2 frames per step (BATCH_SIZE_PER_GPU 2): 4,096 points each on one thread
FAMILY_BATCH = {'PointPillars': BATCH, 'SECOND': BATCH, 'PointRCNN': 2}


class RunKey(NamedTuple):
    """One evaluated checkpoint: model label ('PointPillars 4x', 'PointPillars teacher'), method ('plain',
    'teacher', ...), seed; epoch None = the run's final checkpoint, else an intermediate one (the teacher's curve)."""
    model: str
    method: str
    seed: int
    epoch: Optional[int] = None


# CPU seconds per training step (batch 4, one thread, data loading in the process) measured with a few steps on
# this project's shared 2-core machine (docs/RESULTS_PROTOCOL.md); they only feed the --dry_run prediction.
STEP_S = {'pointpillar': 0.64, 'pointpillar_4x': 0.33, 'pointpillar_4x_pointdistiller': 0.53,
          'pointpillar_4x_pointdistiller_frozen_tgcn': 0.52, 'pointpillar_4x_fitnet': 0.45,
          'pointpillar_4x_logit_kd': 0.47, 'pointpillar_4x_fg_mimic': 0.51,
          'pointpillar_16x': 0.24, 'pointpillar_16x_pointdistiller': 0.44,
          'pointpillar_16x_pointdistiller_frozen_tgcn': 0.44, 'pointpillar_16x_fitnet': 0.36,
          'second_coarse': 0.96, 'second_coarse_4x': 0.45, 'second_coarse_4x_pointdistiller': 0.88,
          'second_coarse_4x_pointdistiller_frozen_tgcn': 0.86, 'second_coarse_4x_fitnet': 0.80,
          # batch 2 (FAMILY_BATCH), benchmarks/bench_step_cost.py on a loaded machine
          'pointrcnn': 3.72, 'pointrcnn_8x': 1.08, 'pointrcnn_8x_pointdistiller': 2.14}
# CPU seconds per validation frame of an evaluation (data, network, NMS, metric; estimates from untrained models)
EVAL_FRAME_S = {'PointPillars teacher': 0.12, 'PointPillars 4x': 0.07, 'PointPillars 16x': 0.05,
                'SECOND teacher': 0.2, 'SECOND 4x': 0.12, 'PointRCNN teacher': 0.3, 'PointRCNN 8x': 0.15}
STAGE_START_S = 15.0  # interpreter, torch, dataset and model set-up of one subprocess


class ShippedTeacher(NamedTuple):
    """A teacher this tool trained once and the repository ships (weights only): the runs of its data (tag prefix)
    and teacher schedule distil from it instead of training it again, unless ``--train_teacher``."""
    path: Path
    sha256: str
    epochs: int


# (tag prefix, family) -> the shipped teacher, each with the command that made it
SHIPPED_TEACHERS = {
    # python tools/quickstart.py --train_teacher --ship_teacher checkpoints/quickstart_teacher_pointpillar.pth
    ('quickstart', 'PointPillars'): ShippedTeacher(
        ROOT / 'checkpoints' / 'quickstart_teacher_pointpillar.pth',
        '85c20e28c78b11cf363110b9254f5d510b97172277df678e8ae74d10ec19ab94', 24),
    # python tools/benchmark_distill.py --run headline --train_teacher --teacher_only --jobs 1 --threads 2 \
    #     --workers 1 --ship_teacher checkpoints/bench_teacher_pointpillar.pth
    ('bench', 'PointPillars'): ShippedTeacher(
        ROOT / 'checkpoints' / 'bench_teacher_pointpillar.pth',
        '0bb25dfb2bcd8b520495a19b78b7e4b7a3473f045cc081b8bcb99f413c22424c', 40),
}


class Preset(NamedTuple):
    """One ``--run``: student rows, seeds, data, tag prefix and epochs per detector family (teacher, student)."""
    students: tuple
    seeds: tuple
    num_train: int
    num_val: int
    data_path: str
    tag_prefix: str
    schedule: dict


BENCH_DATA = dict(num_train=1000, num_val=500, data_path='data/kitti_synth_bench', tag_prefix='bench',
                  schedule={'PointPillars': (40, 4), 'SECOND': (8, 3), 'PointRCNN': (3, 1)})
RUNS = {
    'headline': Preset(('PointPillars 4x',), (0, 1, 2, 3, 4), **BENCH_DATA),
    'others': Preset(('PointPillars 16x', 'SECOND 4x'), (0, 1, 2), **BENCH_DATA),
    'pointrcnn': Preset(('PointRCNN 8x',), (0, 1, 2), **BENCH_DATA),
    'all': Preset(tuple(STUDENTS), (0, 1, 2, 3, 4), **BENCH_DATA),
    'smoke': Preset(('PointPillars 4x',), (0,), 8, 4, 'data/kitti_synth_smoke', 'smoke',
                    {'PointPillars': (2, 1), 'SECOND': (2, 1), 'PointRCNN': (2, 1)}),
}


def quick_preset():
    """The quickstart's data, schedule and seeds (tools/quickstart.py runs these stages; each reuses the other's
    runs)."""
    from quickstart import PRESETS, TAG_PREFIX
    q = PRESETS['full']
    return Preset(('PointPillars 4x',), tuple(q['seeds']), q['num_train'], q['num_val'], 'data/kitti_synth',
                  TAG_PREFIX, {f: (q['teacher_epochs'], q['student_epochs']) for f in TEACHERS})


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--run', choices=[*RUNS, 'quick'], default='headline',
                   help='headline: PointPillars 4x (5 seeds); others: 16x PointPillars and SECOND 4x (3 seeds); '
                        'pointrcnn: PointRCNN 8x (3 seeds); '
                        'all: every row (5 seeds); quick: the quickstart data and schedule; smoke: a few frames')
    p.add_argument('--quick', action='store_true', help='same as --run quick')
    p.add_argument('--seeds', type=int, nargs='+', default=None, help="default: the run's")
    p.add_argument('--students', nargs='+', default=None, choices=list(STUDENTS), help="default: the run's")
    p.add_argument('--methods', nargs='+', default=PROTOCOL_METHODS, choices=METHOD_ORDER[1:],
                   help='distillation methods (the plain student and the teachers always run)')
    p.add_argument('--teacher_epochs', type=int, default=None, help="every teacher's epochs (default: the run's)")
    p.add_argument('--student_epochs', type=int, default=None, help="every student's epochs (default: the run's)")
    p.add_argument('--epochs_scale', type=float, default=1.0, help="multiplies the run's epochs (longer schedules)")
    p.add_argument('--num_train', type=int, default=None)
    p.add_argument('--num_val', type=int, default=None)
    p.add_argument('--data_path', default=None, help="the synthetic set (default: the run's; generated when missing)")
    p.add_argument('--teacher_seed', type=int, default=0)
    p.add_argument('--teacher_ckpt', default=None,
                   help="a trained teacher shared by every student (the run's one detector family): its training "
                        'and curve are skipped, its final evaluation is not')
    p.add_argument('--train_teacher', action='store_true',
                   help='train every teacher here, also where the repository ships one for the run (SHIPPED_TEACHERS)')
    p.add_argument('--teacher_only', action='store_true',
                   help="train and evaluate the run's teachers (with their curves), no students")
    p.add_argument('--ship_teacher', default=None, metavar='PATH',
                   help="write the teacher this run trains (one detector family) to PATH, weights only, and print "
                        'its sha256')
    p.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto', help='training device')
    p.add_argument('--jobs', type=int, default=2, help='stages run at once')
    p.add_argument('--threads', type=int, default=None, help='threads per stage (default 1 on CPU, 4 with CUDA)')
    p.add_argument('--workers', type=int, default=None, help='dataloader workers per stage (default 0 CPU, 4 CUDA)')
    p.add_argument('--tag_prefix', default=None, help="output folder tags start with it (default: the run's)")
    p.add_argument('--out', default=None, help='results, tables and figures (default output/benchmark for the '
                                               "bench data, else output/benchmark_<tag prefix>)")
    p.add_argument('--dry_run', action='store_true', help='print the pending stages and the predicted time, stop')
    p.add_argument('--eval_one', nargs=3, metavar=('CFG', 'CKPT', 'JSON'), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.run = 'quick'
    preset = quick_preset() if args.run == 'quick' else RUNS[args.run]
    for key in ('students', 'seeds', 'num_train', 'num_val'):
        if getattr(args, key) is None:
            setattr(args, key, list(getattr(preset, key)) if key in ('students', 'seeds') else getattr(preset, key))
    other_data = args.num_train != preset.num_train
    sizes = (args.num_train, args.num_val) != (preset.num_train, preset.num_val)
    # given paths are relative to the working directory, the run's defaults to the repository
    args.data_path = str(Path(args.data_path).resolve()) if args.data_path else \
        str(ROOT / (preset.data_path + (f'_{args.num_train}_{args.num_val}' if sizes else '')))
    args.tag_prefix = args.tag_prefix or preset.tag_prefix + (f'_n{args.num_train}' if other_data else '')
    args.out = str(Path(args.out).resolve()) if args.out else \
        str(ROOT / 'output' / ('benchmark' if args.tag_prefix == 'bench' else f'benchmark_{args.tag_prefix}'))
    args.explicit_schedule = (args.teacher_epochs, args.student_epochs, args.epochs_scale) != (None, None, 1.0)
    args.schedule = {}
    for family, (te, se) in preset.schedule.items():
        te, se = args.teacher_epochs or te, args.student_epochs or se
        args.schedule[family] = (max(1, round(te * args.epochs_scale)), max(1, round(se * args.epochs_scale)))
    if args.device == 'auto':
        import torch
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    args.threads = args.threads or (1 if args.device == 'cpu' else 4)
    args.given_teachers = given_teachers(args, p.error)
    for family, given in args.given_teachers.items():   # the schedule records the teacher the students distil from
        if given.epochs:
            args.schedule[family] = (given.epochs, args.schedule[family][1])
    if args.ship_teacher and (len(families(args)) != 1 or args.given_teachers):
        p.error('--ship_teacher writes the teacher this run trains: one detector family, trained here '
                f'(--train_teacher; this run: {families(args)}, given {sorted(args.given_teachers)})')
    args.workers = (0 if args.device == 'cpu' else 4) if args.workers is None else args.workers
    return args


class GivenTeacher(NamedTuple):
    """A trained teacher file the run's students of one family distil from (``--teacher_ckpt`` or shipped)."""
    path: Path
    sha256: str
    epochs: int   # its schedule: a shipped teacher's, else the file's recorded epoch (0 where it records none)


def given_teachers(args, error):
    """``{family: GivenTeacher}``: ``--teacher_ckpt`` (one family), else each family's shipped teacher where the run
    would train exactly that one (same data, teacher seed and schedule) and ``--train_teacher`` is not given."""
    if args.teacher_ckpt:
        path = Path(args.teacher_ckpt).resolve()
        if len(families(args)) != 1:
            error(f'--teacher_ckpt: one teacher for one detector family, the students {args.students} need '
                  f'{families(args)}')
        if not path.is_file():
            error(f'--teacher_ckpt: {path} is not a file')
        sha = file_sha256(path)   # a shipped teacher's file given by path keeps its schedule
        epochs = next((s.epochs for s in SHIPPED_TEACHERS.values() if s.sha256 == sha), None)
        return {families(args)[0]: GivenTeacher(path, sha, checkpoint_epochs(path, error) if epochs is None
                                                else epochs)}
    given = {}
    for family in [] if args.train_teacher else families(args):
        shipped = SHIPPED_TEACHERS.get((args.tag_prefix, family))
        if shipped and args.teacher_seed == 0 and args.schedule[family][0] == shipped.epochs:
            given[family] = GivenTeacher(checked_file(shipped.path, shipped.sha256), shipped.sha256, shipped.epochs)
    return given


def checkpoint_epochs(path, error):
    """Completed epochs a teacher checkpoint records (its ``epoch`` key; 0 where it records none), so that its final
    evaluation takes its place at the end of the teacher's curve. An unreadable file is refused by name."""
    from pcdet.utils.checkpoint_utils import CheckpointError, load_checkpoint
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        error(f'--teacher_ckpt: {err}')
    epoch = ckpt.get('epoch') if isinstance(ckpt, dict) else None
    return int(epoch) if epoch is not None else 0


def checked_file(path, expected_sha256):
    """``path`` after checking that its sha256 is ``expected_sha256`` (a changed or truncated shipped file is
    refused, naming how to restore it)."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f'the shipped teacher {path} is missing; restore it (git checkout -- {path}) or train one '
                         'with --train_teacher')
    found = file_sha256(path)
    if found != expected_sha256:
        raise SystemExit(f'{path} has sha256 {found}, the shipped teacher has {expected_sha256}; restore it '
                         f'(git checkout -- {path}) or train one with --train_teacher')
    return path


def write_teacher_weights(ckpt, path):
    """Write the weights of teacher checkpoint ``ckpt`` (no optimizer state) to ``path``; return its sha256."""
    from pcdet.utils import checkpoint_utils
    state = checkpoint_utils.load_checkpoint(ckpt)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    checkpoint_utils.save_checkpoint({k: state[k] for k in ('model_state', 'epoch', 'version') if k in state},
                                     str(path))
    return file_sha256(path)


def curve_file(teacher_path):
    """Where a shipped teacher's convergence curve is recorded: ``<stem>_curve.json`` beside the weights (its
    intermediate checkpoints are not shipped, so a run distilling from it cannot evaluate them again)."""
    return Path(teacher_path).with_name(Path(teacher_path).stem + '_curve.json')


def write_teacher_curve(results, key, teacher_path, sha256):
    """Record the curve evaluations (``RunKey`` ``key`` at every intermediate epoch) of the teacher written to
    ``teacher_path`` with its sha256, so that they join the reports of runs that distil from that file."""
    curve = {k: results[k] for k in sorted(k for k in results if k.epoch is not None and k._replace(epoch=None) == key)}
    write_json(dict(sha256=sha256, results=rows_of_results(curve)), curve_file(teacher_path))


def recorded_curve(teacher):
    """``{RunKey: result}`` of a given teacher's recorded curve (``curve_file``), empty when there is none or it was
    recorded for another file (sha256)."""
    path = curve_file(teacher.path)
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    if record.get('sha256') != teacher.sha256:
        return {}
    return results_of_rows(record['results'])


def run_tag(args, seed, family='PointPillars', teacher=False):
    """Output folder tag of a training: ``<prefix>_e<teacher epochs>[-<student epochs>][_t<teacher seed>]_seed<seed>``
    (the prefix names the frame count when it is not the run's): a student's tag names its teacher too; distilled
    from a given teacher file (``--teacher_ckpt`` or shipped) a student's tag is ``<prefix>_t<first 8 hex digits of
    the file's sha256>-<epochs>_seed<seed>``. The quick run and the quickstart share the prefix ``quickstart``, so
    each reuses the other's runs."""
    te, se = args.schedule[family]
    given = args.given_teachers.get(family)
    if given and not teacher:   # a given teacher: named by its file's hash, not by a schedule
        return f'{args.tag_prefix}_t{given.sha256[:8]}-{se}_seed{seed}'
    student = '' if teacher else f'-{se}' + (f'_t{args.teacher_seed}' if args.teacher_seed else '')
    return f'{args.tag_prefix}_e{te}{student}_seed{seed}'


def file_sha256(path):
    """Hex sha256 of a file, read in 1 MiB blocks."""
    import hashlib
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def families(args):
    """The detector families (teachers) of the run's student rows, in row order."""
    return list(dict.fromkeys(STUDENTS[s][0] for s in args.students))


def run_dir(cfg, tag, runs_root=RUNS_ROOT):
    """tools/train.py's output folder of ``cfg`` with ``--extra_tag tag``."""
    from train_utils import exp_group_path
    return Path(runs_root) / exp_group_path(cfg) / Path(cfg).stem / tag


def curve_interval(epochs):
    """Epochs between the teacher's saved checkpoints: the largest divisor of ``epochs`` up to a quarter of it."""
    return max(d for d in range(1, epochs + 1) if epochs % d == 0 and d <= max(1, epochs // 4))


# ---- results file -------------------------------------------------------------------------------------------------
def load_results(path):
    """``{RunKey: result dict}`` from ``benchmark_results.json`` (a list of ``{model, method, seed, [epoch,]
    result}``; the older ``{"model|method|seed": result}`` layout is read too). Empty when the file does not exist."""
    if not Path(path).exists():
        return {}
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        return {RunKey(*k.split('|')[:2], int(k.split('|')[2])): v for k, v in data.items()}
    return results_of_rows(data)


def results_of_rows(rows):
    """``{RunKey: result}`` of a list of ``{model, method, seed, [epoch,] result}``."""
    return {RunKey(r['model'], r['method'], int(r['seed']), r.get('epoch')): r['result'] for r in rows}


def rows_of_results(results):
    """The list of ``{model, method, seed, [epoch,] result}`` of ``{RunKey: result}`` (``epoch`` only where set)."""
    return [dict(model=k.model, method=k.method, seed=k.seed, **({} if k.epoch is None else {'epoch': k.epoch}),
                 result=v) for k, v in results.items()]


def save_results(results, path):
    """Write ``results`` atomically (an interrupted write leaves the previous file)."""
    write_json(rows_of_results(results), path)


def write_json(obj, path):
    tmp = Path(str(path) + '.tmp')
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


# ---- the plan -------------------------------------------------------------------------------------------------------
@dataclass
class Stage:
    """One training or evaluation. ``done``: finished before (reused); ``prepare`` runs before the command,
    ``finish`` after it succeeded; ``info``: (model, method, seed) for the records; lower ``priority`` goes first."""
    name: str
    kind: str
    cmd: list
    done: Callable[[], bool]
    deps: tuple = ()
    priority: int = 0
    prepare: Optional[Callable[[], None]] = None
    finish: Optional[Callable[[], None]] = None
    info: dict = field(default_factory=dict)


def plan(args, results, out, runs_root=RUNS_ROOT):
    """The protocol's stages, in priority order: each teacher's training and curve evaluations, then per student
    row, seed and method a training (plain students from the seed's initial weights, distilled ones also from the
    shared teacher) and its evaluation."""
    out = Path(out)
    stages, teacher_stage = [], {}
    for family in families(args):
        cfg, (te, _) = TEACHERS[family], args.schedule[family]
        given = args.given_teachers.get(family)
        if given:
            teacher_stage[family] = given_teacher_stage(args, family)
            key = RunKey(f'{family} teacher', 'teacher', args.teacher_seed)
            stages += [teacher_stage[family], eval_stage(args, key, cfg, given.path, given.epochs, results, out)]
            continue
        interval = curve_interval(te)
        tag = run_tag(args, args.teacher_seed, family, teacher=True)
        ckpts = run_dir(cfg, tag, runs_root) / 'ckpt'
        train = train_stage(args, cfg, te, args.teacher_seed, tag, ckpts, interval, FAMILY_BATCH[family], priority=1,
                            info=dict(model=f'{family} teacher', method='teacher', seed=args.teacher_seed))
        teacher_stage[family] = train
        stages.append(train)
        for epoch in range(interval, te + 1, interval):
            ckpt = ckpts / f'checkpoint_epoch_{epoch}.pth'
            if epoch < te and train.done() and not ckpt.exists():
                continue  # finished without intermediate checkpoints (e.g. the quickstart's teacher)
            key = RunKey(f'{family} teacher', 'teacher', args.teacher_seed, None if epoch == te else epoch)
            stages.append(eval_stage(args, key, cfg, ckpt, epoch, results, out, deps=(train.name,)))
    for student in [] if args.teacher_only else args.students:
        family, plain_cfg, method_cfgs = STUDENTS[student]
        se = args.schedule[family][1]
        for seed in args.seeds:
            tag = run_tag(args, seed, family)
            init = out / 'init' / f'{plain_cfg.stem}_seed{seed}.pth'
            for method in ['plain'] + [m for m in args.methods if m in method_cfgs]:
                teacher = None if method == 'plain' else teacher_stage[family]
                cfg = plain_cfg if teacher is None else method_cfgs[method]
                ckpts = run_dir(cfg, tag, runs_root) / 'ckpt'
                train = train_stage(args, cfg, se, seed, tag, ckpts, se, FAMILY_BATCH[family], init=(plain_cfg, init),
                                    teacher=None if teacher is None else teacher.info['final'],
                                    priority=3 if teacher is None else 2,
                                    info=dict(model=student, method=method, seed=seed))
                train.deps = () if teacher is None else (teacher.name,)
                stages.append(train)
                stages.append(eval_stage(args, RunKey(student, method, seed), plain_cfg, train.info['final'], se,
                                         results, out, deps=(train.name,)))
    return stages


def given_teacher_stage(args, family):
    """The family's given teacher as a finished training stage (nothing to run; its file is the final)."""
    path = args.given_teachers[family].path
    return Stage(f'given teacher {path}', 'train', [], lambda: True, priority=1,
                 info=dict(model=f'{family} teacher', method='teacher', seed=args.teacher_seed, final=path, steps=0,
                           cfg=TEACHERS[family].stem, init=None, teacher=None))


def train_stage(args, cfg, epochs, seed, tag, ckpts, ckpt_interval, batch, init=None, teacher=None, priority=0,
                info=None):
    """tools/train.py on ``cfg``; done when its final checkpoint exists. ``init``: ``(plain student cfg, path)`` of
    the initial weights (``--pretrained_model``, written by ``prepare`` when missing); ``teacher``: ``--teacher_ckpt``.
    """
    final = ckpts / f'checkpoint_epoch_{epochs}.pth'
    check_teacher_of_run(ckpts.parent, teacher)
    cmd = [sys.executable, ROOT / 'tools' / 'train.py', '--cfg_file', cfg, '--epochs', epochs, '--batch_size', batch,
           '--workers', args.workers, '--extra_tag', tag, '--fix_random_seed', '--seed', seed,
           '--num_epochs_to_eval', 0, '--ckpt_save_interval', ckpt_interval, '--device', args.device]
    cmd += ['--pretrained_model', init[1]] if init is not None else []
    cmd += ['--teacher_ckpt', teacher] if teacher is not None else []
    cmd += ['--set', 'DATA_CONFIG.DATA_PATH', args.data_path]

    def finish():
        if not final.exists():
            raise SystemExit(f'benchmark: {cfg.stem} ({tag}) finished but {final} was not written')
    return Stage(f'train {Path(cfg).stem} {tag}', 'train', [str(c) for c in cmd], final.exists, priority=priority,
                 prepare=None if init is None else lambda: save_initial_weights(*init, seed, args.data_path),
                 finish=finish, info=dict(info or {}, final=final, steps=math.ceil(args.num_train / batch) * epochs,
                                          cfg=Path(cfg).stem, init=None if init is None else init[1],
                                          teacher=teacher))


def eval_stage(args, key, cfg, ckpt, epochs, results, out, deps=()):
    """report_utils.evaluate_checkpoint in a subprocess; its result (with ``epochs``) goes into ``results`` and the
    results file. Done when ``key`` is in ``results``."""
    name = f'eval {key.model} {key.method} seed {key.seed}' + (f' epoch {key.epoch}' if key.epoch else '')
    json_file = out / 'evals' / (re.sub(r'[^A-Za-z0-9_.-]+', '_', name) + '.json')
    cmd = [sys.executable, ROOT / 'tools' / 'benchmark_distill.py', '--eval_one', cfg, ckpt, json_file,
           '--data_path', args.data_path,
           '--workers', args.workers]

    def finish():
        results[key] = dict(json.loads(json_file.read_text()), epochs=epochs, ckpt=str(ckpt))
        save_results(results, out / 'benchmark_results.json')
    return Stage(name, 'eval', [str(c) for c in cmd], lambda: key in results, deps=deps, priority=0, finish=finish,
                 prepare=lambda: json_file.parent.mkdir(parents=True, exist_ok=True),
                 info=dict(model=key.model, method=key.method, seed=key.seed))


def check_teacher_of_run(folder, teacher):
    """Refuse a run folder whose training (as tools/train.py logged its flags) used another ``--teacher_ckpt``:
    reusing or resuming it would mix teachers (e.g. the earlier benchmark trained one teacher per seed)."""
    if teacher is None:
        return
    logged = set()
    for log in Path(folder).glob('train_*.log'):
        logged.update(m.group(1).strip() for m in re.finditer(r'INFO\s+teacher_ckpt\s+(\S.*)', log.read_text()))
    if logged - {str(teacher)}:
        raise SystemExit(f'benchmark: {folder} was distilled from {sorted(logged)}, the protocol\'s teacher is '
                         f'{teacher}: move that folder away or choose other folders with --tag_prefix')


def save_initial_weights(cfg, path, seed, data_path):
    """The student's initial weights as tools/train.py builds them with ``--fix_random_seed --seed seed`` (seed,
    then the training set, then the detector), saved once per student config and seed: every method of a seed
    starts from this file, whatever a Distiller builds after the student."""
    if Path(path).exists():
        return
    from pcdet.datasets import build_dataloader
    from pcdet.models import build_network
    from pcdet.utils import checkpoint_utils, common_utils
    from report_utils import load_cfg
    c = load_cfg(cfg, data_path)
    common_utils.set_random_seed(seed)
    dataset, _, _ = build_dataloader(c.DATA_CONFIG, c.CLASS_NAMES, batch_size=BATCH, dist=False, workers=0,
                                     training=True, seed=seed)
    model = build_network(model_cfg=c.MODEL, num_class=len(c.CLASS_NAMES), dataset=dataset)
    checkpoint_utils.save_checkpoint(checkpoint_utils.checkpoint_state(model), str(path))


# ---- running the stages -------------------------------------------------------------------------------------------
def pending(stages):
    """Names of the stages to run: unfinished evaluations and the unfinished trainings they (transitively) need.
    A training whose evaluations are all recorded is not rerun, even if its checkpoint is gone."""
    by_name = {s.name: s for s in stages}
    todo = {s.name for s in stages if s.kind == 'eval' and not s.done()}
    grow = list(todo)
    while grow:
        for dep in by_name[grow.pop()].deps:
            if dep not in todo and not by_name[dep].done():
                todo.add(dep)
                grow.append(dep)
    return todo


def ready(waiting, todo, finished):
    """Waiting stages whose dependencies are finished (or were not needed), by priority then plan order."""
    return sorted((s for s in waiting if all(d not in todo or d in finished for d in s.deps)),
                  key=lambda s: s.priority)


def stage_seconds(stage, args):
    """Predicted wall seconds of a stage on one CPU slot (``STEP_S``, ``EVAL_FRAME_S``)."""
    if stage.kind == 'train':
        return STAGE_START_S + stage.info['steps'] * STEP_S.get(stage.info['cfg'], max(STEP_S.values()))
    return STAGE_START_S + args.num_val * EVAL_FRAME_S[stage.info['model']]


def predict_seconds(stages, args):
    """Wall seconds of running the pending stages with ``execute``'s order on ``args.jobs`` slots."""
    todo = pending(stages)
    waiting, running, finished, now = [s for s in stages if s.name in todo], [], set(), 0.0
    while waiting or running:
        for st in ready(waiting, todo, finished)[:args.jobs - len(running)]:
            waiting.remove(st)
            running.append((now + stage_seconds(st, args), st.name))
        running.sort()
        now, name = running.pop(0)
        finished.add(name)
    return now


def execute(stages, args, out, on_stage_done=None):
    """Run the pending stages, ``args.jobs`` at a time, each with ``args.threads`` threads and its output in
    ``out/logs/``; stage wall times go to ``out/stage_times.json``, and ``on_stage_done()`` is called after each
    finished stage. Returns the names of the stages run.
    A failed stage stops new launches; the running ones finish, then the benchmark exits naming the log. Ctrl-C or
    SIGTERM stops the running stages (a rerun resumes them)."""
    todo = pending(stages)
    waiting = [s for s in stages if s.name in todo]
    env = dict(os.environ, **{k: str(args.threads) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS',
                                                             'NUMBA_NUM_THREADS')})
    env.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # as tools/_init_path.py (the evaluations do not import it)
    logs, times_file = out / 'logs', out / 'stage_times.json'
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    running, finished, failed = {}, set(), []

    def stop(signum, frame):
        raise KeyboardInterrupt(f'signal {signum}')
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while waiting or running:
            for st in [] if failed else ready(waiting, todo, finished)[:args.jobs - len(running)]:
                waiting.remove(st)
                if st.prepare is not None:
                    st.prepare()
                logs.mkdir(parents=True, exist_ok=True)
                log = logs / (re.sub(r'[^A-Za-z0-9_.-]+', '_', st.name) + '.log')
                fh = open(log, 'a')
                proc = subprocess.Popen(st.cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
                running[st.name] = (st, proc, fh, log, time.time())
                print(f'{time.strftime("%H:%M:%S")} start {st.name}', flush=True)
            if not running:
                break
            time.sleep(1.0)
            for name, (st, proc, fh, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                fh.close()
                del running[name]
                if proc.returncode != 0:
                    failed.append(f'{name} (exit {proc.returncode}, log {log})')
                    print(f'{time.strftime("%H:%M:%S")} FAILED {name}: see {log}', flush=True)
                    continue
                if st.finish is not None:
                    st.finish()
                finished.add(name)
                times[name] = dict({k: st.info[k] for k in ('model', 'method', 'seed')}, kind=st.kind,
                                   s=time.time() - t0)
                write_json(times, times_file)
                if on_stage_done is not None:
                    on_stage_done()
                print(f'{time.strftime("%H:%M:%S")} done  {name} ({(time.time() - t0) / 60:.1f} min)', flush=True)
    except KeyboardInterrupt:
        for _, proc, _, _, _ in running.values():
            proc.terminate()
        for _, proc, _, _, _ in running.values():
            proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if failed or waiting:
        raise SystemExit(f'benchmark: {len(failed)} stage(s) failed, {len(waiting)} not started: '
                         + '; '.join(failed) + '. Rerun the same command to continue')
    return sorted(finished)


# ---- main ---------------------------------------------------------------------------------------------------------
def prepare_data(args):
    """The synthetic set (generated once, reused) with the run's frame counts; its validation instance counts."""
    import pickle

    from quickstart import ensure_dataset
    from report_utils import load_cfg
    data_path = Path(args.data_path)
    ensure_dataset(data_path, dict(num_train=args.num_train, num_val=args.num_val), 0, max(1, args.jobs))
    for split, n in (('train', args.num_train), ('val', args.num_val)):
        found = len(pickle.loads((data_path / f'kitti_infos_{split}.pkl').read_bytes()))
        if found != n:
            raise SystemExit(f'benchmark: {data_path} holds {found} {split} frames, this run needs {n}: pass another '
                             '--data_path (a new folder is generated)')
    pc_range = load_cfg(TEACHERS['PointPillars'], data_path).DATA_CONFIG.POINT_CLOUD_RANGE
    return val_instance_counts(data_path, pc_range)


def protocol_config(args):
    """What the results in one ``--out`` must share: data, tag prefix, teacher seed and each family's schedule."""
    return dict(num_train=args.num_train, num_val=args.num_val, tag_prefix=args.tag_prefix,
                teacher_seed=args.teacher_seed,
                teacher_sha256={f: t.sha256 for f, t in args.given_teachers.items()} or None,
                schedule={f: list(args.schedule[f]) for f in families(args)})


def load_protocol(args, out):
    """``out/benchmark_protocol.json``; refuses an ``--out`` that holds results of other data or schedules (their
    RunKeys would be taken for this run's)."""
    path = Path(out) / 'benchmark_protocol.json'
    protocol = json.loads(path.read_text()) if path.exists() else {'runs': {}}
    old, new = protocol.get('config'), protocol_config(args)
    if old is not None:
        differ = [k for k in new if k != "schedule" and old.get(k) != new[k]]
        differ += [f'{f} schedule' for f in new['schedule'] if f in old['schedule'] and
                   old['schedule'][f] != new['schedule'][f]]
        if differ:
            raise SystemExit(f'benchmark: {out} holds results with another {", ".join(differ)} ({old}); pass '
                             'another --out')
        new['schedule'] = dict(old['schedule'], **new['schedule'])
    protocol['config'] = new
    return protocol


def methods_run(args):
    """The distillation methods the run trains: those of ``--methods`` that one of its students has a config for
    (PointRCNN 8x has PointDistiller only)."""
    return [m for m in args.methods if any(m in STUDENTS[s][2] for s in args.students)]


def machine_name():
    """``'<CPU model>, torch <version>'`` of this process. Each start of a run records it, because a retrained
    teacher is not the same network on every machine (docs/RESULTS.md)."""
    cpuinfo = Path('/proc/cpuinfo')
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(':', 1)[1].strip() for line in lines if line.startswith('model name')), '')
    return f'{cpu or platform.processor() or platform.machine()}, torch {version("torch")}'


def data_fingerprint(data_path):
    """First 16 hex digits of a sha256 over the set's info and GT-database pickles (train, val, dbinfos): two
    folders that give the same fingerprint hold the same frames, labels and sampling database. Each start of a run
    records it, because a folder regenerated in another session may differ (docs/RESULTS.md)."""
    import hashlib
    digest = hashlib.sha256()
    for name in ('kitti_infos_train.pkl', 'kitti_infos_val.pkl', 'kitti_dbinfos_train.pkl'):
        digest.update(file_sha256(Path(data_path) / name).encode())
    return digest.hexdigest()[:16]


def run_protocol(args):
    """Plan the run, execute its pending stages and write the report; returns ``(results, finals)``: ``{RunKey:
    result}`` of every evaluation in ``args.out`` and ``{(model, method, seed): final checkpoint}`` of this run's
    trainings (None with ``--dry_run``, which prints the plan)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    protocol = load_protocol(args, out)
    results = load_results(out / 'benchmark_results.json')
    for teacher in args.given_teachers.values():   # a shipped teacher's curve joins the report
        for key, result in recorded_curve(teacher).items():
            results.setdefault(key, result)
    stages = plan(args, results, out)
    todo = pending(stages)
    predicted = predict_seconds(stages, args) if args.device == 'cpu' else float('nan')
    print(f'benchmark --run {args.run}: {len(todo)} of {len(stages)} stages to run '
          f'({sum(s.kind == "train" for s in stages if s.name in todo)} trainings); ' +
          (f'predicted {predicted / 60:.0f} min on {args.jobs} one-core slots (STEP_S: an idle 2-core CPU)'
           if args.device == 'cpu' else 'no time prediction for CUDA'), flush=True)
    if args.dry_run:
        print('\n'.join(s.name for s in stages if s.name in todo))
        return None
    protocol.update(data=dict(num_train=args.num_train, num_val=args.num_val, data_path=args.data_path,
                                batch=', '.join(f'{f} {FAMILY_BATCH[f]}' for f in families(args))),
                    teacher_seed=args.teacher_seed, val_counts=prepare_data(args))
    # a resumed run keeps its first prediction (the whole run's) and adds to its wall time
    name = args.run + (' teachers' if args.teacher_only else '')   # the protocol's record of this run
    before = protocol['runs'].get(name, {})
    fingerprint = data_fingerprint(args.data_path)
    if before.get('data_sha256') and fingerprint not in before['data_sha256']:
        print(f'benchmark: warning: {args.data_path} (fingerprint {fingerprint}) is not the data of this run\'s '
              f'earlier starts ({", ".join(before["data_sha256"])}): its stages mix two data folders', flush=True)
    wall = before.get('wall_s', 0.0)
    students = [] if args.teacher_only else args.students
    protocol['runs'][name] = dict(students=students, seeds=args.seeds if students else [],
                                  methods=methods_run(args) if students else [],
                                  schedule={f: args.schedule[f] for f in families(args)},
                                  device=args.device, jobs=args.jobs, threads=args.threads,
                                  predicted_s=before.get('predicted_s', predicted), wall_s=wall,
                                  machines=sorted({*before.get('machines', []), machine_name()}),
                                  data_sha256=sorted({*before.get('data_sha256', []), fingerprint}))
    t0 = time.time()

    def save_protocol():   # after every stage too: a killed run keeps the wall time it has spent
        protocol['runs'][name]['wall_s'] = wall + time.time() - t0
        write_json(protocol, out / 'benchmark_protocol.json')
    try:
        execute(stages, args, out, on_stage_done=save_protocol)
    finally:
        save_protocol()
    write_report(results, out, protocol)
    finals = {(s.info['model'], s.info['method'], s.info['seed']): s.info['final'] for s in stages if s.kind == 'train'}
    plain_cfg = STUDENTS['PointPillars 4x'][1]
    examples = [('teacher', TEACHERS['PointPillars'], ('PointPillars teacher', 'teacher', args.teacher_seed)),
                ('4x plain', plain_cfg, ('PointPillars 4x', 'plain', args.seeds[0])),
                ('4x + PointDistiller', plain_cfg, ('PointPillars 4x', 'PointDistiller', args.seeds[0]))]
    if all(key in finals and finals[key].exists() for _, _, key in examples):
        bev_examples([(label, cfg, finals[key]) for label, cfg, key in examples], args.data_path,
                     out / 'bev_examples.png', frames=tuple(range(min(3, args.num_val))))
    return results, finals


def main(argv=None):
    args = parse_args(argv)
    if args.eval_one:
        from report_utils import evaluate_checkpoint
        cfg, ckpt, json_file = args.eval_one
        t0 = time.time()
        result = evaluate_checkpoint(cfg, ckpt, args.data_path, workers=args.workers)
        write_json(dict(result, eval_s=time.time() - t0), json_file)
        return
    done = run_protocol(args)
    if done is None:
        return
    print((Path(args.out) / 'BENCHMARK.md').read_text())
    if args.ship_teacher:
        family = families(args)[0]
        key = RunKey(f'{family} teacher', 'teacher', args.teacher_seed)
        sha = write_teacher_weights(done[1][key[:3]], args.ship_teacher)
        write_teacher_curve(done[0], key, args.ship_teacher, sha)
        print(f'teacher weights written to {args.ship_teacher}: sha256 {sha}, {args.schedule[family][0]} epochs; '
              f'its curve to {curve_file(args.ship_teacher)}')


if __name__ == '__main__':
    main()
