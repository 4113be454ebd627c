"""Models: OpenPCDet state_dict compatibility, checkpoint loading, anchors / targets, coder, training step.

The detectors are built from the shipped YAML configs with ``GeometryStandIn``: a plain attribute holder with
the fields ``build_network`` reads from a dataset (grid_size, point_cloud_range, voxel_size, class_names,
point_feature_encoder.num_point_features, depth_downsample_factor); no dataset behaviour is involved.
"""
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from easydict import EasyDict

from pcdet.config import cfg_from_yaml_file
from pcdet.datasets.dataset_meta import DatasetMeta
from pcdet.models import build_network, load_data_to_gpu, model_fn_decorator
from pcdet.utils.checkpoint_utils import CheckpointMismatchError
from pcdet.utils.registry import RegistryKeyError, lookup, make_registry
from pcdet.utils.box_coder_utils import ResidualCoder

REPO = Path(__file__).resolve().parent.parent
CFGS = REPO / 'tools' / 'cfgs'
KITTI_PP_RANGE = [0, -39.68, -3, 69.12, 39.68, 1]
KITTI_RANGE = [0, -40, -3, 70.4, 40, 1]
# small test scenes: 10.24 m x 10.24 m in front of the sensor
SMALL_RANGE = [0, -5.12, -3, 10.24, 5.12, 1]


def load_cfg(rel_path):
    """Config from tools/cfgs."""
    return cfg_from_yaml_file(str(CFGS / rel_path), EasyDict())


def build(rel_cfg, point_cloud_range, voxel_size, seed=0):
    torch.manual_seed(seed)
    cfg = load_cfg(rel_cfg)
    dataset = DatasetMeta(point_cloud_range, voxel_size, cfg.CLASS_NAMES)
    return build_network(cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=dataset), cfg


def make_scene(rng, boxes, num_background=300, points_per_box=150):
    """Points (N, 4) on the surfaces of ``boxes`` (M, 7) plus a flat ground, reflectance random."""
    pts = []
    for box in boxes:
        x, y, z, dx, dy, dz, h = box
        local = rng.uniform(-0.5, 0.5, size=(points_per_box, 3)) * [dx, dy, dz]
        side = rng.integers(0, 2, size=points_per_box)
        local[side == 0, 0] = np.sign(local[side == 0, 0]) * dx / 2  # front / back faces
        local[side == 1, 1] = np.sign(local[side == 1, 1]) * dy / 2  # left / right faces
        c, s = np.cos(h), np.sin(h)
        world = np.stack([local[:, 0] * c - local[:, 1] * s + x, local[:, 0] * s + local[:, 1] * c + y,
                          local[:, 2] + z], axis=1)
        pts.append(world)
    ground = np.stack([rng.uniform(0.1, 10.1, num_background), rng.uniform(-5, 5, num_background),
                       np.full(num_background, -1.75)], axis=1)
    pts.append(ground)
    xyz = np.concatenate(pts).astype(np.float32)
    return np.concatenate([xyz, rng.uniform(0, 1, size=(len(xyz), 1)).astype(np.float32)], axis=1)


def voxelize_batch(scenes, voxel_size, max_points, point_cloud_range, gt_boxes):
    """Collate scenes like the dataloader: voxels (V, P, 4), voxel_coords (V, 4) [b, z, y, x], gt_boxes (B, M, 8)."""
    from spconv.pytorch.utils import PointToVoxel
    gen = PointToVoxel(vsize_xyz=list(voxel_size), coors_range_xyz=list(point_cloud_range), num_point_features=4,
                       max_num_voxels=20000, max_num_points_per_voxel=max_points)
    voxels, coords, num_points = [], [], []
    for b, pts in enumerate(scenes):
        v, c, n = gen(torch.from_numpy(pts))
        voxels.append(v)
        coords.append(torch.cat([torch.full((len(c), 1), b, dtype=c.dtype), c], dim=1))
        num_points.append(n)
    max_gt = max(len(g) for g in gt_boxes)
    gt = np.zeros((len(scenes), max_gt, 8), dtype=np.float32)
    for b, g in enumerate(gt_boxes):
        gt[b, :len(g)] = g
    batch = {'voxels': torch.cat(voxels).numpy(), 'voxel_coords': torch.cat(coords).numpy(),
             'voxel_num_points': torch.cat(num_points).numpy(), 'gt_boxes': gt, 'batch_size': len(scenes),
             'frame_id': np.array([f'{b:06d}' for b in range(len(scenes))])}
    return load_data_to_gpu(batch, device='cpu')


