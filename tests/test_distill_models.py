"""The Distiller on the real detectors and the shipped distillation configs (synthetic-set sizes, CPU).

Inputs are random voxelised scenes (random occupied voxels of random point counts inside the config's range)
and a few GT boxes; the teacher checkpoint is a freshly built teacher saved to a tmp file, so the strict loading
path of ``build_distiller`` runs too.
"""
import glob
import os

import numpy as np
import pytest
import torch
from easydict import EasyDict

from pcdet import models
from pcdet.config import cfg_from_yaml_file
from pcdet.datasets.dataset_meta import DatasetMeta
from pcdet.distill import build_distiller

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTH = os.path.join(ROOT, 'tools', 'cfgs', 'kitti_synth_models')


def voxelises(path):
    """The config turns points into voxels (the random batches below are voxels); point-based ones (PointRCNN)
    run on real KITTI points in tests/test_pointrcnn_distill.py."""
    steps = cfg_from_yaml_file(path, EasyDict()).DATA_CONFIG.get('DATA_PROCESSOR', [])
    return any(step.NAME == 'transform_points_to_voxels' for step in steps)


KD_CFGS = sorted(p for p in glob.glob(os.path.join(SYNTH, '*_pointdistiller.yaml')) if voxelises(p)) + [
    os.path.join(SYNTH, f'pointpillar_4x_{m}.yaml') for m in ('fitnet', 'logit_kd', 'fg_mimic')]


def load_cfg(path):
    cfg = EasyDict()
    cfg_from_yaml_file(path, cfg)
    return cfg


def random_batch(ds, bsz=2, voxels_per_sample=300, seed=0):
    """Random voxelised scenes: (V, T, 4) voxels, counts, coords [b, z, y, x], gt_boxes (B, 2, 8)."""
    g = np.random.default_rng(seed)
    gx, gy, gz = (int(v) for v in ds.grid_size)
    rng, vs = ds.point_cloud_range, ds.voxel_size
    vox, nums, coords = [], [], []
    for b in range(bsz):
        lin = g.choice(gx * gy * gz, size=voxels_per_sample, replace=False)
        z, y, x = lin // (gx * gy), (lin // gx) % gy, lin % gx
        n = g.integers(1, ds.max_points_per_voxel + 1, size=voxels_per_sample)
        pts = np.zeros((voxels_per_sample, ds.max_points_per_voxel, 4), np.float32)
        for i in range(voxels_per_sample):
            low = rng[:3] + np.array([x[i], y[i], z[i]]) * vs
            pts[i, :n[i], :3] = low + g.random((n[i], 3)) * vs
            pts[i, :n[i], 3] = g.random(n[i])
        vox.append(pts)
        nums.append(n)
        coords.append(np.stack([np.full(voxels_per_sample, b), z, y, x], 1))
    centre = (rng[:3] + rng[3:]) / 2
    gt = np.zeros((bsz, 2, 8), np.float32)
    gt[:, 0] = [centre[0], centre[1], centre[2], 3.9, 1.6, 1.56, 0.3, 1]
    gt[:, 1] = [centre[0] + 4, centre[1] - 2, centre[2], 0.8, 0.6, 1.73, -1.0, 2]
    return {'voxels': torch.from_numpy(np.concatenate(vox)),
            'voxel_num_points': torch.from_numpy(np.concatenate(nums).astype(np.int32)),
            'voxel_coords': torch.from_numpy(np.concatenate(coords).astype(np.int32)),
            'gt_boxes': torch.from_numpy(gt), 'batch_size': bsz}


