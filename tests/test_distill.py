"""Distiller mechanics: frozen teacher, gradients, checkpoints, feature validation, loss bookkeeping.

The detectors here are small OpenPCDet-shaped stand-ins defined in this file (``module_list`` of vfe ->
map_to_bev_module -> backbone_2d (``blocks``) -> dense_head (``conv_cls`` / ``conv_box``), batch_dict keys of
PointPillar), so the Distiller is exercised without the full model zoo; ``test_distill_models.py`` runs the real
PointPillars / SECOND builds.
"""
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from easydict import EasyDict

from pcdet.distill import make_distiller
from pcdet.distill.teacher import freeze, load_teacher_checkpoint

H, W, NUM_ANCHORS, NUM_CLASS = 12, 10, 2, 3


class Holder:
    point_cloud_range = [0.0, -4.0, -3.0, 8.0, 4.0, 1.0]   # 10 x 12 cells of 0.8 x 0.667 m


class TinyVFE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.linear = nn.Linear(4, c, bias=False)
        self.norm = nn.BatchNorm1d(c)

    def get_output_feature_dim(self):
        return self.c

    def forward(self, batch_dict):
        v = batch_dict['voxels']                                     # (V, P, 4)
        x = F.relu(self.norm(self.linear(v).view(-1, self.c))).view(v.shape[0], v.shape[1], self.c)
        batch_dict['pillar_features'] = x.max(dim=1).values
        return batch_dict


class TinyScatter(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.num_bev_features = c

    def forward(self, batch_dict):
        f, coords = batch_dict['pillar_features'], batch_dict['voxel_coords'].long()
        bsz = int(coords[:, 0].max()) + 1
        canvas = f.new_zeros(bsz, f.shape[1], H * W)
        canvas[coords[:, 0], :, coords[:, 2] * W + coords[:, 3]] = f
        batch_dict['spatial_features'] = canvas.view(bsz, f.shape[1], H, W)
        return batch_dict


class TinyBackbone(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1, bias=False),
                                                   nn.BatchNorm2d(2 * c), nn.ReLU())])
        self.num_bev_features = 2 * c

    def forward(self, batch_dict):
        batch_dict['spatial_features_2d'] = self.blocks[0](batch_dict['spatial_features'])
        return batch_dict


class TinyHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_cls = nn.Conv2d(c, NUM_ANCHORS * NUM_CLASS, 1)
        self.conv_box = nn.Conv2d(c, NUM_ANCHORS * 7, 1)
        self.runs = 0

    def forward(self, batch_dict):
        self.runs += 1
        x = batch_dict['spatial_features_2d']
        batch_dict['cls_preds'], batch_dict['box_preds'] = self.conv_cls(x), self.conv_box(x)
        return batch_dict


class TinyPillarNet(nn.Module):
    """PointPillar-shaped detector: train -> (ret_dict, tb_dict, disp_dict), eval -> (pred_dicts, recall_dicts)."""

    def __init__(self, c):
        super().__init__()
        self.dataset = Holder()
        self.vfe, self.map_to_bev_module = TinyVFE(c), TinyScatter(c)
        self.backbone_2d, self.dense_head = TinyBackbone(c), TinyHead(2 * c)
        self.module_list = [self.vfe, self.map_to_bev_module, self.backbone_2d, self.dense_head]

    def forward(self, batch_dict):
        for module in self.module_list:
            batch_dict = module(batch_dict)
        if self.training:
            target = (batch_dict['gt_boxes'][:, :1, 7:8].mean() > 0).float()
            loss = F.binary_cross_entropy_with_logits(batch_dict['cls_preds'],
                                                      torch.full_like(batch_dict['cls_preds'], float(target)) * 0.1)
            loss = loss + batch_dict['box_preds'].pow(2).mean()
            return {'loss': loss}, {'loss_rpn': float(loss.detach())}, {}
        return [{'pred_scores': batch_dict['cls_preds'].sigmoid()}], {}


