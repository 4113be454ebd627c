"""Benchmark: the tiled kNN op (pcdet.ops.knn.knn) vs the dense torch kNN of the original PointDistiller code.

Dense = ``-2 Q X^T + |Q|^2 + |X|^2`` (a full N x M matrix) then ``topk(largest=False)``. For every (N, M, K)
with C = 64 channels, each method runs in a fresh subprocess so that its peak memory can be measured alone:
the kernel's high-water mark is reset (``/proc/self/clear_refs``), then peak = VmHWM - VmRSS before the call
(inputs and warm-up excluded; torch allocations are included, unlike tracemalloc). Time = best of
``--repeats`` runs after a warm-up (numba compiles, or loads its cache, during the warm-up).

Usage: python benchmarks/bench_knn.py [--quick] [--repeats R] [--threads T]
Targets (issue 6, CPU): at N=6000, M=65536, K=128: >= 2x faster and <= 1/10 of the dense peak memory.
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHANNELS = 64


def _status_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'bench_knn.py: {field} not found in /proc/self/status (Linux only)')


def _reset_peak():
    """Reset VmHWM to the current RSS; returns False where the kernel does not allow it."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def run_one(method, num_query, num_ref, k, repeats, device):
    """Child process body: time and peak-memory one method on one problem size; prints a JSON line."""
    import torch

    sys.path.insert(0, str(REPO_ROOT))
    from pcdet.ops.knn.knn_utils import knn, knn_dense_matmul

    gen = torch.Generator().manual_seed(0)
    query = torch.randn(1, num_query, CHANNELS, generator=gen).to(device)
    ref = torch.randn(1, num_ref, CHANNELS, generator=gen).to(device)

    def call(q, r, kk):
        if method == 'dense':
            return knn_dense_matmul(q, r, kk)
        return knn(q, r, kk)

    def sync():
        if device == 'cuda':
            torch.cuda.synchronize()

    call(query[:, :64], ref, k)   # warm-up on the full references: the same kernel path compiles / loads its cache
    sync()
    times = []
    peak_kib = None
    for _ in range(repeats):
        if device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            resettable = _reset_peak()
            base = _status_kib('VmRSS') if resettable else _status_kib('VmHWM')
        start = time.perf_counter()
        out = call(query, ref, k)
        sync()
        times.append(time.perf_counter() - start)
        if device == 'cuda':
            used = (torch.cuda.max_memory_allocated() - base) / 1024
        else:
            used = _status_kib('VmHWM') - base
        peak_kib = used if peak_kib is None else max(peak_kib, used)
        del out
    print(json.dumps({'time_s': min(times), 'peak_mib': peak_kib / 1024}))


def measure(method, num_query, num_ref, k, repeats, threads, device):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, '--child', method, str(num_query), str(num_ref), str(k), str(repeats),
           device]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'bench_knn.py: child {cmd} failed:\n{proc.stderr}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='small sizes (about a minute)')
    parser.add_argument('--repeats', type=int, default=1, help='timed runs per measurement (best is reported)')
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='CPU threads for torch and numba')
    parser.add_argument('--child', nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, n, m, k, reps, device = args.child
        run_one(method, int(n), int(m), int(k), int(reps), device)
        return

    import torch
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    if args.quick:
        sizes = list(itertools.product([512, 1024], [8192], [16, 128]))
    else:
        sizes = list(itertools.product([1024, 6000], [16384, 65536], [16, 128]))
    print(f'kNN benchmark, C={CHANNELS}, threads={args.threads}, repeats={args.repeats}')
    header = (f'{"dev":>4} {"N":>6} {"M":>7} {"K":>4} | {"dense s":>8} {"knn s":>8} {"speedup":>8} | '
              f'{"dense MiB":>9} {"knn MiB":>8} {"mem ratio":>9}')
    print(header)
    print('-' * len(header))
    for device in devices:
        for num_query, num_ref, k in sizes:
            dense = measure('dense', num_query, num_ref, k, args.repeats, args.threads, device)
            ours = measure('knn', num_query, num_ref, k, args.repeats, args.threads, device)
            ratio = ours['peak_mib'] / dense['peak_mib'] if dense['peak_mib'] > 0 else float('nan')
            print(f'{device:>4} {num_query:>6} {num_ref:>7} {k:>4} | {dense["time_s"]:>8.3f} {ours["time_s"]:>8.3f} '
                  f'{dense["time_s"] / ours["time_s"]:>7.2f}x | {dense["peak_mib"]:>9.1f} {ours["peak_mib"]:>8.1f} '
                  f'{ratio:>9.4f}', flush=True)
    print('speedup = dense time / knn time; mem ratio = knn peak / dense peak (peak above the inputs).')


if __name__ == '__main__':
    main()