def build_pair(exp_path, tmp_path, ckpt_from=None):
    """Student from the experiment YAML, teacher checkpoint written from a fresh teacher (or ``ckpt_from``)."""
    cfg = load_cfg(exp_path)
    ds = DatasetMeta.from_cfg(cfg)
    torch.manual_seed(0)
    student = models.build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=ds)
    tcfg = load_cfg(os.path.join(os.path.dirname(exp_path), ckpt_from or cfg.TEACHER.CFG_FILE))
    source = models.build_network(model_cfg=tcfg.MODEL, num_class=len(tcfg.CLASS_NAMES), dataset=ds)
    source.train()
    with torch.no_grad():  # non-trivial BN statistics, as a trained teacher has
        for module in source.module_list[:1]:
            module(random_batch(ds, seed=5))
    ckpt = tmp_path / 'teacher.pth'
    torch.save({'model_state': source.state_dict(), 'epoch': 1}, ckpt)
    return cfg, ds, student, str(ckpt), source


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_pointpillar_pointdistiller_step(tmp_path):
    exp = os.path.join(SYNTH, 'pointpillar_4x_pointdistiller.yaml')
    cfg, ds, student, ckpt, source = build_pair(exp, tmp_path)
    distiller = build_distiller(cfg, student, None, teacher_ckpt=ckpt, cfg_dir=SYNTH)
    teacher = distiller.teacher
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in teacher.state_dict().items())
    distiller.train()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    t0, s0 = snapshot(teacher), snapshot(student)
    opt = torch.optim.Adam(distiller.parameters(), lr=1e-3)
    ret, tb, _ = distiller(random_batch(ds))
    assert tb['distill/PointDistillerLoss'] > 0 and 'distill_loss' in tb
    opt.zero_grad()
    ret['loss'].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in distiller.losses.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.vfe.parameters())
    opt.step()
    t1, s1 = snapshot(teacher), snapshot(student)
    assert all(torch.equal(t0[k], t1[k]) for k in t0)                    # weights and BN statistics
    assert any(not torch.equal(s0[k], s1[k]) for k in s0 if 'running_mean' in k)
    assert any(not torch.equal(s0[k], s1[k]) for k in s0 if k.endswith('weight'))
    # the student checkpoint loads into the plain student config strictly
    path = tmp_path / 'student.pth'
    torch.save({'model_state': distiller.student_state_dict(), 'distill_state': distiller.distill_state_dict()}, path)
    plain_cfg = load_cfg(os.path.join(SYNTH, 'pointpillar_4x.yaml'))
    plain = models.build_network(model_cfg=plain_cfg.MODEL, num_class=len(plain_cfg.CLASS_NAMES), dataset=ds)
    plain.load_state_dict(torch.load(path, weights_only=True)['model_state'], strict=True)


def test_wrong_teacher_checkpoint_and_missing_feature(tmp_path):
    exp = os.path.join(SYNTH, 'pointpillar_4x_pointdistiller.yaml')
    cfg, ds, student, _, _ = build_pair(exp, tmp_path, ckpt_from='pointpillar_4x.yaml')
    wrong = str(tmp_path / 'teacher.pth')                                   # a 4x student saved as "teacher"
    s_w = student.backbone_2d.blocks[0][1].weight.shape[0]                  # student / teacher first-block widths
    t_w = 2 * s_w                                                           # the 4x student has half the widths
    with pytest.raises(RuntimeError, match=rf"mis-shaped keys \(\d+\): .*backbone_2d.blocks.0.1.weight \(checkpoint "
                                           rf"\({s_w}, {s_w}, 3, 3\), model \({t_w}, {t_w}, 3, 3\)\)"):
        build_distiller(cfg, student, None, teacher_ckpt=wrong, cfg_dir=SYNTH)
    cfg.TEACHER.ALLOW_RANDOM_INIT = True
    cfg.DISTILL.LOSSES[0].STUDENT_FEATURE = 'module:backbone_2d.block.0'
    cfg.DISTILL.LOSSES[0].STUDENT_CHANNELS = 32
    with pytest.raises(KeyError, match=r"no module \['backbone_2d.block.0'\].*backbone_2d.blocks.0"):
        build_distiller(cfg, student, None, cfg_dir=SYNTH)


@pytest.mark.parametrize('exp', KD_CFGS, ids=os.path.basename)
def test_shipped_configs_build_and_step(exp, tmp_path):
    cfg = load_cfg(exp)
    cfg.TEACHER.ALLOW_RANDOM_INIT = True
    ds = DatasetMeta.from_cfg(cfg)
    student = models.build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=ds)
    distiller = build_distiller(cfg, student, None, cfg_dir=SYNTH)
    assert distiller.resolved['LOSSES'] and all('WEIGHT' in blk for blk in distiller.resolved['LOSSES'])
    distiller.train()
    ret, tb, _ = distiller(random_batch(ds, bsz=1, voxels_per_sample=200))
    ret['loss'].backward()
    assert torch.isfinite(ret['loss']) and tb['distill_loss'] > 0
    assert all(p.grad is None for p in distiller.teacher.parameters())