def small_batch(voxel_size, max_points):
    rng = np.random.default_rng(0)
    gts = [np.array([[5.0, 1.0, -0.97, 3.9, 1.6, 1.56, 0.3, 1], [7.5, -3.0, -0.9, 0.8, 0.6, 1.73, 0.0, 2]]),
           np.array([[3.0, -2.0, -0.97, 4.1, 1.7, 1.5, -1.2, 1]])]
    scenes = [make_scene(rng, g[:, :7]) for g in gts]
    return voxelize_batch(scenes, voxel_size, max_points, SMALL_RANGE, gts)


def clone_batch(batch):
    return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}


# ---------------------------------------------------------------- state_dict compatibility with OpenPCDet v0.6
@pytest.mark.parametrize('name,pcr,voxel', [('pointpillar', KITTI_PP_RANGE, [0.16, 0.16, 4]),
                                            ('second', KITTI_RANGE, [0.05, 0.05, 0.1])])
def test_state_dict_matches_openpcdet(name, pcr, voxel, openpcdet_state_dicts):
    ref = openpcdet_state_dicts
    model, _ = build(f'kitti_models/{name}.yaml', pcr, voxel)
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert got == ref[name]  # names, shapes and order
    assert sum(p.numel() for p in model.parameters()) == ref['_meta']['param_counts'][name]
    assert list(model.dataset.grid_size) == ref['_meta']['grid_size'][name]


@pytest.mark.parametrize('student,ratio_range', [('pointpillar_4x', (3, 5)), ('pointpillar_16x', (12, 20)),
                                                  ('second_4x', (3, 5)), ('second_16x', (12, 20))])
def test_students_are_compressed(student, ratio_range):
    teacher_name = student.split('_')[0]
    pcr, voxel = (KITTI_PP_RANGE, [0.16, 0.16, 4]) if teacher_name == 'pointpillar' else (KITTI_RANGE,
                                                                                       [0.05, 0.05, 0.1])
    teacher, _ = build(f'kitti_models/{teacher_name}.yaml', pcr, voxel)
    model, _ = build(f'kitti_models/{student}.yaml', pcr, voxel)
    ratio = sum(p.numel() for p in teacher.parameters()) / sum(p.numel() for p in model.parameters())
    assert ratio_range[0] < ratio < ratio_range[1]
    # same depth: every teacher key exists in the student
    assert list(teacher.state_dict()) == list(model.state_dict())