def make_batch(seed=0, bsz=2, pillars=40):
    g = torch.Generator().manual_seed(seed)
    coords = []
    for b in range(bsz):
        cells = torch.randperm(H * W, generator=g)[:pillars]
        coords.append(torch.stack([torch.full((pillars,), b), torch.zeros(pillars, dtype=torch.long),
                                   cells // W, cells % W], 1))
    v = bsz * pillars
    gt = torch.zeros(bsz, 3, 8)
    gt[:, 0] = torch.tensor([4.0, 0.0, -1.0, 3.9, 1.6, 1.5, 0.3, 1.0])
    return {'voxels': torch.randn(v, 5, 4, generator=g), 'voxel_num_points': torch.randint(1, 6, (v,), generator=g),
            'voxel_coords': torch.cat(coords).int(), 'gt_boxes': gt, 'batch_size': bsz}


ALL_LOSSES = [
    {'NAME': 'PointDistillerLoss', 'NUM_NODES': 30, 'K': 8, 'TAU': 1.0},
    {'NAME': 'FitNetLoss'},
    {'NAME': 'LogitKDLoss'},
    {'NAME': 'FGMimicLoss', 'ENLARGE': 1.0},
]


def build(losses=ALL_LOSSES, student_c=4, teacher_c=8, teacher=None, **teacher_block):
    torch.manual_seed(0)
    student = TinyPillarNet(student_c)
    if teacher is None:
        teacher = TinyPillarNet(teacher_c)
        teacher.train()
        with torch.no_grad():  # give the teacher non-trivial BN statistics, as a trained one has
            for _ in range(3):
                teacher(make_batch(seed=7))
    freeze(teacher)
    cfg = EasyDict({'TEACHER': teacher_block, 'DISTILL': {'LOSSES': losses}})
    return make_distiller(cfg, student, teacher, logging.getLogger('test_distill')), student, teacher


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_training_step_updates_student_only():
    distiller, student, teacher = build()
    distiller.train()
    assert not teacher.training and all(not m.training for m in teacher.modules())
    t_before, s_before = snapshot(teacher), snapshot(student)
    a_before = snapshot(distiller.losses)
    opt = torch.optim.SGD(distiller.parameters(), lr=0.1)
    ret, tb, _ = distiller(make_batch())
    opt.zero_grad()
    ret['loss'].backward()
    # gradients reach student and adapters only
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in distiller.losses.parameters())
    assert all(p.grad is not None for p in student.parameters())
    opt.step()
    t_after, s_after = snapshot(teacher), snapshot(student)
    assert all(torch.equal(t_before[k], t_after[k]) for k in t_before)         # incl. BN running stats
    assert not torch.equal(s_before['vfe.norm.running_mean'], s_after['vfe.norm.running_mean'])
    assert not torch.equal(s_before['vfe.linear.weight'], s_after['vfe.linear.weight'])
    a_after = snapshot(distiller.losses)
    assert any(not torch.equal(a_before[k], a_after[k]) for k in a_before)
    # the teacher never joins the module tree
    assert not any(p is q for p in distiller.parameters() for q in teacher.parameters())
    assert all(k.startswith(('student.', 'losses.')) for k in distiller.state_dict())


def fg_cells_of(box, enlarge):
    """BEV cells (W x H over ``Holder.point_cloud_range``) whose centre is inside ``box`` [x, y, z, dx, dy, dz,
    heading] grown by ``enlarge`` in length and width (the box centre lies inside, so its cell counts once)."""
    box = [float(v) for v in box]
    x0, y0, _, x1, y1, _ = Holder.point_cloud_range
    xs = x0 + (np.arange(W) + 0.5) * (x1 - x0) / W
    ys = y0 + (np.arange(H) + 0.5) * (y1 - y0) / H
    dx, dy = xs[None, :] - box[0], ys[:, None] - box[1]
    cos, sin = math.cos(box[6]), math.sin(box[6])
    along, across = dx * cos + dy * sin, -dx * sin + dy * cos
    return int(((np.abs(along) <= box[3] / 2 + enlarge) & (np.abs(across) <= box[4] / 2 + enlarge)).sum())


def test_loss_bookkeeping_sums_weighted_terms():
    distiller, student, _ = build()
    distiller.train()
    batch = make_batch()
    torch.manual_seed(1)
    ret, tb, _ = distiller(batch)
    tags = ['PointDistillerLoss', 'FitNetLoss', 'LogitKDLoss', 'FGMimicLoss']
    assert all(f'distill/{t}' in tb for t in tags)
    assert tb['distill_loss'] == pytest.approx(sum(tb[f'distill/{t}'] for t in tags), rel=1e-5)
    assert ret['loss'].item() == pytest.approx(tb['loss_rpn'] + tb['distill_loss'], rel=1e-5)
    assert tb['distill/PointDistillerLoss'] > 0
    # FG mask: cell centres inside the one GT box grown by ENLARGE 1 m, in each of the 2 samples
    cells_per_sample = fg_cells_of(make_batch()['gt_boxes'][0, 0], enlarge=1.0)
    assert cells_per_sample == 40 and tb['distill/FGMimicLoss/fg_cells'] == 2 * cells_per_sample
    distiller.eval()
    preds, _ = distiller(make_batch())                      # eval: the plain student forward
    assert preds[0]['pred_scores'].shape == (2, NUM_ANCHORS * NUM_CLASS, H, W)


def test_teacher_mode_survives_train_and_moves_with_to():
    distiller, _, teacher = build(MODE='eval', BN='eval')
    distiller.train()
    assert not teacher.training
    distiller.to(torch.float64)
    assert teacher.vfe.linear.weight.dtype == torch.float64
    assert distiller.student.vfe.linear.weight.dtype == torch.float64
    distiller.to(torch.float32)
    d2, _, t2 = build(MODE='train', BN='eval')
    d2.train()
    assert t2.training and not t2.vfe.norm.training


def test_teacher_stops_after_last_needed_feature():
    distiller, _, teacher = build(losses=[ALL_LOSSES[0]])
    distiller.train()
    runs = teacher.dense_head.runs
    distiller(make_batch())
    assert teacher.dense_head.runs == runs                 # only the vfe is needed for pillar_features
    d2, _, t2 = build(losses=[ALL_LOSSES[0]], EARLY_STOP=False)
    d2.train()
    runs = t2.dense_head.runs
    d2(make_batch())
    assert t2.dense_head.runs == runs + 1


def test_student_checkpoint_loads_into_plain_student(tmp_path):
    distiller, _, _ = build()
    distiller.train()
    opt = torch.optim.SGD(distiller.parameters(), lr=0.1)
    ret, _, _ = distiller(make_batch())
    ret['loss'].backward()
    opt.step()
    path = tmp_path / 'ckpt.pth'
    torch.save({'model_state': distiller.student_state_dict(), 'distill_state': distiller.distill_state_dict()}, path)
    plain = TinyPillarNet(4)
    plain.load_state_dict(torch.load(path, weights_only=True)['model_state'], strict=True)
    assert torch.equal(plain.vfe.linear.weight, distiller.student.vfe.linear.weight)


def test_missing_features_fail_with_available_names():
    with pytest.raises(KeyError, match=r"no module \['backbone_2d.blocks.7'\].*backbone_2d.blocks.0"):
        build(losses=[{'NAME': 'FitNetLoss', 'STUDENT_FEATURE': 'module:backbone_2d.blocks.7',
                       'STUDENT_CHANNELS': 8}])
    distiller, _, _ = build(losses=[{'NAME': 'FitNetLoss', 'TEACHER_FEATURE': 'spatial_featurs_2d',
                                     'TEACHER_CHANNELS': 16}])
    distiller.train()
    with pytest.raises(KeyError, match=r"teacher batch_dict has no key 'spatial_featurs_2d'.*'spatial_features_2d'"):
        distiller(make_batch())
    with pytest.raises(ValueError, match='cannot infer the channel count'):
        build(losses=[{'NAME': 'FitNetLoss', 'TEACHER_FEATURE': 'spatial_featurs_2d'}])


def test_teacher_checkpoint_strict_load(tmp_path, caplog):
    good = TinyPillarNet(8)
    path = tmp_path / 'teacher.pth'
    torch.save({'model_state': good.state_dict(), 'epoch': 3}, path)
    target = TinyPillarNet(8)
    with caplog.at_level(logging.INFO):
        n = load_teacher_checkpoint(target, str(path), logging.getLogger('t'))
    assert n == len(good.state_dict()) and f'teacher loaded {n}/{n}' in caplog.text
    assert torch.equal(target.vfe.linear.weight, good.vfe.linear.weight)
    wrong = tmp_path / 'wrong.pth'
    state = TinyPillarNet(16).state_dict()
    state['extra.weight'] = torch.zeros(1)
    del state['dense_head.conv_box.bias']
    torch.save({'model_state': state}, wrong)
    with pytest.raises(RuntimeError) as err:
        load_teacher_checkpoint(TinyPillarNet(8), str(wrong))
    msg = str(err.value)
    assert "missing keys (1): ['dense_head.conv_box.bias']" in msg and "extra.weight" in msg
    assert 'vfe.linear.weight (checkpoint (16, 4), model (8, 4))' in msg and 'TEACHER.CFG_FILE' in msg


def test_detector_attributes_forwarded_to_student():
    distiller, student, _ = build()
    assert distiller.dataset is student.dataset and distiller.module_list is student.module_list
    with pytest.raises(AttributeError):
        getattr(distiller, "no_such_attribute")  # noqa: B009


def test_teacher_cfg_path_resolution(tmp_path, monkeypatch):
    from pcdet.distill.teacher import check_same_data, resolve_teacher_cfg
    exp_dir = tmp_path / 'cfgs' / 'kitti_models'
    exp_dir.mkdir(parents=True)
    (exp_dir / 'teacher.yaml').write_text('MODEL: {}\n')
    cfg = EasyDict({'TEACHER': {'CFG_FILE': 'teacher.yaml'}})
    assert resolve_teacher_cfg(cfg, cfg_dir=str(exp_dir)) == str(exp_dir / 'teacher.yaml')
    cfg.TEACHER.CFG_DIR = str(exp_dir)
    assert resolve_teacher_cfg(cfg) == str(exp_dir / 'teacher.yaml')
    cfg = EasyDict({'TEACHER': {'CFG_FILE': 'teacher.yaml'}, 'ROOT_DIR': str(tmp_path / 'repo'),
                    'EXP_GROUP_PATH': 'kitti_models'})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match='tried'):
        resolve_teacher_cfg(cfg)
    data = {'POINT_CLOUD_RANGE': [0, -40, -3, 70, 40, 1],
            'DATA_PROCESSOR': [{'NAME': 'transform_points_to_voxels', 'VOXEL_SIZE': [0.16, 0.16, 4]}]}
    check_same_data({'DATA_CONFIG': data}, {'DATA_CONFIG': data})
    other = dict(data, DATA_PROCESSOR=[{'NAME': 'transform_points_to_voxels', 'VOXEL_SIZE': [0.2, 0.2, 4]}])
    with pytest.raises(NotImplementedError, match='own voxelisation'):
        check_same_data({'DATA_CONFIG': data}, {'DATA_CONFIG': other})
