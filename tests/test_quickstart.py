"""The quickstart end to end at a tiny size: synthetic set -> infos -> teacher (trained, or the shipped checkpoint)
-> plain and distilled 4x students for two seeds -> evaluation, interleaved timing, the table and the gain paired
by seed; a rerun reuses every finished stage; the shipped teacher is checked by its sha256."""
import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import quickstart  # noqa: E402
from benchmark_distill import file_sha256  # noqa: E402

OUT_MODELS = ROOT / 'output' / 'kitti_synth_models'
STAGES = ('pointpillar', 'pointpillar_4x', 'pointpillar_4x_pointdistiller')
LABELS = ('teacher PointPillars', '4x student', '4x student + PointDistiller')


@pytest.fixture
def tag():
    tag = f'pytest_quickstart_{os.getpid()}'
    yield tag
    for stage in STAGES:
        for folder in (OUT_MODELS / stage).glob(f'{tag}_*'):
            shutil.rmtree(folder, ignore_errors=True)


def run_quickstart(tmp_path, tag, *extra):
    cmd = [sys.executable, str(ROOT / 'tools' / 'quickstart.py'), '--tiny', '--workers', '1',
           '--data_path', str(tmp_path / 'kitti_synth'), '--extra_tag', tag, '--out', str(tmp_path / 'out'), *extra]
    ret = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert ret.returncode == 0, ret.stdout[-3000:] + ret.stderr[-3000:]
    return ret.stdout


def check_table_and_results(out_dir, stdout, seeds):
    for label in LABELS:
        assert f'| {label} |' in stdout
    table = (out_dir / 'quickstart_table.md').read_text()
    assert '| model | params (M) | GFLOPs | CPU ms/frame: network, median (min-max) | NMS ms | seeds |' in table
    assert '## Paired by seed: gain over the plain student' in table
    assert f'| PointPillars 4x | PointDistiller | {seeds} | ' in table
    rows = {r['label']: r for r in json.loads((out_dir / 'quickstart_results.json').read_text())['rows']}
    teacher, plain, kd = (rows[label] for label in LABELS)
    assert plain['params'] == kd['params'] and 3.5 < teacher['params'] / plain['params'] < 4.5
    assert teacher['gflops'] > plain['gflops'] > 0
    assert (teacher['n'], plain['n'], kd['n']) == (1, seeds, seeds)
    for r in rows.values():   # one timing per interleaved round
        assert len(r['net_ms']) == len(r['post_ms']) == 15 and min(r['net_ms']) > 0
        assert 'Car_3d/moderate_R40' in r['ap'] and 0.0 <= r['map_bev'][0] <= 100.0
    assert (out_dir / 'BENCHMARK.md').exists() and (out_dir / 'paired_gains.png').exists()


@pytest.mark.timeout(1200)
def test_quickstart_tiny_trains_and_ships_a_teacher(tmp_path, tag):
    shipped = tmp_path / 'teacher.pth'
    out = run_quickstart(tmp_path, tag, '--train_teacher', '--ship_teacher', str(shipped))
    assert (tmp_path / 'kitti_synth' / 'kitti_infos_val.pkl').exists()
    check_table_and_results(tmp_path / 'out', out, seeds=2)
    # the shipped file: the teacher's weights only, the sha256 printed, strictly loadable into the teacher config
    assert f'sha256 {file_sha256(shipped)}' in out
    import torch

    from pcdet.utils import checkpoint_utils
    state = checkpoint_utils.load_checkpoint(str(shipped))
    assert 'optimizer_state' not in state
    trained = checkpoint_utils.load_checkpoint(str(next((OUT_MODELS / 'pointpillar').glob(f'{tag}_e1_seed0'))
                                                   / 'ckpt' / 'checkpoint_epoch_1.pth'))
    assert state['model_state'].keys() == trained['model_state'].keys()
    assert all(torch.equal(state['model_state'][k], v) for k, v in trained['model_state'].items())


@pytest.mark.timeout(1200)
def test_quickstart_tiny_with_the_shipped_teacher_and_reuse(tmp_path, tag):
    out = run_quickstart(tmp_path, tag)
    check_table_and_results(tmp_path / 'out', out, seeds=2)
    sha = file_sha256(quickstart.shipped_teacher())
    ckpts = sorted((OUT_MODELS / s / f'{tag}_t{sha[:8]}-1_seed{seed}' / 'ckpt' / 'checkpoint_epoch_1.pth')
                   for s in STAGES[1:] for seed in (0, 1))
    assert all(c.exists() for c in ckpts), ckpts
    assert not list((OUT_MODELS / 'pointpillar').glob(f'{tag}_*'))   # no teacher trained
    # a rerun reuses the set, every checkpoint and every evaluation
    mtimes = [c.stat().st_mtime_ns for c in ckpts]
    out2 = run_quickstart(tmp_path, tag)
    assert 'reused' in out2 and re.search(r'benchmark --run quick: 0 of \d+ stages to run', out2)
    assert ' start ' not in out2
    assert [c.stat().st_mtime_ns for c in ckpts] == mtimes


def test_a_changed_shipped_teacher_is_refused(tmp_path, monkeypatch):
    from benchmark_distill import SHIPPED_TEACHERS
    key = (quickstart.TAG_PREFIX, 'PointPillars')
    shipped = SHIPPED_TEACHERS[key]
    assert quickstart.shipped_teacher() == shipped.path   # the shipped file has the recorded hash
    copy = tmp_path / 'teacher.pth'
    copy.write_bytes(shipped.path.read_bytes()[:-1])
    monkeypatch.setitem(SHIPPED_TEACHERS, key, shipped._replace(path=copy))
    with pytest.raises(SystemExit, match='sha256 .* the shipped teacher has'):
        quickstart.shipped_teacher()
    monkeypatch.setitem(SHIPPED_TEACHERS, key, shipped._replace(path=tmp_path / 'absent.pth'))
    with pytest.raises(SystemExit, match='missing'):
        quickstart.shipped_teacher()
