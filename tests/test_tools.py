"""Tests of the train/test tools: schedules, optimizer, checkpoints (unit) and train.py/test.py (end-to-end).

End-to-end tests (marked ``e2e`` in their names) run tools/train.py and tools/test.py as subprocesses on a
tiny PointPillars setup over the 13 real KITTI sample frames, from the repo root and from tools/.
"""
import math
import os
import pickle
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from easydict import EasyDict

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / 'tools')]

from pcdet.utils import checkpoint_utils, dist_utils  # noqa: E402
from train_utils import exp_group_path, resolve_cfg_file  # noqa: E402
from train_utils.optimization import build_optimizer, build_scheduler  # noqa: E402


def _toy_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(3, 4, 1), nn.BatchNorm1d(4), nn.ReLU(), nn.Conv1d(4, 2, 1))


def _optim_cfg(name='adam_onecycle', **kw):
    cfg = dict(OPTIMIZER=name, LR=0.003, WEIGHT_DECAY=0.01, MOMENTUM=0.9, MOMS=[0.95, 0.85], PCT_START=0.4,
               DIV_FACTOR=10, DECAY_STEP_LIST=[35, 45], LR_DECAY=0.1, LR_CLIP=1e-7, LR_WARMUP=False,
               WARMUP_EPOCH=1, GRAD_NORM_CLIP=10)
    cfg.update(kw)
    return EasyDict(cfg)


def _contains_numpy(obj):
    if isinstance(obj, (np.generic, np.ndarray)):
        return True
    if isinstance(obj, dict):
        return any(_contains_numpy(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_contains_numpy(v) for v in obj)
    return False


# ----------------------------------------------------------------------------------------------- schedules
def test_onecycle_schedule_values():
    """lr: cosine LR/10 -> LR over 40 % of T, then LR -> LR/10/1e4; beta1 0.95 -> 0.85 -> 0.95 (spec sec. 8)."""
    model = _toy_net()
    cfg = _optim_cfg()
    opt = build_optimizer(model, cfg)
    sched, warm = build_scheduler(opt, total_iters_each_epoch=10, total_epochs=10, last_epoch=-1, optim_cfg=cfg)
    assert warm is None
    lr, low = 0.003, 0.0003
    expected = {0: (low, 0.95), 20: ((low + lr) / 2, 0.90), 40: (lr, 0.85),
                70: ((lr + low / 1e4) / 2, 0.90), 100: (low / 1e4, 0.95)}
    for step, (exp_lr, exp_mom) in expected.items():
        sched.step(step)
        assert opt.lr == pytest.approx(exp_lr, rel=1e-9)
        assert all(g['lr'] == pytest.approx(exp_lr, rel=1e-9) for g in opt.param_groups)
        assert opt.param_groups[0]['betas'][0] == pytest.approx(exp_mom, rel=1e-9)
        assert opt.param_groups[0]['betas'][1] == pytest.approx(0.99)
    # monotone in both phases
    lrs = [sched.lr_at(s) for s in range(101)]
    assert all(a <= b for a, b in zip(lrs[:40], lrs[1:41]))
    assert all(a >= b for a, b in zip(lrs[40:100], lrs[41:101]))


def test_step_decay_with_floor_and_warmup():
    model = _toy_net()
    cfg = _optim_cfg('adam', DECAY_STEP_LIST=[2, 3], LR_DECAY=0.1, LR_CLIP=1e-4, LR_WARMUP=True, WARMUP_EPOCH=1)
    opt = build_optimizer(model, cfg)
    sched, warm = build_scheduler(opt, total_iters_each_epoch=5, total_epochs=4, last_epoch=-1, optim_cfg=cfg)
    for step, exp in [(0, 0.003), (9, 0.003), (10, 0.0003), (15, 1e-4), (19, 1e-4)]:
        sched.step(step)
        assert opt.param_groups[0]['lr'] == pytest.approx(exp)
    warm.step(0)
    assert opt.param_groups[0]['lr'] == pytest.approx(0.0003)
    warm.step(5)
    assert opt.param_groups[0]['lr'] == pytest.approx(0.003)
    sgd = build_optimizer(model, _optim_cfg('sgd'))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]['momentum'] == 0.9
    with pytest.raises(KeyError, match='adamw_typo'):
        build_optimizer(model, _optim_cfg('adamw_typo'))


