"""Timing several closures fairly on a shared machine: interleaved rounds.

One round calls every closure once, in an order that reverses from round to round, so a slow phase of the machine
(another process, frequency scaling) hits all of them alike instead of whichever happened to run then. Used by the
quickstart's latency column and the benchmarks (bench_kd_overhead.py, bench_deploy.py).
"""
import statistics
import time


def interleaved_rounds(fns, rounds, warmup=1, synchronize=None):
    """Seconds per call of each closure, one sample per round.

    Args:
        fns: ``{name: fn}``; each ``fn()`` is one timed call.
        rounds: timed rounds (each closure gets one sample per round).
        warmup: untimed rounds first (allocators, lazy initialisation, numba compilation).
        synchronize: called before and after each timed call (e.g. ``torch.cuda.synchronize``), or None.
    Returns:
        ``{name: [seconds of round 0, round 1, ...]}``.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            if synchronize is not None:
                synchronize()
            t0 = time.perf_counter()
            fns[name]()
            if synchronize is not None:
                synchronize()
            times[name].append(time.perf_counter() - t0)
    return times


def median_spread(samples, scale=1.0):
    """``(median, min, max)`` of ``samples`` times ``scale`` (e.g. 1e3 for milliseconds)."""
    return statistics.median(samples) * scale, min(samples) * scale, max(samples) * scale


def format_spread(samples, scale=1.0, digits=1):
    """``'median (min-max)'`` of ``samples`` times ``scale``."""
    med, lo, hi = median_spread(samples, scale)
    return f'{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})'
