"""Generation speed of the synthetic KITTI set: frames per second, written to a temporary directory.

    python benchmarks/bench_synthetic.py --num 1000 --workers 2

The numba kernels are compiled (or loaded from the cache) by one warm-up frame before timing.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pcdet.datasets.synthetic import generate_dataset, make_frame  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num', type=int, default=200, help='frames to write')
    parser.add_argument('--workers', type=int, default=os.cpu_count())
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    t0 = time.perf_counter()
    make_frame(args.seed, 0)
    warm = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        out = generate_dataset(Path(tmp) / 'kitti_synth', args.num, 0, args.seed, workers=args.workers)
        size = sum(f.stat().st_size for f in Path(tmp).rglob('*') if f.is_file())
    fps = out['num_frames'] / out['seconds']
    print(f'warm-up (compile or cache load + 1 frame): {warm:.2f} s')
    print(f"frames: {out['num_frames']}  workers: {args.workers}  time: {out['seconds']:.1f} s  "
          f"frames/s: {fps:.2f}  points/frame: {out['num_points'] / out['num_frames']:.0f}  "
          f"disk: {size / 2 ** 20:.0f} MiB")
    print(f'1000 frames would take {1000 / fps:.0f} s (target < 180 s on 2 cores)')


if __name__ == '__main__':
    main()