# ---------------------------------------------------------------- checkpoints
def _list_logger(name):
    records = []
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger.handlers = [handler]
    logger.propagate = False
    return logger, records


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    model, _ = build('kitti_models/pointpillar.yaml', KITTI_PP_RANGE, [0.16, 0.16, 4], seed=1)
    model.update_global_step()
    state = model.state_dict()
    torch.save({'model_state': state, 'epoch': 3, 'it': 42, 'version': 'pcdet+test'}, tmp_path / 'ok.pth')
    other, _ = build('kitti_models/pointpillar.yaml', KITTI_PP_RANGE, [0.16, 0.16, 4], seed=2)
    key = 'vfe.pfn_layers.0.linear.weight'
    assert not torch.equal(other.state_dict()[key], state[key])
    logger, records = _list_logger('test_models_roundtrip')
    other.load_params_from_file(str(tmp_path / 'ok.pth'), logger=logger, to_cpu=True, strict=True)
    for key, val in other.state_dict().items():
        assert torch.equal(val, state[key]), key
    assert records[-1] == f'==> Done (loaded {len(state)}/{len(state)})'

    bad = dict(state)
    del bad['dense_head.conv_dir_cls.bias']
    bad['dense_head.conv_cls.weight'] = torch.zeros(3, 384, 1, 1)
    bad['extra.weight'] = torch.zeros(1)
    torch.save({'model_state': bad}, tmp_path / 'bad.pth')
    with pytest.raises(CheckpointMismatchError) as err:
        other.load_params_from_file(str(tmp_path / 'bad.pth'), logger=logger, to_cpu=True, strict=True)
    msg = str(err.value)
    assert 'dense_head.conv_dir_cls.bias' in msg and 'dense_head.conv_cls.weight' in msg and 'extra.weight' in msg
    records.clear()
    other.load_params_from_file(str(tmp_path / 'bad.pth'), logger=logger, to_cpu=True, strict=False)
    assert any('Not updated weight dense_head.conv_dir_cls.bias' in r for r in records)
    assert any('Not updated weight dense_head.conv_cls.weight' in r for r in records)
    assert records[-1] == f'==> Done (loaded {len(state) - 2}/{len(state)})'

    # resume: strict weights + optimizer; a legacy file (numpy scalars) needs the full unpickler fallback
    optimizer = torch.optim.Adam(other.parameters(), lr=1e-3)
    opt_state = optimizer.state_dict()
    opt_state['param_groups'][0]['lr'] = np.float64(0.0025)
    torch.save({'model_state': state, 'optimizer_state': opt_state, 'epoch': 3, 'it': 42}, tmp_path / 'legacy.pth')
    it, epoch = other.load_params_with_optimizer(str(tmp_path / 'legacy.pth'), to_cpu=True, optimizer=optimizer,
                                                 logger=logger)
    assert (it, epoch) == (42, 3)
    assert optimizer.param_groups[0]['lr'] == pytest.approx(0.0025)
    with pytest.raises(CheckpointMismatchError):
        other.load_params_with_optimizer(str(tmp_path / 'bad.pth'), to_cpu=True, optimizer=None, logger=logger)


def test_spconv_1x_weight_layout_is_converted(tmp_path):
    model, _ = build('kitti_models/second.yaml', KITTI_RANGE, [0.05, 0.05, 0.1], seed=3)
    state = model.state_dict()
    legacy = {}
    for key, val in state.items():
        # this toolbox: (Cout, kz, ky, kx, Cin); spconv 1.x stored (kz, ky, kx, Cin, Cout)
        legacy[key] = val.permute(1, 2, 3, 4, 0).contiguous() if val.dim() == 5 else val
    assert legacy['backbone_3d.conv1.0.0.weight'].shape != state['backbone_3d.conv1.0.0.weight'].shape
    torch.save({'model_state': legacy}, tmp_path / 'spconv1.pth')
    other, _ = build('kitti_models/second.yaml', KITTI_RANGE, [0.05, 0.05, 0.1], seed=4)
    logger, _ = _list_logger('test_models_spconv')
    other.load_params_from_file(str(tmp_path / 'spconv1.pth'), logger=logger, to_cpu=True, strict=True)
    for key, val in other.state_dict().items():
        assert torch.equal(val, state[key]), key


