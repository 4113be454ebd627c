"""CPU seconds per training step of configs, as tools/benchmark_distill.py runs them (its ``STEP_S`` table).

Each config trains with tools/train.py for one epoch on a small synthetic set: one thread (``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``NUMBA_NUM_THREADS`` = 1), data loading in the process (``--workers 0``), a log line per step.
At every logged step the tool reads the process's CPU time (user + system, ``/proc/<pid>/stat``); the figure is
the median of the per-step differences after ``--warmup`` steps (numba compilation, allocator), with min-max.
CPU time rather than wall time, so a shared machine moves it little (it does move it: caches, memory bandwidth).
A distillation config gets an untrained teacher checkpoint of its ``TEACHER.CFG_FILE`` (the cost of a step does
not depend on the teacher's weights, except through post-processing, which the teacher does not run).

    python benchmarks/bench_step_cost.py --cfgs pointrcnn pointrcnn_8x pointrcnn_8x_pointdistiller --batch 2
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'tools')]
CFG_DIR = ROOT / 'tools' / 'cfgs' / 'kitti_synth_models'
STEP_LINE = re.compile(r'Train:\s+\d+/\d+ \(\s*\d+%\) \[\s*(\d+)/\s*(\d+)\]')


def cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def step_costs(cfg, data_path, batch, steps, teacher=None):
    """CPU seconds of each logged step of one tools/train.py epoch on ``data_path`` (the first ``steps``); the run's
    output folder is removed afterwards."""
    from train_utils import exp_group_path
    tag = f'step_cost_{os.getpid()}'
    cmd = [sys.executable, str(ROOT / 'tools' / 'train.py'), '--cfg_file', str(cfg), '--epochs', '1',
           '--batch_size', str(batch), '--workers', '0', '--extra_tag', tag,
           '--fix_random_seed', '--num_epochs_to_eval', '0', '--logger_iter_interval', '1',
           '--ckpt_save_time_interval', '100000', *(['--teacher_ckpt', str(teacher)] if teacher else []),
           '--set', 'DATA_CONFIG.DATA_PATH', str(data_path)]
    env = dict(os.environ, **{k: '1' for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'NUMBA_NUM_THREADS')})
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marks, tail = [], []
    try:
        for line in proc.stdout:
            tail = (tail + [line])[-30:]
            if STEP_LINE.search(line):
                marks.append(cpu_seconds(proc.pid))
        proc.wait()
    finally:
        shutil.rmtree(ROOT / 'output' / exp_group_path(cfg) / Path(cfg).stem / tag, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f'bench_step_cost: {cfg} failed (exit {proc.returncode}):\n' + ''.join(tail))
    return [b - a for a, b in zip(marks, marks[1:])][:steps]


def untrained_teacher(distill_cfg, data_path, path):
    """An initial-weights checkpoint of the teacher config that ``distill_cfg`` names."""
    from benchmark_distill import save_initial_weights
    from report_utils import load_cfg
    teacher_cfg = (Path(distill_cfg).parent / load_cfg(distill_cfg).TEACHER.CFG_FILE).resolve()
    save_initial_weights(teacher_cfg, path, 0, data_path)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--cfgs', nargs='+', required=True, help='config names in tools/cfgs/kitti_synth_models (or paths)')
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--steps', type=int, default=16, help='steps measured after the warm-up')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--data_path', default=str(ROOT / 'data' / 'kitti_synth_step_cost'),
                   help='a synthetic set with enough training frames (generated when missing)')
    args = p.parse_args()
    from quickstart import ensure_dataset
    frames = (args.steps + args.warmup + 2) * args.batch
    data_path = Path(args.data_path).resolve()
    ensure_dataset(data_path, dict(num_train=frames, num_val=4), 0, 2)
    rows = []
    with tempfile.TemporaryDirectory(prefix='step_cost_') as tmp:
        for name in args.cfgs:
            cfg = Path(name) if Path(name).suffix == '.yaml' else CFG_DIR / f'{name}.yaml'
            teacher = None
            if 'TEACHER' in open(cfg).read():
                teacher = untrained_teacher(cfg, data_path, Path(tmp) / f'{cfg.stem}_teacher.pth')
            costs = step_costs(cfg, data_path, args.batch, args.warmup + args.steps, teacher)[args.warmup:]
            rows.append(f'| {cfg.stem} | {statistics.median(costs):.2f} ({min(costs):.2f}-{max(costs):.2f}) | '
                        f'{len(costs)} |')
            print(rows[-1], flush=True)
    print(f'\nCPU seconds per training step, batch {args.batch}, one thread, median (min-max) after {args.warmup} '
          'warm-up steps:\n\n| config | s/step | steps |\n|---|---:|---:|\n' + '\n'.join(rows))


if __name__ == '__main__':
    main()
