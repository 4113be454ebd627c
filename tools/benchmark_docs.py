"""The repository's benchmark pages, regenerated from the protocol runs' output folders.

Each run of ``tools/benchmark_distill.py`` writes its own ``--out`` folder; this merges several (their
``benchmark_results.json`` and ``benchmark_protocol.json``) into one report and copies it where the docs link it:
``docs/BENCHMARK.md``, ``docs/benchmark_results.json``, ``docs/figures/benchmark_{map_vs_params,teacher_curve,
paired_gains}.png``. A run whose RunKeys repeat another's (the same rows at a longer schedule) gets pages of its
own with ``--suffix``: ``docs/BENCHMARK_<suffix>.md``, ``docs/benchmark_results_<suffix>.json``,
``docs/figures/benchmark_<suffix>_*.png``.

    python tools/benchmark_docs.py output/benchmark output/benchmark_pointrcnn
    python tools/benchmark_docs.py output/benchmark_s8 --suffix s8
"""
import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_distill import load_results, save_results  # noqa: E402
from benchmark_report import write_report  # noqa: E402

FIGURES = ('map_vs_params', 'teacher_curve', 'paired_gains')


def merge_results(folders):
    """``{RunKey: result}`` over the folders' ``benchmark_results.json``; a key two folders hold with different
    results is an error naming both (two runs trained the same row: which one counts is the user's call)."""
    merged, source = {}, {}
    for folder in map(Path, folders):
        path = folder / 'benchmark_results.json'
        if not path.exists():
            raise FileNotFoundError(f'{path}: no benchmark_results.json (not a benchmark output folder)')
        for key, result in load_results(path).items():
            if key in merged and merged[key] != result:
                raise ValueError(f'{key} has different results in {source[key]} and {path}')
            merged[key], source[key] = result, path
    return merged


def merge_protocols(folders):
    """One protocol record: the first folder's data and validation counts, every folder's runs (a run name two
    folders hold is an error), the batch sizes of all."""
    protocols = [(Path(f) / 'benchmark_protocol.json', json.loads((Path(f) / 'benchmark_protocol.json').read_text()))
                 for f in folders]
    merged = dict(protocols[0][1], runs={})
    batches = []
    for path, protocol in protocols:
        if protocol['val_counts'] != merged['val_counts']:
            raise ValueError(f'{path}: another validation set than {protocols[0][0]} (val_counts differ)')
        for name, run in protocol['runs'].items():
            if name in merged['runs']:
                raise ValueError(f'{path}: run "{name}" is also in another folder')
            merged['runs'][name] = run
        batches += [b.strip() for b in str(protocol['data'].get('batch', '')).split(',') if b.strip()]
    merged['data'] = dict(merged['data'], batch=', '.join(dict.fromkeys(batches)))
    return merged


def write_docs(folders, docs, suffix=''):
    """Write the merged report into ``docs`` (BENCHMARK.md, benchmark_results.json, figures/benchmark_*.png; each
    name with ``_<suffix>`` when one is given)."""
    results, protocol = merge_results(folders), merge_protocols(folders)
    docs, tail = Path(docs), f'_{suffix}' if suffix else ''
    (docs / 'figures').mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_report(results, tmp, protocol)
        shutil.copy(Path(tmp) / 'BENCHMARK.md', docs / f'BENCHMARK{tail}.md')
        for name in FIGURES:   # a report without teacher curves or pairs draws no such figure
            if (Path(tmp) / f'{name}.png').exists():
                shutil.copy(Path(tmp) / f'{name}.png', docs / 'figures' / f'benchmark{tail}_{name}.png')
    save_results(results, docs / f'benchmark_results{tail}.json')
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folders', nargs='+', help='benchmark_distill.py --out folders')
    parser.add_argument('--docs', default=str(Path(__file__).resolve().parents[1] / 'docs'))
    parser.add_argument('--suffix', default='', help="pages of a run of their own: BENCHMARK_<suffix>.md, ...")
    args = parser.parse_args(argv)
    if args.suffix and not args.suffix.replace('_', '').isalnum():
        parser.error(f'--suffix {args.suffix!r}: letters, digits and underscores only (it goes into file names)')
    results = write_docs(args.folders, args.docs, args.suffix)
    print(f'{len(results)} results from {len(args.folders)} folders -> {args.docs}')


if __name__ == '__main__':
    main()