# ---------------------------------------------------------------- anchors, targets, coder
def test_anchors_and_targets_on_hand_made_scene():
    model, _ = build('kitti_models/pointpillar.yaml', SMALL_RANGE, [0.16, 0.16, 4])
    head = model.dense_head
    car_anchors = head.anchors[0]  # (1, ny, nx, 1 size, 2 rotations, 7)
    assert car_anchors.shape == (1, 32, 32, 1, 2, 7)
    # align_center False: first / last anchor centres on the range borders; z = bottom + dz / 2
    assert car_anchors[0, 0, 0, 0, 0, :2].tolist() == pytest.approx([0.0, -5.12])
    assert car_anchors[0, -1, -1, 0, 0, :2].tolist() == pytest.approx([10.24, 5.12])
    assert car_anchors[0, 0, 0, 0, 0, 2].item() == pytest.approx(-1.78 + 1.56 / 2)
    iy, ix = 10, 12
    gt_box = car_anchors[0, iy, ix, 0, 1].clone()  # exactly the heading-1.57 Car anchor at (ix, iy)
    gt = torch.cat([gt_box, torch.tensor([1.0])]).view(1, 1, 8)
    gt = torch.cat([gt, torch.zeros(1, 2, 8)], dim=1)  # zero padding rows are ignored
    targets = head.assign_targets(gt)
    labels, reg = targets['box_cls_labels'][0], targets['box_reg_targets'][0]
    apl = head.num_anchors_per_location  # 6: Car r0, Car r1, Ped r0, Ped r1, Cyc r0, Cyc r1
    flat = (iy * 32 + ix) * apl + 1
    assert labels.shape == (32 * 32 * apl,)
    assert labels[flat].item() == 1
    assert torch.allclose(reg[flat], torch.zeros(7), atol=1e-6)
    assert targets['reg_weights'][0][flat].item() == 1.0
    anchors_flat = torch.cat(head.anchors, dim=-3).view(-1, 7)
    assert torch.equal(anchors_flat[flat], gt_box)
    far = (anchors_flat[:, :2] - gt_box[:2]).norm(dim=1) > 5.0
    assert far.any() and (labels[far] == 0).all()
    # pedestrian / cyclist anchors never match a Car box
    ped_cyc = torch.arange(len(labels)) % apl >= 2
    assert (labels[ped_cyc] <= 0).all()
    # positives decode back to the GT box
    pos = labels > 0
    decoded = head.box_coder.decode_torch(reg[pos], anchors_flat[pos])
    assert torch.allclose(decoded, gt_box.expand_as(decoded), atol=1e-4)


def test_residual_coder_round_trip():
    gen = torch.Generator().manual_seed(0)
    anchors = torch.cat([torch.rand(50, 3, generator=gen) * 20, torch.rand(50, 3, generator=gen) * 3 + 0.5,
                         torch.rand(50, 1, generator=gen) * 6 - 3], dim=1)
    boxes = anchors + torch.randn(50, 7, generator=gen) * 0.3
    boxes[:, 3:6] = boxes[:, 3:6].abs() + 0.1
    for sincos in (False, True):
        coder = ResidualCoder(encode_angle_by_sincos=sincos)
        codes = coder.encode_torch(boxes, anchors)
        assert codes.shape == (50, 8 if sincos else 7)
        decoded = coder.decode_torch(codes, anchors)
        if sincos:  # heading comes back wrapped to (-pi, pi]
            diff = torch.atan2(torch.sin(decoded[:, 6] - boxes[:, 6]), torch.cos(decoded[:, 6] - boxes[:, 6]))
            assert diff.abs().max() < 1e-5
            decoded, boxes = decoded[:, :6], boxes[:, :6]
        assert torch.allclose(decoded, boxes, atol=1e-5)


# ---------------------------------------------------------------- training / inference
@pytest.mark.parametrize('cfg_name,voxel,max_points', [('kitti_models/pointpillar.yaml', [0.16, 0.16, 4], 32),
                                                       ('kitti_models/second.yaml', [0.08, 0.08, 0.1], 5)])
