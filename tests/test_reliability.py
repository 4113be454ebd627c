"""Trust the files: bad checkpoints, crafted pickles, resumes that would destroy work, NaN training, config typos,
a generator pointed at real data. Each probe is run as a user hits it (the tools as subprocesses on the real KITTI
sample frames) wherever that is affordable; docs/RELIABILITY.md lists them.
"""
import logging
import os
import pickle
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / 'tools')]

from pcdet.utils import checkpoint_utils  # noqa: E402

PP_CFG = REPO / 'tools/cfgs/kitti_models/pointpillar.yaml'
KD_CFG = REPO / 'tools/cfgs/kitti_models/pointpillar_4x_pointdistiller.yaml'
OUTPUT_GROUP = REPO / 'output' / 'kitti_models' / 'pp_reliability'
OTHER_WIDTH = ['--set', 'MODEL.BACKBONE_2D.NUM_FILTERS', '32,64,128']


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    for key in ('LOCAL_RANK', 'PCDET_TRACEBACK'):
        env.pop(key, None)
    return env


def run(tool, *args, timeout=300):
    cmd = [sys.executable, str(REPO / 'tools' / tool)] + [str(a) for a in args]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def user_error(proc, *needles):
    """Exit status 2, one ``<tool>: error:`` on stderr, no traceback; the message (that line and, for a key
    mismatch, the lines listing the keys) names every needle."""
    assert proc.returncode == 2, f'rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    starts = [i for i, x in enumerate(lines) if ': error: ' in x]
    assert len(starts) == 1, proc.stderr[-3000:]
    message = '\n'.join(lines[starts[0]:])
    for needle in needles:
        assert needle in message, (needle, message)
    return message


