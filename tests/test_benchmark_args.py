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
    args = load_tool().parse_args(['--quick', '--seeds', '0', '1'])
    from quickstart import PRESETS  # tools/ is on sys.path once the tool is loaded
    preset = PRESETS['full']
    assert (args.teacher_epochs, args.student_epochs) == (preset['teacher_epochs'], preset['student_epochs'])
    assert (args.num_train, args.num_val) == (preset['num_train'], preset['num_val'])
    assert args.students == ['PointPillars 4x'] and args.data_path.endswith('kitti_synth')
    assert [args.tag_of(s) for s in (0, 1)] == ['quickstart', 'quickstart_seed1']


def test_quick_with_other_students_and_schedule():
    tool = load_tool()
    args = tool.parse_args(['--quick', '--students', 'PointPillars 16x', 'SECOND 4x'])
    assert args.students == ['PointPillars 16x', 'SECOND 4x'] and args.tag_of(0) == 'quickstart'
    # another schedule must not find (and silently reuse) the quickstart's 8-epoch checkpoints
    args = tool.parse_args(['--quick', '--teacher_epochs', '24', '--student_epochs', '16'])
    assert (args.teacher_epochs, args.student_epochs) == (24, 16) and args.num_train == 240
    assert args.tag_of(0) == 'quick_e24-16_seed0' and args.tag_of(2) == 'quick_e24-16_seed2'


def test_full_defaults():
    args = load_tool().parse_args([])
    assert (args.teacher_epochs, args.student_epochs, args.num_train, args.num_val) == (20, 16, 1000, 300)
    assert args.students == ['PointPillars 4x', 'PointPillars 16x', 'SECOND 4x']
    assert args.data_path.endswith('kitti_synth_bench') and args.tag_of(1) == 'bench_seed1'