def test_training_step_reduces_loss_and_eval_runs(cfg_name, voxel, max_points):
    model, _ = build(cfg_name, SMALL_RANGE, voxel, seed=0)
    batch = small_batch(voxel, max_points)
    model.train()
    # small step: one Adam step moves every weight by ~lr, and 1e-3 can overshoot on a 2-scene batch
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss0, tb_dict, _ = model_fn_decorator()(model, clone_batch(batch))  # the training loop's entry point
    assert set(tb_dict) == {'loss_rpn', 'rpn_loss_cls', 'rpn_loss_loc', 'rpn_loss_dir', 'rpn_loss'}
    assert tb_dict['rpn_loss'] == pytest.approx(tb_dict['rpn_loss_cls'] + tb_dict['rpn_loss_loc']
                                                + tb_dict['rpn_loss_dir'], rel=1e-5)
    optimizer.zero_grad()
    loss0.backward()
    optimizer.step()
    loss1 = model(clone_batch(batch))[0]['loss']
    assert loss1.item() < loss0.item()
    assert model.global_step.item() == 1

    model.eval()
    with torch.no_grad():
        pred_dicts, recall = model(clone_batch(batch))
    assert len(pred_dicts) == 2 and recall['gt'] == 3
    for pred in pred_dicts:
        k = pred['pred_boxes'].shape[0]
        assert pred['pred_boxes'].shape == (k, 7) and pred['pred_scores'].shape == (k,)
        labels = pred['pred_labels']
        assert labels.dtype == torch.long and ((labels >= 1) & (labels <= 3)).all()
        assert (pred['pred_scores'] >= 0.1).all()


def test_pointpillars_never_imports_spconv():
    code = textwrap.dedent(f'''
        import sys
        import numpy as np, torch
        from easydict import EasyDict
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_models import load_cfg
        from pcdet.datasets.dataset_meta import DatasetMeta
        from pcdet.models import build_network
        cfg = load_cfg('kitti_models/pointpillar.yaml')
        model = build_network(cfg.MODEL, 3, DatasetMeta({SMALL_RANGE}, [0.16, 0.16, 4]))
        model.eval()
        # three hand-made pillars in sample 0
        voxels = torch.zeros(3, 32, 4)
        voxels[:, :2] = torch.tensor([[5.0, 1.0, -1.0, 0.5], [5.1, 1.1, -0.5, 0.3]])
        batch = dict(voxels=voxels, voxel_num_points=torch.tensor([2, 2, 2]),
                     voxel_coords=torch.tensor([[0, 0, 38, 31], [0, 0, 38, 32], [0, 0, 39, 31]]), batch_size=1)
        with torch.no_grad():
            preds, _ = model(batch)
        assert 'spconv' not in sys.modules, [m for m in sys.modules if 'spconv' in m]
        print('ok', len(preds))
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok 1'


def test_registries_reject_unknown_and_duplicate_names():
    from pcdet.models.backbones_3d import vfe
    with pytest.raises(KeyError, match=r"unknown VFE 'PilarVFE' \(config key MODEL.VFE.NAME\); valid names: "
                                       r"\['MeanVFE', 'PillarVFE', 'VFETemplate'\]"):
        lookup(vfe.__all__, 'PilarVFE', 'VFE', 'MODEL.VFE.NAME')
    with pytest.raises(RegistryKeyError, match='duplicate name'):
        make_registry([('A', int), ('A', float)])
    cfg = load_cfg('kitti_models/pointpillar.yaml')
    cfg.MODEL.BACKBONE_2D.NAME = 'NoSuchBackbone'
    with pytest.raises(KeyError, match='MODEL.BACKBONE_2D.NAME'):
        build_network(cfg.MODEL, 3, DatasetMeta(SMALL_RANGE, [0.16, 0.16, 4]))


def test_dataset_meta_from_cfg_matches_the_dataset_geometry():
    cfg = load_cfg('kitti_synth_models/pointpillar.yaml')
    meta = DatasetMeta.from_cfg(cfg, training=False)
    np.testing.assert_array_equal(meta.grid_size, [128, 128, 1])       # 40.96 m / 0.32 m pillars
    assert meta.max_voxels == 8000 and meta.point_feature_encoder.num_point_features == 4
    cfg.DATA_CONFIG.DATA_PROCESSOR = [p for p in cfg.DATA_CONFIG.DATA_PROCESSOR
                                      if p.NAME != 'transform_points_to_voxels']
    with pytest.raises(KeyError, match='DATA_CONFIG.DATA_PROCESSOR has no transform_points_to_voxels'):
        DatasetMeta.from_cfg(cfg)
