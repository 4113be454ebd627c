"""Distillation on PointRCNN: one training step of the teacher, the 8x student and the 8x student with
PointDistiller / FitNet / logit KD on 2 real KITTI frames; the distilled checkpoint loads into the plain 8x config
strictly; a loss that does not apply says so.

The configs are the shipped ones (``tools/cfgs/kitti_models/pointrcnn*.yaml``) with the tiny point budget of
tests/test_pointrcnn.py (2,048 points, fewer SA centres and RoIs; the widths, hence the state_dicts, unchanged).
"""
import copy
import math
from pathlib import Path

import pytest
import torch
from easydict import EasyDict
from test_pointrcnn import TB_KEYS, TINY_OVERRIDES, kitti_batch

from pcdet.config import cfg_from_yaml_file
from pcdet.distill import build_distiller
from pcdet.models import build_network
from pcdet.utils import checkpoint_utils

CFG_DIR = Path(__file__).resolve().parent.parent / 'tools' / 'cfgs' / 'kitti_models'


@pytest.fixture(scope='module')
def tiny_cfgs(tmp_path_factory, kitti_infos_root, tiny_config_text):
    """``{name: cfg file}``: each shipped PointRCNN config with the tiny point budget; the distillation configs'
    teacher is the tiny teacher config."""
    tmp = tmp_path_factory.mktemp('prcnn_distill') / 'kitti_models'
    tmp.mkdir()
    out = {}
    for name in ('pointrcnn', 'pointrcnn_8x'):
        out[name] = tmp / f'{name}.yaml'
        out[name].write_text(tiny_config_text(CFG_DIR / f'{name}.yaml', kitti_infos_root) + TINY_OVERRIDES)
    for name in ('pointrcnn_8x_pointdistiller', 'pointrcnn_8x_fitnet', 'pointrcnn_8x_logit_kd'):
        out[name] = tmp / f'{name}.yaml'
        out[name].write_text(tiny_config_text(CFG_DIR / f'{name}.yaml', kitti_infos_root) + TINY_OVERRIDES
                             + f'TEACHER:\n  CFG_FILE: {out["pointrcnn"]}\n')
    return out


@pytest.fixture(scope='module')
def teacher_ckpt(tiny_cfgs, tmp_path_factory):
    """A seeded PointRCNN teacher after one training step, saved as a checkpoint (what --teacher_ckpt takes)."""
    cfg = cfg_from_yaml_file(str(tiny_cfgs['pointrcnn']), EasyDict())
    dataset, batch = kitti_batch(cfg, training=True)
    torch.manual_seed(0)
    teacher = build_network(cfg.MODEL, num_class=3, dataset=dataset)
    step(teacher, batch)
    path = tmp_path_factory.mktemp('prcnn_teacher') / 'checkpoint_epoch_1.pth'
    return checkpoint_utils.save_checkpoint(checkpoint_utils.checkpoint_state(teacher, None, 1, 1), path)


def step(model, batch, lr=1e-3):
    """One optimisation step in train mode on a shallow copy of ``batch``; returns (ret_dict, tb_dict, that copy
    with what the model wrote into it)."""
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    batch = copy.copy(batch)
    ret, tb_dict, _ = model(batch)
    optimizer.zero_grad()
    ret['loss'].backward()
    optimizer.step()
    return ret, tb_dict, batch


def build_student(cfg_file, teacher_ckpt=None):
    cfg = cfg_from_yaml_file(str(cfg_file), EasyDict())
    dataset, batch = kitti_batch(cfg, training=True)
    torch.manual_seed(1)
    student = build_network(cfg.MODEL, num_class=3, dataset=dataset)
    if 'DISTILL' not in cfg:
        return cfg, student, batch
    return cfg, build_distiller(cfg, student, None, teacher_ckpt=str(teacher_ckpt), cfg_dir=str(cfg_file.parent)), batch


def test_teacher_and_plain_8x_student_train_one_step(tiny_cfgs, teacher_ckpt):
    state = torch.load(teacher_ckpt, weights_only=True)['model_state']
    assert state['backbone_3d.FP_modules.0.mlp.0.weight'].shape[0] == 128
    cfg, student, batch = build_student(tiny_cfgs['pointrcnn_8x'])
    assert student.backbone_3d.num_point_features == 45
    before = {k: v.clone() for k, v in student.state_dict().items()}
    ret, tb_dict, batch = step(student, batch)
    assert set(tb_dict) == TB_KEYS and all(math.isfinite(v) for v in tb_dict.values())
    assert batch['point_features'].shape == (2 * 2048, 45)
    after = student.state_dict()
    assert not torch.equal(before['point_head.cls_layers.6.weight'], after['point_head.cls_layers.6.weight'])