def test_onecycle_optimizer_decoupled_weight_decay_includes_bn():
    """With zero gradients Adam moves nothing, so one step is exactly p <- p * (1 - wd * lr) for every group."""
    model = _toy_net()
    cfg = _optim_cfg()
    opt = build_optimizer(model, cfg)
    assert len(opt.param_groups) == 2 and opt.param_groups[1].get('is_bn')
    n_params = sum(len(g['params']) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))
    opt.lr = 0.5
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for b, p in zip(before, model.parameters()):
        torch.testing.assert_close(p.detach(), b * (1 - 0.01 * 0.5), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------- checkpoints
def _trained_state(tmp_path):
    model = _toy_net()
    cfg = _optim_cfg()
    opt = build_optimizer(model, cfg)
    sched, _ = build_scheduler(opt, 4, 2, -1, cfg)
    x = torch.randn(2, 3, 5)
    for it in range(3):
        sched.step(it)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    # what fastai's OneCycle does upstream: numpy scalars in param_groups
    opt.param_groups[0]['lr'] = np.float64(opt.param_groups[0]['lr'])
    opt.param_groups[0]['betas'] = (np.float64(0.9), np.float64(0.99))
    return model, opt


def test_checkpoint_state_loads_weights_only_and_has_no_numpy(tmp_path):
    model, opt = _trained_state(tmp_path)
    state = checkpoint_utils.checkpoint_state(model, opt, epoch=1, it=3)
    assert set(state) == {'epoch', 'it', 'model_state', 'optimizer_state', 'version'}
    assert state['version'].startswith('pcdet+')
    assert not _contains_numpy(state['optimizer_state'])
    path = checkpoint_utils.save_checkpoint(state, tmp_path / 'ckpt' / 'checkpoint_epoch_1')
    assert path.endswith('checkpoint_epoch_1.pth')
    loaded = torch.load(path, map_location='cpu', weights_only=True)
    assert loaded['epoch'] == 1 and loaded['it'] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(loaded['model_state'][k], v)
    # the optimizer resumes: a fresh model + optimizer takes the exact state
    model2 = _toy_net()
    opt2 = build_optimizer(model2, _optim_cfg())
    it, epoch = checkpoint_utils.load_params_with_optimizer(model2, path, optimizer=opt2)
    assert (it, epoch) == (3, 1)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    assert opt2.param_groups[0]['lr'] == pytest.approx(float(opt.param_groups[0]['lr']))
    s1, s2 = opt.state_dict()['state'], opt2.state_dict()['state']
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k]['exp_avg'], s2[k]['exp_avg'])


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path):
    good = {'epoch': 1, 'it': 2, 'model_state': OrderedDict(w=torch.ones(3))}
    path = checkpoint_utils.save_checkpoint(good, tmp_path / 'latest_model')
    # a lambda cannot be pickled: torch.save fails after it has started writing the temp file
    bad = {'epoch': 2, 'it': 4, 'model_state': OrderedDict(w=torch.zeros(3)), 'oops': lambda: None}
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        checkpoint_utils.save_checkpoint(bad, tmp_path / 'latest_model')
    loaded = checkpoint_utils.load_checkpoint(path)
    assert loaded['epoch'] == 1 and torch.equal(loaded['model_state']['w'], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == ['latest_model.pth']  # no temp file left behind


def test_legacy_openpcdet_checkpoint_loads(tmp_path):
    """OpenPCDet wrote non-zip files whose optimizer state holds np.float64 lr / betas."""
    model, opt = _trained_state(tmp_path)
    raw_opt_state = opt.state_dict()
    assert _contains_numpy(raw_opt_state)
    legacy = {'epoch': 80, 'it': 37120, 'model_state': model.state_dict(), 'optimizer_state': raw_opt_state,
              'version': 'pcdet+0.6.0+8caccce'}
    path = tmp_path / 'checkpoint_epoch_80.pth'
    torch.save(legacy, path, _use_new_zipfile_serialization=False)
    loaded = checkpoint_utils.load_checkpoint(path)
    assert loaded['epoch'] == 80 and not _contains_numpy(loaded['optimizer_state'])
    lr = float(raw_opt_state['param_groups'][0]['lr'])
    assert loaded['optimizer_state']['param_groups'][0]['lr'] == pytest.approx(lr)
    model2 = _toy_net()
    opt2 = build_optimizer(model2, _optim_cfg())
    assert checkpoint_utils.load_params_with_optimizer(model2, path, optimizer=opt2) == (37120, 80)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_resume_rejects_mismatched_model(tmp_path):
    model, opt = _trained_state(tmp_path)
    path = checkpoint_utils.save_checkpoint(checkpoint_utils.checkpoint_state(model, opt, 1, 3), tmp_path / 'c')
    other = nn.Sequential(nn.Conv1d(3, 4, 1))
    with pytest.raises(RuntimeError, match='unexpected keys'):
        checkpoint_utils.load_params_with_optimizer(other, path)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        checkpoint_utils.load_checkpoint(tmp_path / 'missing.pth')


# ----------------------------------------------------------------------------------------------- CLI helpers
def test_batch_size_must_divide_world_size():
    assert dist_utils.check_batch_size(8, 2) == 4
    with pytest.raises(ValueError, match='--batch_size 5 .* multiple of the number of processes \\(2\\)'):
        dist_utils.check_batch_size(5, 2)


def test_cfg_path_resolution_from_root_and_tools(tmp_path, monkeypatch):
    cfg_dir = REPO / 'tools' / 'cfgs' / 'kitti_models'
    monkeypatch.chdir(REPO)
    a = resolve_cfg_file('tools/cfgs/kitti_models/pointpillar.yaml')
    b = resolve_cfg_file('cfgs/kitti_models/pointpillar.yaml')  # OpenPCDet's spelling, from the root too
    monkeypatch.chdir(REPO / 'tools')
    c = resolve_cfg_file('cfgs/kitti_models/pointpillar.yaml')
    monkeypatch.chdir(tmp_path)
    d = resolve_cfg_file('tools/cfgs/kitti_models/pointpillar.yaml')
    assert a == b == c == d == str((cfg_dir / 'pointpillar.yaml').resolve())
    assert exp_group_path(a) == 'kitti_models'
    with pytest.raises(FileNotFoundError, match='nope.yaml'):
        resolve_cfg_file('cfgs/nope.yaml')


def test_pickle_free_of_numpy_after_sanitize():
    state = {'param_groups': [{'lr': np.float32(0.1), 'betas': (np.float64(0.9), 0.99)}],
             'state': {0: {'step': np.int64(3), 'exp_avg': torch.ones(2)}}}
    clean = checkpoint_utils.sanitize_optimizer_state(state)
    assert not _contains_numpy(clean)
    assert isinstance(clean['state'][0]['step'], int) and clean['param_groups'][0]['lr'] == pytest.approx(0.1)
    pickle.dumps(clean)
    assert math.isclose(clean['param_groups'][0]['betas'][0], 0.9)


# ----------------------------------------------------------------------------------------------- end-to-end
# Tiny PointPillars on the 13 real KITTI frames (9 train / 4 val): half the x/y range (216 x 248 pillars),
# no GT sampling, 3 frames per batch -> 3 iterations per epoch; one process, no dataloader workers.
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

PP_CFG = 'tools/cfgs/kitti_models/pointpillar.yaml'
OUTPUT_GROUP = REPO / 'output' / 'kitti_models' / 'pp_tiny'


@pytest.fixture(scope='module')
def tiny_cfg(tmp_path_factory, kitti_infos_root, tiny_config_text):
    """``<tmp>/kitti_models/pp_tiny.yaml``: pointpillar.yaml on the session's tmp KITTI root (infos built by the
    datasets part's CLI), half the x/y range, no GT sampling (9 train frames cannot feed it)."""
    tmp = tmp_path_factory.mktemp('tools_e2e')
    (tmp / 'kitti_models').mkdir()
    cfg = tmp / 'kitti_models' / 'pp_tiny.yaml'
    cfg.write_text(tiny_config_text(REPO / PP_CFG, kitti_infos_root))
    return cfg


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    env.pop('LOCAL_RANK', None)
    return env


def run_tool(tool, args, cwd=REPO, timeout=240, check=True):
    cmd = [sys.executable, str(Path(cwd) / tool) if cwd == REPO else tool] + [str(a) for a in args]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{tool} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


def test_e2e_train_from_root_then_test_from_tools(tiny_cfg, kitti_infos_root, extra_tag):
    out = OUTPUT_GROUP / extra_tag
    run_tool('tools/train.py', ['--cfg_file', tiny_cfg, '--epochs', 1, '--batch_size', 3, '--workers', 0,
                                '--extra_tag', extra_tag, '--num_epochs_to_eval', 1, '--fix_random_seed'])
    ckpt = out / 'ckpt' / 'checkpoint_epoch_1.pth'
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert {'epoch', 'it', 'model_state', 'optimizer_state', 'version'} <= set(state)
    assert state['epoch'] == 1 and state['it'] == 3 and 'distill_state' not in state
    assert (out / 'pp_tiny.yaml').is_file() and list(out.glob('train_*.log'))
    assert list((out / 'tensorboard').glob('events.*'))
    ewt = out / 'eval' / 'eval_with_train'
    assert (ewt / 'eval_list_val.txt').read_text().split() == ['1']
    train_eval = ewt / 'epoch_1' / 'val' / 'result.pkl'
    assert train_eval.is_file()

    # test.py from tools/ with config and checkpoint paths relative to tools/
    rel = os.path.relpath(tiny_cfg, REPO / 'tools')
    run_tool('test.py', ['--cfg_file', rel, '--ckpt', os.path.relpath(ckpt, REPO / 'tools'), '--batch_size', 3,
                         '--workers', 0, '--extra_tag', extra_tag, '--save_to_file'], cwd=REPO / 'tools')
    res_dir = out / 'eval' / 'epoch_1' / 'val' / 'default'
    with open(res_dir / 'result.pkl', 'rb') as f:
        annos = pickle.load(f)
    with open(train_eval, 'rb') as f:
        annos_train = pickle.load(f)
    val_ids = (kitti_infos_root / 'ImageSets' / 'val.txt').read_text().split()
    assert [a['frame_id'] for a in annos] == val_ids
    assert sorted(p.stem for p in (res_dir / 'final_result' / 'data').glob('*.txt')) == sorted(val_ids)
    for a, b in zip(annos, annos_train):  # same weights, same frames -> same detections
        np.testing.assert_allclose(a['score'], b['score'], rtol=1e-5)
    metrics = json.loads((res_dir / 'metrics.json').read_text())
    assert 'recall/roi_0.3' in metrics and any(k.startswith('Car_3d/') for k in metrics)


def test_e2e_sigkill_then_restart_resumes(tiny_cfg, extra_tag):
    """Kill training with SIGKILL after its first epoch; the same command resumes and finishes at it = 2 x 3."""
    out = OUTPUT_GROUP / extra_tag
    args = ['--cfg_file', os.path.relpath(tiny_cfg, REPO / 'tools'), '--epochs', 2, '--batch_size', 3,
            '--workers', 0, '--extra_tag', extra_tag, '--ckpt_save_time_interval', 0]
    cmd = [sys.executable, 'train.py'] + [str(a) for a in args]
    proc = subprocess.Popen(cmd, cwd=REPO / 'tools', env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = out / 'ckpt' / 'checkpoint_epoch_1.pth'
    deadline = time.time() + 180
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.exists(), 'no checkpoint within 180 s'
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = {}
    for p in (out / 'ckpt').glob('*.pth'):  # atomic writes: every file present loads
        s = torch.load(p, map_location='cpu', weights_only=True)
        killed_at[p.name] = (s['epoch'], s['it'])
    assert killed_at['checkpoint_epoch_1.pth'] == (1, 3)
    assert not list((out / 'ckpt').glob('.*.tmp'))

    again = run_tool('train.py', args, cwd=REPO / 'tools')
    log = again.stdout + again.stderr
    assert 'Auto-resumed from' in log, log[-3000:]
    final = torch.load(out / 'ckpt' / 'checkpoint_epoch_2.pth', map_location='cpu', weights_only=True)
    assert (final['epoch'], final['it']) == (2, 6)


# ----------------------------------------------------------------------------------------------- training loop
class _Regressor(nn.Module):
    """A two-layer regressor with the detector's train contract (loss, tb_dict, disp_dict)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, batch):
        loss = (self.net(batch['x']) - batch['y']).pow(2).mean()
        return {'loss': loss}, {'mse': loss.item()}, {}


def _loop_setup(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=g)
    ds = TensorDataset(x, x.sum(1, keepdim=True))
    loader = DataLoader(ds, batch_size=2, shuffle=False, collate_fn=lambda b: {
        'x': torch.stack([i[0] for i in b]), 'y': torch.stack([i[1] for i in b])})
    model = _Regressor()
    cfg = _optim_cfg()
    opt = build_optimizer(model, cfg)
    sched, _ = build_scheduler(opt, len(loader), 3, -1, cfg)
    calls = []

    def model_func(m, batch):
        ret, tb, disp = m(batch)
        calls.append(len(calls))
        return ret['loss'], tb, disp
    return model, opt, sched, loader, model_func, calls, cfg


def test_train_model_checkpoints_pruning_and_mid_epoch_resume(tmp_path):
    from tensorboardX import SummaryWriter
    from train_utils.train_utils import train_model
    model, opt, sched, loader, model_func, calls, cfg = _loop_setup(tmp_path)
    tb = SummaryWriter(str(tmp_path / 'tb'))
    it = train_model(model, opt, loader, model_func, sched, cfg, start_epoch=0, total_epochs=3, start_iter=0,
                     rank=0, tb_log=tb, ckpt_save_dir=tmp_path / 'ckpt', max_ckpt_save_num=2,
                     ckpt_save_time_interval=0)
    tb.close()
    assert it == 9 and len(calls) == 9
    names = sorted(p.name for p in (tmp_path / 'ckpt').glob('*.pth'))
    assert names == ['checkpoint_epoch_2.pth', 'checkpoint_epoch_3.pth', 'latest_model.pth']
    latest = checkpoint_utils.load_checkpoint(tmp_path / 'ckpt' / 'latest_model.pth')
    assert (latest['epoch'], latest['it']) == (2, 9)  # latest_model: unfinished 0-based epoch
    assert list((tmp_path / 'tb').glob('events.*'))
    # the loss went down on this fixed regression problem
    assert calls and model_func(model, next(iter(loader)))[0].item() < _Regressor()(next(iter(loader)))[0]['loss']

    # mid-epoch resume: a checkpoint at it = 4 (epoch 1, 2nd batch) runs the 2 remaining iterations of epoch 1
    model2, opt2, sched2, loader2, model_func2, calls2, cfg2 = _loop_setup(tmp_path)
    seen_steps = []

    class Spy:
        def step(self, step, cur_epoch=None):
            seen_steps.append(step)
            sched2.step(step, cur_epoch)
    it2 = train_model(model2, opt2, loader2, model_func2, Spy(), cfg2, start_epoch=1, total_epochs=2,
                      start_iter=4, rank=0, tb_log=None, ckpt_save_dir=tmp_path / 'ckpt2',
                      ckpt_save_time_interval=None)
    assert it2 == 6 and seen_steps == [4, 5]
    assert checkpoint_utils.load_checkpoint(tmp_path / 'ckpt2' / 'checkpoint_epoch_2.pth')['it'] == 6


def test_latest_model_is_written_when_epochs_are_shorter_than_the_interval(tmp_path):
    """The latest_model clock runs across epochs: 3 epochs of about 0.24 s with a 0.4 s interval still write it
    (a per-epoch clock never fires, and a stopped run loses every epoch since its last checkpoint_epoch_N)."""
    from train_utils.train_utils import train_model
    model, opt, sched, loader, model_func, calls, cfg = _loop_setup(tmp_path)

    def slow_model_func(m, batch):
        time.sleep(0.08)
        return model_func(m, batch)
    train_model(model, opt, loader, slow_model_func, sched, cfg, start_epoch=0, total_epochs=3, start_iter=0,
                rank=0, tb_log=None, ckpt_save_dir=tmp_path / 'ckpt', ckpt_save_interval=100,
                ckpt_save_time_interval=0.4)
    assert sorted(p.name for p in (tmp_path / 'ckpt').glob('*.pth')) == ['latest_model.pth']
    latest = checkpoint_utils.load_checkpoint(tmp_path / 'ckpt' / 'latest_model.pth')
    assert latest['epoch'] >= 1 and 4 <= latest['it'] <= 9


def test_non_finite_step_is_skipped_with_buffers_restored_and_counted():
    from easydict import EasyDict
    from train_utils.train_utils import NonFiniteGuard, NonFiniteTrainingError, make_amp, train_step
    model = _Regressor()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = EasyDict(GRAD_NORM_CLIP=10)
    guard = NonFiniteGuard(max_consecutive=2)
    amp = make_amp(False, 'cpu')
    x = torch.randn(4, 3)
    good = {'x': x, 'y': x.sum(1, keepdim=True)}
    bad = {'x': x.clone(), 'y': good['y'].clone()}
    bad['x'][0, 0] = float('nan')

    def step(batch):
        return train_step(model, optimizer, batch, lambda m, b: (m(b)[0]['loss'], {}, {}), cfg, amp, guard, 0)
    step(good)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, _, _ = step(bad)
    assert not torch.isfinite(loss) and guard.skipped == 1 and guard.consecutive == 1
    for k, v in model.state_dict().items():  # weights and BN running statistics as before the bad step
        assert torch.equal(v, before[k]), k
    step(good)
    assert guard.consecutive == 0 and not torch.equal(model.net[0].weight, before['net.0.weight'])
    step(bad)
    with pytest.raises(NonFiniteTrainingError, match='2 consecutive steps'):
        step(bad)
    assert guard.skipped == 3