class Payload:
    """Unpickling this calls ``open(path, 'w')``: the file exists afterwards iff the payload ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def crafted_checkpoint(path, marker, state=None):
    """A checkpoint file (zip, as torch.save writes it) whose pickle would create ``marker``."""
    torch.save({'model_state': state or {}, 'epoch': 1, 'it': 3, 'payload': Payload(marker)}, path)
    return path


@pytest.fixture(scope='module')
def tiny_cfg(tmp_path_factory, kitti_infos_root, tiny_config_text):
    tmp = tmp_path_factory.mktemp('reliability') / 'kitti_models'
    tmp.mkdir()
    cfg = tmp / 'pp_reliability.yaml'
    cfg.write_text(tiny_config_text(PP_CFG, kitti_infos_root))
    return cfg


@pytest.fixture(scope='module')
def trained(tiny_cfg):
    """One epoch (3 iterations of 3 frames) of the tiny PointPillars: ``{'cfg', 'ckpt'}``."""
    tag = 'pytest_trained_' + uuid.uuid4().hex[:8]
    try:
        ok(run('train.py', '--cfg_file', tiny_cfg, '--epochs', 1, '--batch_size', 3, '--workers', 0,
               '--extra_tag', tag, '--fix_random_seed'))
        ckpt = OUTPUT_GROUP / tag / 'ckpt' / 'checkpoint_epoch_1.pth'
        kept = tiny_cfg.parent / 'trained_epoch_1.pth'
        shutil.copy(ckpt, kept)
    finally:
        shutil.rmtree(OUTPUT_GROUP / tag, ignore_errors=True)
    return {'cfg': tiny_cfg, 'ckpt': kept}


# ------------------------------------------------------------------------------------- 1. resume never destroys
def test_e2e_resume_refuses_unloadable_checkpoints_then_fresh_start_moves_them(trained, extra_tag):
    ckpt_dir = OUTPUT_GROUP / extra_tag / 'ckpt'
    ckpt_dir.mkdir(parents=True)
    old = ckpt_dir / 'checkpoint_epoch_1.pth'
    shutil.copy(trained['ckpt'], old)
    before = old.read_bytes()
    common = ['--cfg_file', trained['cfg'], '--epochs', 2, '--workers', 0, '--extra_tag', extra_tag]

    # another width: no checkpoint in the folder loads -> stop, naming it and why, nothing written
    proc = run('train.py', *common, '--batch_size', 3, *OTHER_WIDTH)
    user_error(proc, 'none can continue this run', 'checkpoint_epoch_1.pth', 'does not match the model',
               '--fresh_start')
    assert old.read_bytes() == before and sorted(p.name for p in ckpt_dir.glob('*.pth')) == [old.name]

    # another total batch size: its 'it' would map to other epochs -> refused
    proc = run('train.py', *common, '--batch_size', 1)
    user_error(proc, 'total batch size of 3, this run has 1')
    assert old.read_bytes() == before and sorted(p.name for p in ckpt_dir.glob('*.pth')) == [old.name]

    # an explicit fresh start moves the old work aside and trains from scratch
    ok(run('train.py', *common, '--batch_size', 3, '--fresh_start', *OTHER_WIDTH))
    moved = list(ckpt_dir.glob('superseded_*/checkpoint_epoch_1.pth'))
    assert len(moved) == 1 and moved[0].read_bytes() == before
    new = torch.load(ckpt_dir / 'checkpoint_epoch_2.pth', weights_only=True)
    assert (new['epoch'], new['it'], new['batch_size']) == (2, 6, 3)
    assert new['model_state']['backbone_2d.blocks.0.1.weight'].shape[0] == 32


def test_failed_resume_leaves_model_and_optimizer_untouched(tmp_path):
    """A checkpoint whose model_state fits but whose distill_state / optimizer does not changes nothing."""
    torch.manual_seed(0)
    good = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    path = checkpoint_utils.save_checkpoint(checkpoint_utils.checkpoint_state(good, None, 1, 3), tmp_path / 'c')
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    optimizer = torch.optim.SGD([{'params': [model[0].weight]}, {'params': [model[0].bias]}], lr=0.1)
    state = torch.load(path, weights_only=True)
    state['optimizer_state'] = torch.optim.SGD(model.parameters(), lr=0.1).state_dict()  # one group, not two
    torch.save(state, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(checkpoint_utils.CheckpointMismatchError, match='parameter groups of sizes'):
        checkpoint_utils.load_params_with_optimizer(model, path, optimizer=optimizer)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# -------------------------------------------------------------------------------------------- 2. NaN training
def test_e2e_nan_training_stops_and_never_saves_non_finite_weights(trained, extra_tag, tmp_path):
    cfg = trained['cfg'].parent / 'pp_reliability_nan.yaml'
    cfg.write_text(trained['cfg'].read_text() + 'OPTIMIZATION:\n  MAX_NONFINITE_STEPS: 2\n')
    out = REPO / 'output' / 'kitti_models' / 'pp_reliability_nan' / extra_tag
    try:
        proc = run('train.py', '--cfg_file', cfg, '--epochs', 4, '--batch_size', 3, '--workers', 0,
                   '--extra_tag', extra_tag, '--ckpt_save_time_interval', 0, '--set', 'OPTIMIZATION.LR', '1e6')
        user_error(proc, 'consecutive steps with a NaN/inf loss or gradient', 'MAX_NONFINITE_STEPS = 2')
        assert 'step skipped' in proc.stdout + proc.stderr
        saved = list((out / 'ckpt').glob('*.pth'))
        assert saved, 'the epochs before the blow-up were checkpointed'
        for path in saved:
            state = torch.load(path, weights_only=True)
            assert checkpoint_utils.non_finite_tensors(state['model_state']) == [], path.name
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def test_save_checkpoint_refuses_non_finite_weights(tmp_path):
    state = {'epoch': 1, 'it': 1, 'model_state': {'w': torch.tensor([1.0, float('nan')]), 'n': torch.tensor(3)}}
    with pytest.raises(checkpoint_utils.NonFiniteStateError, match=r"model_state\.w"):
        checkpoint_utils.save_checkpoint(state, tmp_path / 'c')
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- 3. strict test.py
def test_e2e_test_py_refuses_a_checkpoint_of_another_width(trained, extra_tag):
    proc = run('test.py', '--cfg_file', trained['cfg'], '--ckpt', trained['ckpt'], '--batch_size', 2,
               '--workers', 0, '--extra_tag', extra_tag, *OTHER_WIDTH)
    line = user_error(proc, str(trained['ckpt']), 'does not match the model', 'mis-shaped keys',
                      'backbone_2d.blocks.0.1.weight')
    assert 'Car AP' not in proc.stdout + proc.stderr, line


# ---------------------------------------------------------------------------------- 4. no code from checkpoints
def test_e2e_crafted_checkpoint_runs_no_code_in_test_py(trained, extra_tag, tmp_path):
    marker = tmp_path / 'pwned_test'
    evil = crafted_checkpoint(tmp_path / 'evil.pth', marker)
    proc = run('test.py', '--cfg_file', trained['cfg'], '--ckpt', evil, '--batch_size', 2, '--workers', 0,
               '--extra_tag', extra_tag)
    user_error(proc, 'refused', 'open', '--unsafe_load')
    assert not marker.exists()


def test_e2e_crafted_teacher_checkpoint_runs_no_code(trained, extra_tag, tmp_path, kitti_infos_root,
                                                     tiny_config_text):
    marker = tmp_path / 'pwned_teacher'
    evil = crafted_checkpoint(tmp_path / 'evil_teacher.pth', marker)
    cfg = trained['cfg'].parent / 'pp4x_kd_reliability.yaml'
    cfg.write_text(tiny_config_text(KD_CFG, kitti_infos_root) + f'TEACHER:\n  CFG_FILE: {trained["cfg"]}\n')
    out = REPO / 'output' / 'kitti_models' / 'pp4x_kd_reliability'
    try:
        proc = run('train.py', '--cfg_file', cfg, '--teacher_ckpt', evil, '--epochs', 1, '--workers', 0,
                   '--extra_tag', extra_tag)
        user_error(proc, 'refused', str(evil))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    assert not marker.exists()


def test_crafted_checkpoint_refused_by_every_loader_unless_unsafe(tmp_path):
    from pcdet.distill.teacher import load_teacher_checkpoint
    model = nn.Sequential(nn.Linear(3, 2))
    marker = tmp_path / 'pwned'
    for legacy in (False, True):
        evil = tmp_path / f'evil_{legacy}.pth'
        torch.save({'model_state': model.state_dict(), 'payload': Payload(marker)}, evil,
                   _use_new_zipfile_serialization=not legacy)
        loaders = [lambda p: checkpoint_utils.load_checkpoint(p),                          # resume, export
                   lambda p: checkpoint_utils.load_model_state(model, p, strict=False),    # --pretrained_model
                   lambda p: checkpoint_utils.load_params_with_optimizer(model, p),       # --ckpt in train.py
                   lambda p: load_teacher_checkpoint(model, p)]                           # --teacher_ckpt
        for load in loaders:
            with pytest.raises(checkpoint_utils.CheckpointError, match='refused'):
                load(evil)
            assert not marker.exists()
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger('test_unsafe')
    logger.addHandler(handler)
    checkpoint_utils.load_checkpoint(evil, allow_unsafe=True, logger=logger)   # the explicit opt-in works ...
    assert marker.exists() and any('--unsafe_load' in r for r in records)     # ... and says so


@pytest.mark.parametrize('content, message', [
    (b'', 'is empty'),
    (b'model_state = {"w": 1}\n', 'is a text file'),
    ('zip_half', 'truncated or corrupt'),
    ('legacy_half', 'truncated or corrupt'),
    (pickle.dumps([1, 2, 3], protocol=2), 'truncated or corrupt'),   # a pickle, but not torch.save's
    ('list', 'not a model checkpoint'),
])
def test_unreadable_checkpoints_give_one_clear_line(tmp_path, content, message):
    path = tmp_path / 'bad.pth'
    if content == 'list':
        torch.save([1, 2, 3], path)
    elif content in ('zip_half', 'legacy_half'):
        torch.save({'model_state': {'w': torch.ones(20000)}}, path,
                   _use_new_zipfile_serialization=(content == 'zip_half'))
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(checkpoint_utils.CheckpointError) as err:
        checkpoint_utils.load_model_state(nn.Linear(2, 2), path)
    assert message in str(err.value) and str(path) in str(err.value) and '\n' not in str(err.value)
    with pytest.raises(checkpoint_utils.CheckpointNotFoundError, match='not found'):
        checkpoint_utils.load_checkpoint(tmp_path / 'missing.pth')


def test_e2e_text_checkpoint_in_test_py_is_one_line(trained, extra_tag, tmp_path):
    text = tmp_path / 'notes.pth'
    text.write_text('these are my notes, not weights\n')
    proc = run('test.py', '--cfg_file', trained['cfg'], '--ckpt', text, '--batch_size', 2, '--workers', 0,
               '--extra_tag', extra_tag)
    user_error(proc, str(text), 'is a text file')


def test_ddp_prefixed_checkpoint_loads_strictly(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2))
    state = {'module.' + k: v for k, v in model.state_dict().items()}
    path = checkpoint_utils.save_checkpoint({'model_state': state}, tmp_path / 'ddp')
    other = nn.Sequential(nn.Linear(3, 2))
    checkpoint_utils.load_model_state(other, path, strict=True)
    assert torch.equal(other[0].weight, model[0].weight)


def test_checkpoint_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = checkpoint_utils.save_checkpoint({'model_state': {'w': torch.ones(1)}}, tmp_path / 'c')
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644


# ------------------------------------------------------------------------ spconv 1.x SECOND: teacher and test.py
def _second_state_in_spconv1_layout(model):
    """This toolbox stores sparse-conv weights (Cout, kz, ky, kx, Cin); spconv 1.x (OpenPCDet's model zoo)
    stored (kz, ky, kx, Cin, Cout)."""
    return {k: (v.permute(1, 2, 3, 4, 0).contiguous() if v.dim() == 5 else v) for k, v in model.state_dict().items()}


def test_spconv1_second_checkpoint_loads_as_teacher(tmp_path):
    from easydict import EasyDict

    from pcdet.config import cfg_from_yaml_file
    from pcdet.datasets.dataset_meta import DatasetMeta
    from pcdet.distill import build_distiller
    from pcdet.models import build_network
    cfg_dir = REPO / 'tools/cfgs/kitti_synth_models'
    cfg = cfg_from_yaml_file(str(cfg_dir / 'second_4x_pointdistiller.yaml'), EasyDict())
    teacher_cfg = cfg_from_yaml_file(str(cfg_dir / 'second.yaml'), EasyDict())
    meta = DatasetMeta.from_cfg(cfg)
    torch.manual_seed(0)
    teacher = build_network(model_cfg=teacher_cfg.MODEL, num_class=3, dataset=meta)
    legacy = _second_state_in_spconv1_layout(teacher)
    assert legacy['backbone_3d.conv1.0.0.weight'].shape != teacher.state_dict()['backbone_3d.conv1.0.0.weight'].shape
    torch.save({'model_state': legacy, 'epoch': 80, 'version': 'pcdet+0.3.0'}, tmp_path / 'second_spconv1.pth',
               _use_new_zipfile_serialization=False)
    student = build_network(model_cfg=cfg.MODEL, num_class=3, dataset=meta)
    distiller = build_distiller(cfg, student, None, teacher_ckpt=str(tmp_path / 'second_spconv1.pth'),
                                cfg_dir=str(cfg_dir))
    for k, v in teacher.state_dict().items():
        assert torch.equal(distiller.teacher.state_dict()[k], v), k


def test_e2e_spconv1_second_checkpoint_evaluates_with_test_py(kitti_infos_root, extra_tag, tmp_path,
                                                              tiny_config_text):
    from easydict import EasyDict

    from pcdet.config import cfg_from_yaml_file
    from pcdet.datasets.dataset_meta import DatasetMeta
    from pcdet.models import build_network
    cfg_dir = tmp_path / 'kitti_models'
    cfg_dir.mkdir()
    cfg_file = cfg_dir / 'second_reliability.yaml'
    # half KITTI's x / y range on SECOND's 0.05 m grid (704 x 800 cells: the BEV strides divide it)
    cfg_file.write_text(tiny_config_text(REPO / 'tools/cfgs/kitti_models/second.yaml', kitti_infos_root,
                                         (0, -20, -3, 35.2, 20, 1)))
    cfg = cfg_from_yaml_file(str(cfg_file), EasyDict())
    torch.manual_seed(0)
    model = build_network(model_cfg=cfg.MODEL, num_class=3, dataset=DatasetMeta.from_cfg(cfg, training=False))
    ckpt = tmp_path / 'second_7862.pth'   # the model zoo's name: test.py's epoch id is its last number
    torch.save({'model_state': _second_state_in_spconv1_layout(model), 'epoch': 80}, ckpt,
               _use_new_zipfile_serialization=False)
    out = REPO / 'output' / 'kitti_models' / 'second_reliability'
    try:
        proc = ok(run('test.py', '--cfg_file', cfg_file, '--ckpt', ckpt, '--batch_size', 2, '--workers', 0,
                      '--extra_tag', extra_tag, timeout=600))
        log = proc.stdout + proc.stderr
        assert f'==> Done (loaded {len(model.state_dict())}/{len(model.state_dict())})' in log
        assert (out / extra_tag / 'eval' / 'epoch_7862' / 'val' / 'default' / 'result.pkl').is_file()
    finally:
        shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- 5. the generator
def test_generator_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    from pcdet.datasets.synthetic.generate import main
    root = tmp_path / 'kitti'
    (root / 'training' / 'velodyne').mkdir(parents=True)
    (root / 'ImageSets').mkdir()
    frame = root / 'training' / 'velodyne' / '000000.bin'
    frame.write_bytes(b'\x00' * 16)
    (root / 'ImageSets' / 'train.txt').write_text('000000\n')
    args = ['--out', str(root), '--num_train', '1', '--num_val', '0', '--workers', '1']
    with pytest.raises(SystemExit) as err:
        main(args)
    assert 'not empty' in str(err.value.code) and '--overwrite' in str(err.value.code)
    assert frame.read_bytes() == b'\x00' * 16 and (root / 'ImageSets' / 'train.txt').read_text() == '000000\n'
    main(args + ['--overwrite'])
    assert frame.stat().st_size > 16


# ------------------------------------------------------------------------------------------------- configs
def test_e2e_misspelled_top_level_key_is_an_error(trained, extra_tag):
    cfg = trained['cfg'].parent / 'pp_typo.yaml'
    cfg.write_text(trained['cfg'].read_text() + 'OPTIMIZATON:\n  LR: 0.01\n')
    proc = run('train.py', '--cfg_file', cfg, '--epochs', 1, '--workers', 0, '--extra_tag', extra_tag)
    user_error(proc, str(cfg), "'OPTIMIZATON'", "did you mean 'OPTIMIZATION'?")


def test_config_key_check_on_shipped_configs_and_typos():
    from easydict import EasyDict

    from pcdet.config import ConfigUnknownKeyError, cfg_from_yaml_file, check_config_keys
    shipped = sorted((REPO / 'tools' / 'cfgs').rglob('*.yaml')) + sorted((REPO / 'benchmarks').rglob('*.yaml'))
    assert len(shipped) > 20
    for path in shipped:   # OpenPCDet's configs and ours load without a word
        if 'dataset_configs' in path.parts:
            continue
        assert check_config_keys(cfg_from_yaml_file(str(path), EasyDict()), path) == [], path
    cfg = cfg_from_yaml_file(str(PP_CFG), EasyDict())
    cfg.OPTIMIZATION.GRAD_NORM_CLIPP = 10
    with pytest.raises(ConfigUnknownKeyError, match=r"OPTIMIZATION\.'GRAD_NORM_CLIPP'.*did you mean 'GRAD_NORM_CLIP'"):
        check_config_keys(cfg, 'pp.yaml')
    del cfg.OPTIMIZATION['GRAD_NORM_CLIPP']
    cfg.DATA_CONFIG.POINT_CLOUD_RANGEE = [0, 0, 0, 1, 1, 1]
    cfg.MODEL.BACKBONE2D = {}
    assert check_config_keys(cfg, 'pp.yaml') == [
        "DATA_CONFIG.'POINT_CLOUD_RANGEE' is not a key any code reads (did you mean 'POINT_CLOUD_RANGE'?)",
        "MODEL.'BACKBONE2D' is not a key any code reads (did you mean 'BACKBONE_2D'?)"]


def test_pointdistiller_reports_a_capped_k(caplog):
    from pcdet.distill.losses.pointdistiller_loss import PointDistillerLoss
    g = torch.Generator().manual_seed(0)
    counts = (30, 45)
    coords = torch.cat([torch.stack([torch.full((n,), b), torch.zeros(n, dtype=torch.long),
                                     torch.randperm(400, generator=g)[:n] // 20, torch.arange(n) % 20], 1)
                        for b, n in enumerate(counts)]).int()
    batch = {'voxel_coords': coords, 'voxel_num_points': torch.randint(1, 33, (sum(counts),), generator=g).int()}
    feat = torch.randn(sum(counts), 8, generator=g)
    loss = PointDistillerLoss(dict(NAME='PointDistillerLoss', NUM_NODES=20, K=128, TAU=1.0), 'DISTILL.LOSSES[0]',
                              lambda side, name: 8)
    with caplog.at_level(logging.WARNING, logger='pcdet'):
        _, extra = loss({'pillar_features': feat}, {'pillar_features': feat.clone()}, batch)
    assert extra == {'effective_K': 30}
    assert 'K = 128 capped to 30' in caplog.text and 'DISTILL.LOSSES[0]' in caplog.text