def test_pointdistiller_8x_step_and_checkpoint_loads_into_the_plain_student(tiny_cfgs, teacher_ckpt, tmp_path):
    cfg, distiller, batch = build_student(tiny_cfgs['pointrcnn_8x_pointdistiller'], teacher_ckpt)
    teacher_state = torch.load(teacher_ckpt, weights_only=True)['model_state']
    for k, v in distiller.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k
    loss_module = distiller.losses['PointDistillerLoss']
    assert (loss_module.opts['STUDENT_CHANNELS'], loss_module.opts['TEACHER_CHANNELS'], loss_module.opts['WIDTH']) \
        == (45, 128, 45)
    assert loss_module.student_gcn.conv.weight.shape[:2] == (45, 90)    # 2 * 45 -> 45 (spec section 3)
    assert loss_module.teacher_gcn.conv.weight.shape[:2] == (45, 256)   # 2 * 128 -> 45
    teacher_before = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    ret, tb_dict, _ = step(distiller, batch)
    kd = tb_dict['distill/PointDistillerLoss']
    assert math.isfinite(kd) and kd > 0   # random adapters: the graph features differ
    assert ret['loss'].item() == pytest.approx(tb_dict['point_loss_cls'] + tb_dict['point_loss_box']
                                               + tb_dict['rcnn_loss'] + kd, rel=1e-4)
    # 6,000 nodes asked, 2,048 points per sample: every point is a node; K = 128 < 2,048 is not capped
    assert 'distill/PointDistillerLoss/effective_K' not in tb_dict
    for k, v in distiller.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    path = checkpoint_utils.save_checkpoint(checkpoint_utils.checkpoint_state(distiller, None, 1, 1), tmp_path / 'kd')
    plain_cfg = cfg_from_yaml_file(str(tiny_cfgs['pointrcnn_8x']), EasyDict())
    plain = build_network(plain_cfg.MODEL, num_class=3, dataset=distiller.student.dataset)
    match = checkpoint_utils.load_model_state(plain, path, strict=True)
    assert len(match.fitting) == len(plain.state_dict())
    for k, v in distiller.student.state_dict().items():
        assert torch.equal(plain.state_dict()[k], v), k


@pytest.mark.parametrize('name, tag', [('pointrcnn_8x_fitnet', 'FitNetLoss'), ('pointrcnn_8x_logit_kd', 'LogitKDLoss')])
def test_baselines_train_one_step_on_pointrcnn(tiny_cfgs, teacher_ckpt, name, tag):
    cfg, distiller, batch = build_student(tiny_cfgs[name], teacher_ckpt)
    adapters = list(distiller.losses[tag].parameters())
    before = [p.clone() for p in adapters]
    _, tb_dict, _ = step(distiller, batch)
    assert math.isfinite(tb_dict[f'distill/{tag}']) and tb_dict[f'distill/{tag}'] > 0
    assert all(not torch.equal(a, b) for a, b in zip(adapters, before))   # FitNet's adapter learns (none for KD)


def test_losses_that_do_not_apply_to_pointrcnn_say_so(tiny_cfgs, teacher_ckpt):
    cfg = cfg_from_yaml_file(str(tiny_cfgs['pointrcnn_8x_fitnet']), EasyDict())
    dataset, _ = kitti_batch(cfg, training=True)
    student = build_network(cfg.MODEL, num_class=3, dataset=dataset)
    cfg.DISTILL.LOSSES = [EasyDict(NAME='FGMimicLoss')]
    with pytest.raises(ValueError, match=r'FGMimicLoss .* PointRCNN has no BEV map .* does not apply'):
        build_distiller(cfg, student, None, teacher_ckpt=str(teacher_ckpt), cfg_dir=str(tiny_cfgs['pointrcnn'].parent))
    cfg.DISTILL.LOSSES = [EasyDict(NAME='LogitKDLoss')]   # its defaults read the anchor head
    with pytest.raises(ValueError, match=r"LogitKDLoss reads CLS_FEATURE 'module:dense_head.conv_cls', and "
                                         r"PointRCNN has no module .*point_head.cls_layers"):
        build_distiller(cfg, student, None, teacher_ckpt=str(teacher_ckpt), cfg_dir=str(tiny_cfgs['pointrcnn'].parent))


SYNTH_DIR = CFG_DIR.parent / 'kitti_synth_models'
SYNTH_RANGE = (0, -20.48, -3, 40.96, 20.48, 1)


@pytest.mark.parametrize('name, width', [('pointrcnn_8x_pointdistiller', 45), ('pointrcnn_16x_pointdistiller', 32)])
def test_synthetic_pointrcnn_distillation_configs_step(name, width, kitti_infos_root, tiny_config_text, tmp_path):
    """The synthetic set's PointRCNN distillation configs as shipped (4,096-point budget), on real KITTI frames of
    the same range, with a random teacher."""
    cfg_file = tmp_path / f'{name}.yaml'
    cfg_file.write_text(tiny_config_text(SYNTH_DIR / f'{name}.yaml', kitti_infos_root, SYNTH_RANGE)
                        + f'TEACHER:\n  CFG_FILE: {SYNTH_DIR / "pointrcnn.yaml"}\n  ALLOW_RANDOM_INIT: True\n')
    cfg = cfg_from_yaml_file(str(cfg_file), EasyDict())
    dataset, batch = kitti_batch(cfg, training=True)
    torch.manual_seed(0)
    distiller = build_distiller(cfg, build_network(cfg.MODEL, num_class=3, dataset=dataset), None,
                                cfg_dir=str(tmp_path))
    assert distiller.losses['PointDistillerLoss'].opts['WIDTH'] == width
    assert distiller.student.backbone_3d.num_point_features == width
    ret, tb_dict, _ = step(distiller, batch)
    assert math.isfinite(ret['loss'].item()) and math.isfinite(tb_dict['distill/PointDistillerLoss'])
