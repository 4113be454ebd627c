"""PointRCNN: OpenPCDet state_dict, coder, point-head targets, proposal layer and RoI sampling on constructed boxes,
training / eval forward on two real KITTI frames, and tools/train.py + tools/test.py on a tiny config.

The tiny config is ``tools/cfgs/kitti_models/pointrcnn.yaml`` with fewer points and RoIs (same layer widths, so
the same state_dict): 2,048 points per frame, SA centres 512/128/32/16, 64 pooled points and 32 sampled RoIs.
"""
import json
import math
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from easydict import EasyDict

from pcdet.config import cfg_from_yaml_file
from pcdet.datasets.kitti.kitti_dataset import KittiDataset
from pcdet.models import build_network, load_data_to_gpu
from pcdet.models.dense_heads.point_head_box import PointHeadBox
from pcdet.models.roi_heads.roi_head_template import RoIHeadTemplate
from pcdet.utils.box_coder_utils import PointResidualCoder

REPO = Path(__file__).resolve().parent.parent
PRCNN_CFG = REPO / 'tools' / 'cfgs' / 'kitti_models' / 'pointrcnn.yaml'
OUTPUT_GROUP = REPO / 'output' / 'kitti_models' / 'pointrcnn_tiny'
MEAN_SIZE = [[3.9, 1.6, 1.56], [0.8, 0.6, 1.73], [1.76, 0.6, 1.73]]
TINY_OVERRIDES = '''\
  DATA_PROCESSOR:
    - NAME: mask_points_and_boxes_outside_range
      REMOVE_OUTSIDE_BOXES: True
    - NAME: sample_points
      NUM_POINTS: {'train': 2048, 'test': 2048}
    - NAME: shuffle_points
      SHUFFLE_ENABLED: {'train': True, 'test': False}
MODEL:
  BACKBONE_3D:
    SA_CONFIG:
      NPOINTS: [512, 128, 32, 16]
  ROI_HEAD:
    ROI_POINT_POOL:
      NUM_SAMPLED_POINTS: 64
    SA_CONFIG:
      NPOINTS: [32, 8, -1]
    NMS_CONFIG:
      TRAIN:
        NMS_POST_MAXSIZE: 64
      TEST:
        NMS_POST_MAXSIZE: 32
    TARGET_CONFIG:
      ROI_PER_IMAGE: 32
'''
TB_KEYS = {'point_loss_cls', 'point_pos_num', 'point_loss_box', 'rcnn_loss_cls', 'rcnn_loss_reg',
           'rcnn_loss_corner', 'rcnn_loss'}


@pytest.fixture(scope='module')
def prcnn_cfg():
    return cfg_from_yaml_file(str(PRCNN_CFG), EasyDict())


def lidar_points(box, local):
    """Points given in the frame of ``box`` (7,) [x, y, z, dx, dy, dz, heading] -> LiDAR (N, 3)."""
    c, s = math.cos(box[6]), math.sin(box[6])
    local = np.asarray(local, dtype=np.float32)
    return np.stack([local[:, 0] * c - local[:, 1] * s + box[0], local[:, 0] * s + local[:, 1] * c + box[1],
                     local[:, 2] + box[2]], axis=1)


