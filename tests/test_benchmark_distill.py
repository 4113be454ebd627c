"""tools/benchmark_distill.py's argument resolution: which runs it reuses and where another schedule goes."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location('benchmark_distill', ROOT / 'tools' / 'benchmark_distill.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_defaults_reuse_the_quickstart_runs():
    tool = load_tool()
    args = tool.parse_args(['--quick', '--seeds', '0', '1'])
    from quickstart import PRESETS  # tools/ is on sys.path once the tool is loaded
    preset = PRESETS['full']
    assert (args.teacher_epochs, args.student_epochs) == (preset['teacher_epochs'], preset['student_epochs'])
    assert (args.num_train, args.num_val) == (preset['num_train'], preset['num_val'])
    assert args.students == ['PointPillars 4x'] and args.data_path.endswith('kitti_synth')
    assert [tool.run_tag(args, s) for s in (0, 1)] == ['quickstart', 'quickstart_seed1']


def test_quick_with_other_students_and_schedule():
    tool = load_tool()
    args = tool.parse_args(['--quick', '--students', 'PointPillars 16x', 'SECOND 4x'])
    assert args.students == ['PointPillars 16x', 'SECOND 4x'] and tool.run_tag(args, 0) == 'quickstart'
    # another schedule must not find (and silently reuse) the quickstart's 8-epoch checkpoints
    args = tool.parse_args(['--quick', '--teacher_epochs', '24', '--student_epochs', '16'])
    assert (args.teacher_epochs, args.student_epochs) == (24, 16) and args.num_train == 240
    assert tool.run_tag(args, 0) == 'quick_e24-16_seed0' and tool.run_tag(args, 2) == 'quick_e24-16_seed2'


def test_full_defaults():
    tool = load_tool()
    args = tool.parse_args([])
    assert (args.teacher_epochs, args.student_epochs, args.num_train, args.num_val) == (20, 16, 1000, 300)
    assert args.students == ['PointPillars 4x', 'PointPillars 16x', 'SECOND 4x']
    assert args.data_path.endswith('kitti_synth_bench') and tool.run_tag(args, 1) == 'bench_seed1'


def run(map_3d, map_bev):
    return dict(map_3d=map_3d, map_bev=map_bev)


def test_paired_gains_pairs_by_seed():
    tool = load_tool()
    key = tool.RunKey
    results = {}
    for seed, (t, p, d) in enumerate([(10.0, 4.0, 7.0), (12.0, 6.0, 7.0), (8.0, 5.0, 4.0)]):
        results[key('PointPillars teacher', 'teacher', seed)] = run(t, 2 * t)
        results[key('PointPillars 4x', 'plain', seed)] = run(p, 2 * p)
        results[key('PointPillars 4x', 'PointDistiller', seed)] = run(d, 2 * d)
    results[key('PointPillars 4x', 'FitNet', 7)] = run(9.0, 9.0)        # no plain run with seed 7: not paired, no row
    lines = tool.paired_gains(results)
    rows = [line for line in lines if line.startswith('| PointPillars')]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip('|').split('|')]
    # gains 3, 1, -1: mean +1.00, std 2.00, 2 better of 3; plain std 1.00; gap (6 + 6 + 3) / 3 = 5 -> 20%
    assert cells[:7] == ['PointPillars 4x', 'PointDistiller', '3', '+1.00 +- 2.00', '2/3', '2.00', '20%']
    assert cells[7:] == ['+2.00 +- 4.00', '20%']


def test_results_file_round_trip_and_old_layout(tmp_path):
    tool = load_tool()
    results = {tool.RunKey('PointPillars 4x', 'plain', 2): run(4.0, 8.0),
               tool.RunKey('PointPillars teacher', 'teacher', 0): run(10.0, 20.0)}
    path = tmp_path / 'benchmark_results.json'
    tool.save_results(results, path)
    assert tool.load_results(path) == results
    path.write_text('{"PointPillars 4x|plain|2": {"map_3d": 4.0, "map_bev": 8.0}}')   # written before RunKey
    assert tool.load_results(path) == {tool.RunKey('PointPillars 4x', 'plain', 2): run(4.0, 8.0)}
    assert tool.load_results(tmp_path / 'missing.json') == {}
