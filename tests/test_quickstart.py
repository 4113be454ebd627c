"""The quickstart pipeline end to end at a tiny size: synthetic set -> infos -> teacher -> plain and distilled 4x
students -> evaluation table; then a rerun reuses every finished stage."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUT_MODELS = ROOT / 'output' / 'kitti_synth_models'
STAGES = ('pointpillar', 'pointpillar_4x', 'pointpillar_4x_pointdistiller')


@pytest.fixture
def tag():
    tag = f'pytest_quickstart_{os.getpid()}'
    yield tag
    for stage in STAGES:
        shutil.rmtree(OUT_MODELS / stage / tag, ignore_errors=True)


def run_quickstart(tmp_path, tag):
    cmd = [sys.executable, str(ROOT / 'tools' / 'quickstart.py'), '--tiny', '--workers', '0',
           '--data_path', str(tmp_path / 'kitti_synth'), '--extra_tag', tag, '--out', str(tmp_path / 'out')]
    ret = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert ret.returncode == 0, ret.stdout[-3000:] + ret.stderr[-3000:]
    return ret.stdout


@pytest.mark.timeout(1200)
def test_quickstart_tiny_end_to_end_and_reuse(tmp_path, tag):
    out = run_quickstart(tmp_path, tag)

    # the dataset, its infos and the three checkpoints exist
    assert (tmp_path / 'kitti_synth' / 'kitti_infos_val.pkl').exists()
    ckpts = [OUT_MODELS / s / tag / 'ckpt' / 'checkpoint_epoch_1.pth' for s in STAGES]
    assert all(c.exists() for c in ckpts), ckpts

    # the printed table has one row per model, and the same table and numbers are saved
    for label in ('teacher PointPillars', '4x student', '4x student + PointDistiller'):
        assert f'| {label} |' in out
    table = (tmp_path / 'out' / 'quickstart_table.md').read_text()
    assert '| model | params (M) | GFLOPs | CPU ms/frame (network + NMS) | mAP 3D (mod.) | mAP BEV (mod.) |' in table
    rows = {r['label']: r for r in json.loads((tmp_path / 'out' / 'quickstart_results.json').read_text())['rows']}
    teacher, plain, kd = rows['teacher PointPillars'], rows['4x student'], rows['4x student + PointDistiller']
    assert plain['params'] == kd['params'] and 3.5 < teacher['params'] / plain['params'] < 4.5
    assert teacher['gflops'] > plain['gflops'] > 0
    assert all(r['latency_s'] > 0 and r['post_s'] > 0 for r in rows.values())
    for r in rows.values():
        assert 'Car_3d/moderate_R40' in r['ap'] and 0.0 <= r['map_bev'] <= 100.0

    # a rerun reuses the set and every checkpoint: nothing is generated or trained again
    mtimes = [c.stat().st_mtime_ns for c in ckpts]
    out2 = run_quickstart(tmp_path, tag)
    assert 'reused' in out2 and out2.count('not retrained') == 3
    assert [c.stat().st_mtime_ns for c in ckpts] == mtimes