# ---------------------------------------------------------------------------------------------- state_dict
def test_state_dict_matches_openpcdet(prcnn_cfg, openpcdet_state_dicts):
    """Names, shapes and order of the real pointrcnn.yaml model equal OpenPCDet v0.6's (checkpoints load strict)."""
    from pcdet.datasets.dataset_meta import DatasetMeta
    torch.manual_seed(0)
    dataset = DatasetMeta(prcnn_cfg.DATA_CONFIG.POINT_CLOUD_RANGE, [0.05, 0.05, 0.1], prcnn_cfg.CLASS_NAMES)
    model = build_network(prcnn_cfg.MODEL, num_class=3, dataset=dataset)
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert got == openpcdet_state_dicts['pointrcnn']
    assert sum(p.numel() for p in model.parameters()) == openpcdet_state_dicts['_meta']['param_counts']['pointrcnn']
    assert [type(m).__name__ for m in model.module_list] == ['PointNet2MSG', 'PointHeadBox', 'PointRCNNHead']
    model.load_state_dict({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, strict=True)


def test_importing_the_detectors_loads_no_pointnet2_op():
    code = textwrap.dedent('''
        import sys
        import pcdet.models.detectors, pcdet.models.roi_heads, pcdet.models.backbones_3d
        bad = [m for m in sys.modules if m.startswith(('pcdet.ops.pointnet2', 'pcdet.ops.roipoint_pool3d', 'spconv'))]
        assert not bad, bad
        print('ok')
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr


# ---------------------------------------------------------------------------------------------- coder
def test_point_residual_coder_round_trip_and_values():
    g = torch.Generator().manual_seed(0)
    n = 64
    boxes = torch.cat([torch.rand(n, 3, generator=g) * 20, 0.5 + torch.rand(n, 3, generator=g) * 4,
                       (torch.rand(n, 1, generator=g) * 2 - 1) * math.pi * 0.999, torch.rand(n, 1, generator=g)], 1)
    points = boxes[:, 0:3] + torch.randn(n, 3, generator=g) * 0.5
    classes = torch.randint(1, 4, (n,), generator=g)
    for coder in (PointResidualCoder(mean_size=MEAN_SIZE), PointResidualCoder(code_size=8, use_mean_size=False)):
        codes = coder.encode_torch(boxes, points, classes)
        assert codes.shape == (n, 9)  # 8 + one extra column, copied
        assert torch.allclose(codes[:, 8], boxes[:, 7])
        decoded = coder.decode_torch(codes, points, classes)
        assert torch.allclose(decoded, boxes, atol=1e-5)
    # a box of its class's mean size at the point itself, heading pi/2: only cos/sin are non-trivial
    coder = PointResidualCoder(mean_size=MEAN_SIZE)
    box = torch.tensor([[1.0, 2.0, -1.0, 0.8, 0.6, 1.73, math.pi / 2]])
    codes = coder.encode_torch(box, box[:, 0:3], torch.tensor([2]))
    assert torch.allclose(codes, torch.tensor([[0.0, 0, 0, 0, 0, 0, 0, 1]]), atol=1e-6)
    # x offset is divided by the mean-size diagonal, z by the mean height
    codes = coder.encode_torch(box + torch.tensor([[1.0, 0, 1.73, 0, 0, 0, 0]]), box[:, 0:3], torch.tensor([2]))
    assert codes[0, 0].item() == pytest.approx(1.0, rel=1e-5) and codes[0, 2].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match='classes must be in'):
        coder.encode_torch(box, box[:, 0:3], torch.tensor([0]))
    with pytest.raises(ValueError, match='mean_size'):
        PointResidualCoder(use_mean_size=True)


# ---------------------------------------------------------------------------------------------- point head
def test_point_head_targets_foreground_ignored_and_background(prcnn_cfg):
    """Inside a GT box: its class; inside the box enlarged by GT_EXTRA_WIDTH (0.2 m: 0.1 m per side) but not the
    box: ignored (-1); farther out: background. Foreground box targets decode back to the GT box."""
    torch.manual_seed(0)
    head = PointHeadBox(num_class=3, input_channels=128, model_cfg=prcnn_cfg.MODEL.POINT_HEAD,
                        predict_boxes_when_training=True)
    car = [10.0, 2.0, -1.0, 3.9, 1.6, 1.56, 0.5]
    ped = [15.0, -3.0, -0.8, 0.8, 0.6, 1.73, -2.0]
    cyc = [8.0, 0.0, -0.9, 1.76, 0.6, 1.73, 1.0]
    gt = torch.zeros(2, 2, 8)
    gt[0, 0], gt[0, 1], gt[1, 0] = torch.tensor(car + [1]), torch.tensor(ped + [2]), torch.tensor(cyc + [3])

    def probes(box):  # inside, band in x, band above (z), outside in y, outside above
        dx, dy, dz = box[3:6]
        return lidar_points(box, [[0.3 * dx, -0.3 * dy, 0.2 * dz], [dx / 2 + 0.05, 0, 0], [0, 0, dz / 2 + 0.05],
                                  [0, dy / 2 + 0.3, 0], [0, 0, dz / 2 + 0.3]])
    expected = {0: [1, -1, -1, 0, 0] + [2, -1, -1, 0, 0], 1: [3, -1, -1, 0, 0]}
    pts = [(0, probes(car)), (0, probes(ped)), (1, probes(cyc))]
    coords = torch.from_numpy(np.concatenate([np.pad(p, ((0, 0), (1, 0)), constant_values=b) for b, p in pts]))
    targets = head.assign_targets({'point_coords': coords, 'gt_boxes': gt})
    labels = targets['point_cls_labels']
    assert labels.dtype == torch.long
    assert labels.tolist() == expected[0] + expected[1]
    fg = labels > 0
    decoded = head.box_coder.decode_torch(targets['point_box_labels'][fg], coords[fg, 1:4], labels[fg])
    assert torch.allclose(decoded, torch.tensor([car, ped, cyc]), atol=1e-5)
    assert (targets['point_box_labels'][~fg] == 0).all()

    # losses: point_pos_num counts the foreground points; ignored points carry no classification weight
    head.train()
    batch = {'point_coords': coords, 'gt_boxes': gt, 'point_features': torch.randn(len(coords), 128),
             'batch_size': 2}
    batch = head(batch)
    loss, tb = head.get_loss()
    assert set(tb) == {'point_loss_cls', 'point_pos_num', 'point_loss_box'} and tb['point_pos_num'] == 3
    assert torch.isfinite(loss) and loss.item() == pytest.approx(tb['point_loss_cls'] + tb['point_loss_box'],
                                                                 rel=1e-5)
    assert batch['batch_cls_preds'].shape == (15, 3) and batch['batch_box_preds'].shape == (15, 7)
    assert batch['batch_index'].tolist() == coords[:, 0].tolist() and batch['point_cls_scores'].shape == (15,)


# ---------------------------------------------------------------------------------------------- RoI head parts
def roi_template(prcnn_cfg, **target_overrides):
    cfg = EasyDict(prcnn_cfg.MODEL.ROI_HEAD)
    cfg.TARGET_CONFIG = EasyDict({**cfg.TARGET_CONFIG, **target_overrides})
    return RoIHeadTemplate(num_class=1, model_cfg=cfg)


def test_proposal_layer_nms_per_sample(prcnn_cfg):
    """Class-agnostic rotated NMS on the stacked point-head boxes, per sample; rois zero-padded, labels 1-based."""
    head = roi_template(prcnn_cfg)
    nms_cfg = EasyDict(prcnn_cfg.MODEL.ROI_HEAD.NMS_CONFIG.TEST)
    nms_cfg.NMS_POST_MAXSIZE = 4
    boxes = torch.tensor([[10.0, 0, -1, 3.9, 1.6, 1.5, 0.0], [10.02, 0, -1, 3.9, 1.6, 1.5, 0.0],  # IoU 0.99
                          [20.0, 5, -1, 0.8, 0.6, 1.7, 1.0], [12.0, 3, -1, 1.8, 0.6, 1.7, 0.3]])
    cls = torch.tensor([[2.0, 0, 0], [3.0, 0, 0], [0, 1.5, 0], [0, 0, 0.5]])
    batch = {'batch_size': 2, 'batch_box_preds': boxes, 'batch_cls_preds': cls,
             'batch_index': torch.tensor([0.0, 0, 0, 1])}
    head.proposal_layer(batch, nms_config=nms_cfg)
    assert 'batch_index' not in batch and batch['has_class_labels'] is True
    assert batch['rois'].shape == (2, 4, 7)
    assert torch.equal(batch['rois'][0, :2], boxes[[1, 2]]) and (batch['rois'][0, 2:] == 0).all()
    assert torch.equal(batch['rois'][1, :1], boxes[[3]]) and (batch['rois'][1, 1:] == 0).all()
    assert batch['roi_scores'][0, :2].tolist() == [3.0, 1.5] and batch['roi_labels'].tolist() == [[1, 2, 1, 1],
                                                                                                   [3, 1, 1, 1]]


def shifted_rois(gt_box, shifts, label=1):
    """RoIs equal to ``gt_box`` moved by ``d`` along its length: 3D IoU (dx - d) / (dx + d)."""
    rois = torch.tensor([gt_box] * len(shifts), dtype=torch.float32)
    rois[:, 0] += torch.tensor(shifts, dtype=torch.float32)
    return rois, torch.full((len(shifts),), label, dtype=torch.long)


def test_proposal_target_layer_sampling_and_labels(prcnn_cfg):
    """ROI_PER_IMAGE 128 per sample, FG_RATIO 0.5; fg IoU >= 0.55, hard bg [0.1, 0.55), easy bg < 0.1 or another
    class; reg mask IoU > 0.55; cls label 1 above 0.6, ignored in (0.45, 0.6), else 0."""
    torch.manual_seed(0)
    head = roi_template(prcnn_cfg)
    gt_box = [10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0]
    fg_shifts = [0.0, 0.2, 0.4, 0.6, 0.8]                 # IoU 1 .. 0.667
    hard_shifts = [1.2, 1.6, 3.0]                         # IoU 0.538, 0.429, 0.143
    easy_shifts = [5.0, 8.0]                              # IoU 0
    rois, labels = shifted_rois(gt_box, fg_shifts + hard_shifts + easy_shifts)
    other_rois, other_labels = shifted_rois(gt_box, [0.0], label=2)  # same place, Pedestrian: IoU 0 (by class)
    rois, labels = torch.cat([rois, other_rois]), torch.cat([labels, other_labels])
    gt = torch.zeros(1, 3, 8)
    gt[0, 0] = torch.tensor(gt_box + [1])
    batch = {'batch_size': 1, 'rois': rois[None], 'roi_scores': torch.arange(len(rois)).float()[None],
             'roi_labels': labels[None], 'gt_boxes': gt}
    out = head.proposal_target_layer(batch)
    ious = out['gt_iou_of_rois'][0]
    assert out['rois'].shape == (1, 128, 7) and out['gt_of_rois'].shape == (1, 128, 8)
    fg = ious >= 0.55
    assert int(fg.sum()) == len(fg_shifts)                    # all fg, each once (fewer than 64)
    assert sorted(out['roi_scores'][0][fg].tolist()) == list(range(len(fg_shifts)))
    assert int(((ious >= 0.1) & (ious < 0.55)).sum()) == len(hard_shifts)  # min(int(123 * 0.8), 3 hard RoIs)
    assert int((ious < 0.1).sum()) == 128 - len(fg_shifts) - len(hard_shifts)
    expected_iou = {s: (4.0 - s) / (4.0 + s) for s in fg_shifts + hard_shifts}
    for roi, label, iou in zip(out['rois'][0], out['roi_labels'][0], ious):
        expected = expected_iou.get(round(roi[0].item() - 10.0, 4), 0.0) if label == 1 else 0.0
        assert iou.item() == pytest.approx(expected, abs=1e-5)
    assert torch.equal(out['reg_valid_mask'][0], (ious > 0.55).long())
    expected_cls = torch.where(ious > 0.6, 1, torch.where(ious > 0.45, -1, 0))
    assert torch.equal(out['rcnn_cls_labels'][0], expected_cls)
    assert (out['gt_of_rois'][0] == gt[0, 0]).all()          # one GT: every RoI gets it
    # the Pedestrian RoI on the Car is background (IoU 0 by class), so it is only drawn as easy background
    assert (out['roi_labels'][0][ious > 0] == 1).all()

    many_rois, many_labels = shifted_rois(gt_box, list(np.linspace(0, 0.8, 100)) + [5.0] * 10)
    batch.update(rois=many_rois[None], roi_labels=many_labels[None], roi_scores=torch.arange(110.0)[None])
    out = head.proposal_target_layer(batch)
    fg_scores = out['roi_scores'][0][out['gt_iou_of_rois'][0] >= 0.55]
    assert len(fg_scores) == 64 and len(set(fg_scores.tolist())) == 64  # round(0.5 * 128), without replacement

    only_fg, only_fg_labels = shifted_rois(gt_box, [0.0, 0.1])
    batch.update(rois=only_fg[None], roi_labels=only_fg_labels[None], roi_scores=torch.zeros(1, 2))
    out = head.proposal_target_layer(batch)
    assert (out['gt_iou_of_rois'][0] >= 0.55).all() and out['rois'].shape == (1, 128, 7)


def test_roi_targets_in_roi_frame_decode_back_and_zero_loss(prcnn_cfg):
    """GT boxes in the RoI frame (heading folded into [-pi/2, pi/2]); perfect residuals decode to the GT box (up to
    a pi turn) and give zero regression and corner loss."""
    torch.manual_seed(0)
    head = roi_template(prcnn_cfg, ROI_PER_IMAGE=8)
    gt_box = [10.0, -2.0, -1.0, 4.0, 2.0, 1.5, 0.7]
    rois = torch.tensor([gt_box] * 4)
    rois[:, 0] += torch.tensor([0.0, 0.3, -0.2, 0.1])
    rois[:, 6] += torch.tensor([0.0, 0.2, math.pi + 0.1, -math.pi - 0.3])  # two point backwards
    gt = torch.tensor([[gt_box + [1]]])
    batch = {'batch_size': 1, 'rois': rois[None], 'roi_scores': torch.zeros(1, 4),
             'roi_labels': torch.ones(1, 4, dtype=torch.long), 'gt_boxes': gt}
    targets = head.assign_targets(batch)
    local = targets['gt_of_rois'][0]
    assert (local[:, 6].abs() <= math.pi / 2 + 1e-6).all()
    sampled = targets['rois'][0]
    anchors = torch.cat([torch.zeros(8, 3), sampled[:, 3:6], torch.zeros(8, 1)], dim=1)
    residuals = head.box_coder.encode_torch(local[:, 0:7], anchors)
    decoded = head.decode_roi_residuals(residuals, sampled)
    assert torch.allclose(decoded[:, 0:6], gt[0, :, 0:6].expand(8, 6), atol=1e-4)
    turn = torch.remainder(decoded[:, 6] - gt_box[6], math.pi)
    assert torch.minimum(turn, math.pi - turn).max() < 1e-4

    targets['rcnn_reg'] = residuals
    targets['rcnn_cls'] = torch.full((8, 1), 5.0)
    head.forward_ret_dict = targets
    loss, tb = head.get_loss()
    assert tb['rcnn_loss_reg'] == pytest.approx(0.0, abs=1e-6) and tb['rcnn_loss_corner'] == pytest.approx(0, abs=1e-6)
    assert tb['rcnn_loss_cls'] == pytest.approx(math.log1p(math.exp(-5.0)), rel=1e-4)  # all fg, label 1
    targets['rcnn_reg'] = torch.zeros_like(residuals)
    _, tb = head.get_loss()
    assert tb['rcnn_loss_reg'] > 0 and tb['rcnn_loss_corner'] > 0


def test_rcnn_recall_counts_refined_boxes_before_score_threshold(prcnn_cfg):
    """As OpenPCDet: with ``rois`` in the batch, recall/rcnn_<t> counts every refined box, even those below
    SCORE_THRESH (which pred_dicts drop); without rois (one-stage) it counts the final boxes only."""
    from types import SimpleNamespace

    from pcdet.models.detectors.detector3d_template import Detector3DTemplate
    gt_box = [10.0, -2.0, -1.0, 4.0, 2.0, 1.5, 0.7]
    far_box = [30.0, 5.0, -1.0, 4.0, 2.0, 1.5, 0.0]
    det = SimpleNamespace(model_cfg=prcnn_cfg.MODEL, num_class=3,
                          generate_recall_record=Detector3DTemplate.generate_recall_record)
    batch = {'batch_size': 1, 'batch_box_preds': torch.tensor([[gt_box, far_box]]),
             'batch_cls_preds': torch.tensor([[[-5.0], [3.0]]]),  # the box on the GT scores 0.007 < 0.1
             'cls_preds_normalized': False, 'gt_boxes': torch.tensor([[gt_box + [1.0]]]),
             'rois': torch.tensor([[far_box, gt_box]]), 'roi_labels': torch.ones(1, 2, dtype=torch.long),
             'has_class_labels': True}
    pred_dicts, recall = Detector3DTemplate.post_processing(det, batch)
    assert pred_dicts[0]['pred_boxes'].tolist() == [far_box]
    assert recall['gt'] == 1 and recall['roi_0.3'] == 1 and recall['rcnn_0.3'] == 1 and recall['rcnn_0.7'] == 1
    for key in ('rois', 'roi_labels', 'has_class_labels'):
        batch.pop(key)
    _, recall = Detector3DTemplate.post_processing(det, batch)
    assert recall['gt'] == 1 and recall['roi_0.3'] == 0 and recall['rcnn_0.3'] == 0


# ---------------------------------------------------------------------------------------------- model on KITTI frames
@pytest.fixture(scope='module')
def tiny_cfg_file(tmp_path_factory, kitti_infos_root, tiny_config_text):
    """``<tmp>/kitti_models/pointrcnn_tiny.yaml`` on a KITTI root whose infos hold 2 train and 2 val frames."""
    tmp = tmp_path_factory.mktemp('pointrcnn')
    root = tmp / 'kitti'
    root.mkdir()
    for name in ('training', 'ImageSets'):
        (root / name).symlink_to(kitti_infos_root / name, target_is_directory=True)
    for split in ('train', 'val'):
        with open(kitti_infos_root / f'kitti_infos_{split}.pkl', 'rb') as f:
            infos = pickle.load(f)
        with open(root / f'kitti_infos_{split}.pkl', 'wb') as f:
            pickle.dump(infos[:2], f)
    (tmp / 'kitti_models').mkdir()
    cfg_file = tmp / 'kitti_models' / 'pointrcnn_tiny.yaml'
    cfg_file.write_text(tiny_config_text(PRCNN_CFG, root) + TINY_OVERRIDES)
    return cfg_file


def kitti_batch(cfg, training):
    dataset = KittiDataset(cfg.DATA_CONFIG, cfg.CLASS_NAMES, training=training)
    return dataset, load_data_to_gpu(dataset.collate_batch([dataset[0], dataset[1]]), device='cpu')


def test_train_and_eval_forward_on_two_kitti_frames(tiny_cfg_file):
    torch.manual_seed(0)
    np.random.seed(0)
    cfg = cfg_from_yaml_file(str(tiny_cfg_file), EasyDict())
    dataset, batch = kitti_batch(cfg, training=True)
    model = build_network(cfg.MODEL, num_class=3, dataset=dataset)
    model.train()
    ret, tb_dict, _ = model(batch)
    assert set(tb_dict) == TB_KEYS and all(math.isfinite(v) for v in tb_dict.values())
    assert torch.isfinite(ret['loss'])
    assert ret['loss'].item() == pytest.approx(tb_dict['point_loss_cls'] + tb_dict['point_loss_box']
                                               + tb_dict['rcnn_loss'], rel=1e-4)
    assert batch['point_features'].shape == (2 * 2048, 128) and batch['point_coords'].shape == (2 * 2048, 4)
    assert batch['point_coords'][:, 0].tolist() == [0.0] * 2048 + [1.0] * 2048
    assert batch['rois'].shape == (2, 32, 7) and batch['roi_labels'].shape == (2, 32)
    ret['loss'].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) == len(list(model.parameters())) and all(torch.isfinite(g).all() for g in grads)

    model.eval()
    _, batch = kitti_batch(cfg, training=False)
    with torch.no_grad():
        pred_dicts, recall = model(batch)
    assert batch['batch_cls_preds'].shape == (2, 32, 1) and batch['batch_box_preds'].shape == (2, 32, 7)
    assert batch['has_class_labels'] is True and 'batch_index' not in batch
    assert len(pred_dicts) == 2 and recall['gt'] == int((batch['gt_boxes'].abs().sum(-1) > 0).sum())
    assert {'roi_0.3', 'rcnn_0.3', 'roi_0.7', 'rcnn_0.7'} <= set(recall)
    for i, pred in enumerate(pred_dicts):
        k = pred['pred_boxes'].shape[0]
        assert pred['pred_boxes'].shape == (k, 7) and pred['pred_scores'].shape == (k,)
        assert (pred['pred_scores'] >= 0.1).all()
        for box, label in zip(pred['pred_boxes'], pred['pred_labels']):  # labels come from the RoIs
            row = (batch['batch_box_preds'][i] == box).all(dim=1).nonzero()[0, 0]
            assert label.item() == batch['roi_labels'][i, row].item()


def test_real_config_eval_shapes_on_one_kitti_frame(tiny_cfg_file):
    """pointrcnn.yaml unchanged (full range, 16,384 points, 100 test RoIs of 512 pooled points), one frame."""
    cfg_file = tiny_cfg_file.parent / 'pointrcnn_real.yaml'
    data_root = tiny_cfg_file.parent.parent / 'kitti'
    cfg_file.write_text(f'_BASE_CONFIG_: {PRCNN_CFG}\nDATA_CONFIG:\n  DATA_PATH: {data_root}\n')
    cfg = cfg_from_yaml_file(str(cfg_file), EasyDict())
    dataset = KittiDataset(cfg.DATA_CONFIG, cfg.CLASS_NAMES, training=False)
    batch = load_data_to_gpu(dataset.collate_batch([dataset[0]]), device='cpu')
    torch.manual_seed(0)
    model = build_network(cfg.MODEL, num_class=3, dataset=dataset).eval()
    with torch.no_grad():
        pred_dicts, _ = model(batch)
    assert batch['points'].shape == (16384, 5)
    assert batch['point_features'].shape == (16384, 128) and batch['point_coords'].shape == (16384, 4)
    assert batch['rois'].shape == (1, 100, 7) and batch['batch_box_preds'].shape == (1, 100, 7)
    assert len(pred_dicts) == 1 and pred_dicts[0]['pred_boxes'].shape[1] == 7


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    env.pop('LOCAL_RANK', None)
    return env


def test_e2e_train_step_then_test(tiny_cfg_file, extra_tag):
    """tools/train.py: one step (2 frames, batch 2) -> checkpoint; tools/test.py evaluates it on 2 val frames."""
    out = OUTPUT_GROUP / extra_tag
    common = ['--cfg_file', str(tiny_cfg_file), '--batch_size', '2', '--workers', '0', '--extra_tag', extra_tag]
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'train.py'), *common, '--epochs', '1',
                           '--fix_random_seed'], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ckpt = out / 'ckpt' / 'checkpoint_epoch_1.pth'
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert state['epoch'] == 1 and state['it'] == 1
    assert all(torch.isfinite(v).all() for v in state['model_state'].values() if v.is_floating_point())

    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'test.py'), *common, '--ckpt', str(ckpt)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    res_dir = out / 'eval' / 'epoch_1' / 'val' / 'default'
    with open(res_dir / 'result.pkl', 'rb') as f:
        annos = pickle.load(f)
    with open(tiny_cfg_file.parent.parent / 'kitti' / 'kitti_infos_val.pkl', 'rb') as f:
        val_ids = [info['point_cloud']['lidar_idx'] for info in pickle.load(f)]
    assert [a['frame_id'] for a in annos] == val_ids and len(val_ids) == 2
    metrics = json.loads((res_dir / 'metrics.json').read_text())
    assert {'recall/roi_0.3', 'recall/rcnn_0.7'} <= set(metrics) and any(k.startswith('Car_3d/') for k in metrics)
