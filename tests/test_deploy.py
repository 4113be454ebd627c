"""ONNX export of the PointPillars family and the ONNX Runtime backend (pcdet.deploy, tools/export_onnx.py,
tools/test.py --onnx), checked against the PyTorch detector on the real KITTI sample frames.

Weights: "random" models get random BN statistics and a class head whose logits spread over several units, with
the class bias set so that every cell of an empty frame (no pillar nearby, borders included) scores 0.05: the
default score threshold (0.1) then keeps only anchors whose scores depend on real points. Without that step all
empty cells tie exactly, and which of two tied boxes NMS keeps is decided by 1e-7 differences, which says
nothing about the export. The trained checkpoint comes from one epoch of tools/train.py on a tiny synthetic set.
"""
import json
import logging
import math
import os
import pickle
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from easydict import EasyDict

pytest.importorskip('onnxruntime', reason='pip install -e .[deploy]')
pytest.importorskip('onnxscript', reason='pip install -e .[deploy]')
import onnx  # noqa: E402

from pcdet.config import cfg_from_yaml_file  # noqa: E402
from pcdet.datasets.dataset_meta import DatasetMeta  # noqa: E402
from pcdet.deploy.onnx_export import (NotExportableError, PillarNetworkGraph, check_exportable,  # noqa: E402
                                      example_inputs, export_onnx)
from pcdet.deploy.onnx_runtime import OnnxPillarDetector, import_deploy_package  # noqa: E402
from pcdet.deploy.pipeline import build_test_processor, points_to_batch, read_kitti_points  # noqa: E402
from pcdet.models import build_network  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CFGS = REPO / 'tools' / 'cfgs'
HEAD_KEYS = ('cls_preds', 'box_preds', 'dir_cls_preds')
HEAD_ATOL = 1e-4
CENTRE_TOL_M = 0.01
EXAMPLE_PILLARS = 2000
# two of the 13 sample frames (camera FOV): 1,269 and 3,676 pillars on the synthetic grid, 3,101 and 8,567
# on KITTI's; the export's example has 2,000
FRAMES = (2, 5)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """torch and ORT on one thread: on 2 shared cores two-thread runs of both fight each other (2-3x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_cfg(rel):
    return cfg_from_yaml_file(str(CFGS / rel), EasyDict())


def build(cfg):
    torch.manual_seed(0)
    return build_network(cfg.MODEL, len(cfg.CLASS_NAMES), DatasetMeta.from_cfg(cfg, training=False)).eval()


@torch.no_grad()
def make_confident(model, seed=0):
    """Random BN statistics and class head (logits spread by about 1 over the cells of a frame); class bias so
    that an empty frame scores at most 0.05 everywhere."""
    g = torch.Generator().manual_seed(seed)

    def fill_(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    for mod in model.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            fill_(mod.running_mean, -0.2, 0.2)
            fill_(mod.running_var, 0.5, 2.0)
            fill_(mod.weight, 0.5, 1.5)
            fill_(mod.bias, -0.2, 0.2)
    head, graph = model.dense_head, PillarNetworkGraph(model)
    head.conv_cls.weight.copy_(torch.randn(head.conv_cls.weight.shape, generator=g))
    head.conv_cls.bias.zero_()
    logits = graph(*example_inputs(model.dataset, num_pillars=EXAMPLE_PILLARS, seed=seed))[0]
    spread = logits.reshape(-1, logits.shape[-1]).std(dim=0)  # per class channel, over the cells
    head.conv_cls.weight.div_(spread.view(-1, 1, 1, 1))
    empty = tuple(t[:0] for t in example_inputs(model.dataset, num_pillars=1))
    cls_preds = graph(*empty)[0]
    background = cls_preds.reshape(-1, cls_preds.shape[-1]).max(dim=0)[0]
    head.conv_cls.bias.copy_(math.log(0.05 / 0.95) - background)
    return model


def read_frames(kitti_samples_dir):
    """Points of the FRAMES as KittiDataset reads them (camera field of view only)."""
    ids = sorted(p.stem for p in (kitti_samples_dir / 'training' / 'velodyne').glob('*.bin'))
    return [read_kitti_points(kitti_samples_dir / 'training', ids[i]) for i in FRAMES]


@pytest.fixture(scope='module')
def kitti_frames(kitti_samples_dir):
    return read_frames(kitti_samples_dir)


@torch.no_grad()
def pytorch_run(model, batch):
    """The detector's own forward (network, decoding, NMS) plus its raw head outputs."""
    pred_dicts, _ = model(batch)
    cls_preds, box_preds, dir_cls_preds = model.dense_head.predict_maps(batch['spatial_features_2d'])
    return pred_dicts, {'cls_preds': cls_preds, 'box_preds': box_preds, 'dir_cls_preds': dir_cls_preds}


def match_boxes(xyz_a, labels_a, xyz_b, labels_b):
    """Pair every box of a with its nearest box of b of the same label. Returns (index into b per box of a,
    centre distance per box of a); asserts the same count, the same labels and a one-to-one pairing."""
    xyz_a, xyz_b = np.asarray(xyz_a, np.float64), np.asarray(xyz_b, np.float64)
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)
    assert xyz_a.shape == xyz_b.shape
    assert sorted(labels_a.tolist()) == sorted(labels_b.tolist())
    if xyz_a.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    dist = np.linalg.norm(xyz_a[:, None, :] - xyz_b[None, :, :], axis=2)
    dist[labels_a[:, None] != labels_b[None, :]] = np.inf
    nearest = dist.argmin(axis=1)
    assert len(set(nearest.tolist())) == xyz_a.shape[0], 'two boxes of one backend match the same box'
    return nearest, dist[np.arange(len(nearest)), nearest]


def assert_same_boxes(ref, got):
    """Same count, same labels, each PyTorch box paired with its own ORT box: centres within 1 cm, scores within
    1e-4. Returns the largest centre distance (m)."""
    nearest, dist = match_boxes(ref['pred_boxes'][:, :3], ref['pred_labels'], got['pred_boxes'][:, :3],
                                got['pred_labels'])
    if len(dist) == 0:
        return 0.0
    assert dist.max() < CENTRE_TOL_M
    np.testing.assert_allclose(got['pred_scores'].numpy()[nearest], ref['pred_scores'].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got['pred_boxes'].numpy()[nearest], ref['pred_boxes'].numpy(), atol=1e-3, rtol=0)
    return float(dist.max())


def compare_on_frames(model, onnx_path, cfg, frames):
    """Run PyTorch and ORT on every frame; assert head outputs and boxes agree. Returns (max head diff per key,
    pillar counts, box counts)."""
    runner = OnnxPillarDetector(model, onnx_path, num_threads=1)
    processor = build_test_processor(cfg)
    diffs, pillars, boxes = dict.fromkeys(HEAD_KEYS, 0.0), [], []
    for points in frames:
        ref_preds, ref_head = pytorch_run(model, points_to_batch([points], processor))
        batch = points_to_batch([points], processor)
        got_preds, _ = runner(batch)
        for key in HEAD_KEYS:
            assert batch[key].shape == ref_head[key].shape
            diffs[key] = max(diffs[key], float((batch[key] - ref_head[key]).abs().max()))
        assert_same_boxes(ref_preds[0], got_preds[0])
        pillars.append(int(batch['voxels'].shape[0]))
        boxes.append(int(ref_preds[0]['pred_boxes'].shape[0]))
    assert max(diffs.values()) <= HEAD_ATOL, diffs
    return diffs, pillars, boxes


CONFIGS = ['kitti_synth_models/pointpillar.yaml', 'kitti_synth_models/pointpillar_4x.yaml',
           'kitti_synth_models/pointpillar_16x.yaml', 'kitti_models/pointpillar.yaml',
           'kitti_models/pointpillar_4x.yaml', 'kitti_models/pointpillar_16x.yaml']


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """``exported(rel_cfg) -> (cfg, model, onnx_path)``: a confident random model of the config, exported once
    per module (an export costs about 2 s)."""
    cache = {}

    def get(rel_cfg):
        if rel_cfg not in cache:
            cfg = load_cfg(rel_cfg)
            model = make_confident(build(cfg))
            out = tmp_path_factory.mktemp('onnx') / (Path(rel_cfg).stem + '.onnx')
            cache[rel_cfg] = cfg, model, export_onnx(model, out, example=example_inputs(model.dataset,
                                                                                       EXAMPLE_PILLARS))
        return cache[rel_cfg]
    return get


@pytest.mark.parametrize('rel_cfg', CONFIGS)
def test_export_matches_pytorch_on_kitti_frames(rel_cfg, kitti_frames, exported):
    """Teacher, 4x and 16x, synthetic and KITTI geometry: ORT head outputs within 1e-4 of PyTorch and the same
    boxes after decoding + NMS, on real frames whose pillar counts differ from the export's example (the
    KITTI-size networks, 10x the work, on the larger frame only)."""
    cfg, model, path = exported(rel_cfg)
    frames = kitti_frames if rel_cfg.startswith('kitti_synth_models') else kitti_frames[-1:]
    diffs, pillars, boxes = compare_on_frames(model, path, cfg, frames)
    assert all(v != EXAMPLE_PILLARS for v in pillars) and len(set(pillars)) == len(pillars)
    assert sum(boxes) > 0, 'no box above the score threshold: the post-processing check would be vacuous'
    # the exported widths are the config's (ONNX initialisers carry the checkpoint names and shapes)
    inits = {i.name: tuple(i.dims) for i in onnx.load(str(path)).graph.initializer}
    c_vfe = cfg.MODEL.VFE.NUM_FILTERS[-1]
    assert any(shape[:1] == (c_vfe,) for name, shape in inits.items() if name.startswith('vfe.'))


def test_pillar_counts_far_from_the_example(exported):
    """No pillar, one pillar and 4x the example's count run through the same graph and match PyTorch."""
    _, model, path = exported('kitti_synth_models/pointpillar_16x.yaml')
    session = OnnxPillarDetector(model, path, num_threads=1).session
    graph = PillarNetworkGraph(model)
    for count in (0, 1, 4 * EXAMPLE_PILLARS):
        inputs = example_inputs(model.dataset, num_pillars=count, seed=count)
        with torch.no_grad():
            ref = graph(*inputs)
        got = session.run(list(HEAD_KEYS), {'voxels': inputs[0].numpy(), 'voxel_num_points': inputs[1].numpy(),
                                           'voxel_coords': inputs[2].numpy()})
        for r, o in zip(ref, got):
            np.testing.assert_allclose(o, r.numpy(), atol=HEAD_ATOL, rtol=0)


def test_second_is_refused_with_one_clear_line(tmp_path):
    """SECOND fails before anything is built: exit status 2, one line on stderr naming the sparse convolutions."""
    with pytest.raises(NotExportableError, match='sparse convolutions'):
        check_exportable(load_cfg('kitti_models/second_4x.yaml').MODEL)
    two_stage = load_cfg('kitti_models/pointpillar.yaml').MODEL
    two_stage.ROI_HEAD = EasyDict(NAME='PointRCNNHead')
    with pytest.raises(NotExportableError, match='MODEL.ROI_HEAD'):
        check_exportable(two_stage)
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'export_onnx.py'), '--cfg_file',
                           'tools/cfgs/kitti_synth_models/second.yaml', '--random_init', '--out',
                           str(tmp_path / 's.onnx')], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('export_onnx.py: error: SECONDNet cannot be exported to ONNX')
    assert 'spconv sparse convolutions' in lines[0] and 'no ONNX operator' in lines[0]
    assert not (tmp_path / 's.onnx').exists()


def test_missing_onnxruntime_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # what `import onnxruntime` sees when not installed
    with pytest.raises(ImportError, match=r'pip install -e \.\[deploy\]'):
        import_deploy_package('onnxruntime')


def test_runner_refuses_a_file_of_another_config(exported):
    _, model, path = exported('kitti_synth_models/pointpillar_16x.yaml')
    with pytest.raises(ValueError, match='does not fit this config'):
        OnnxPillarDetector(build(load_cfg('kitti_models/pointpillar_16x.yaml')), path)
    with pytest.raises(RuntimeError, match='inference only'):
        OnnxPillarDetector(model, path).train()


# ----------------------------------------------------------------------------------- trained checkpoint, CLIs
SYNTH_4X = 'tools/cfgs/kitti_synth_models/pointpillar_4x.yaml'
OUT_GROUP = REPO / 'output' / 'kitti_synth_models' / 'pointpillar_4x'


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    env.pop('LOCAL_RANK', None)
    return env


def run(cmd, timeout=300):
    proc = subprocess.run([sys.executable] + [str(c) for c in cmd], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f'{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc


@pytest.fixture(scope='module')
def tiny_synth(tmp_path_factory):
    """4 training + 2 validation synthetic frames with infos, a 1-epoch 4x student trained on them by
    tools/train.py, and an output tag that is removed afterwards. Yields (data_path, checkpoint, tag)."""
    data = tmp_path_factory.mktemp('deploy_synth') / 'kitti_synth'
    run(['-m', 'pcdet.datasets.synthetic.generate', '--out', data, '--num_train', 4, '--num_val', 2, '--seed', 0,
         '--workers', 1])
    run(['-m', 'pcdet.datasets.kitti.kitti_dataset', 'create_kitti_infos',
         'tools/cfgs/dataset_configs/kitti_synth_dataset.yaml', '--data_path', data, '--workers', 1])
    tag = 'pytest_deploy_' + uuid.uuid4().hex[:8]
    run(['tools/train.py', '--cfg_file', SYNTH_4X, '--epochs', 1, '--batch_size', 2, '--workers', 0,
         '--extra_tag', tag, '--fix_random_seed', '--num_epochs_to_eval', 0, '--set', 'DATA_CONFIG.DATA_PATH', data])
    ckpt = OUT_GROUP / tag / 'ckpt' / 'checkpoint_epoch_1.pth'
    assert ckpt.is_file()
    yield data, ckpt, tag
    shutil.rmtree(OUT_GROUP / tag, ignore_errors=True)


def test_trained_checkpoint_exports_by_cli_and_matches(tiny_synth, kitti_frames, tmp_path):
    """tools/export_onnx.py on a checkpoint written by tools/train.py; ORT equals PyTorch on KITTI frames."""
    _, ckpt, _ = tiny_synth
    out = tmp_path / 'student_4x.onnx'
    proc = run(['tools/export_onnx.py', '--cfg_file', SYNTH_4X, '--ckpt', ckpt, '--out', out])
    assert out.is_file() and 'ONNX Runtime vs PyTorch' in proc.stdout
    cfg = load_cfg('kitti_synth_models/pointpillar_4x.yaml')
    model = build(cfg)
    model.load_params_from_file(str(ckpt), logger=logging.getLogger('test_deploy'), to_cpu=True, strict=True)
    model.eval()
    diffs, _, boxes = compare_on_frames(model, out, cfg, kitti_frames)
    # one epoch of 2 iterations leaves every score near the 0.01 prior: no box at the 0.1 threshold, so NMS is
    # also compared at a threshold just under the best score
    model.model_cfg.POST_PROCESSING.SCORE_THRESH = 0.0
    processor = build_test_processor(cfg)
    batch = points_to_batch([kitti_frames[0]], processor)
    with torch.no_grad():
        for module in model.module_list:
            batch = module(batch)
    scores = torch.sigmoid(batch['batch_cls_preds'][0]).max(dim=1)[0]
    top = torch.topk(scores, 50)[0].double()
    gap = int(torch.argmax(top[:-1] - top[1:]))  # the threshold sits in the widest gap among the 50 best scores
    model.model_cfg.POST_PROCESSING.SCORE_THRESH = float(top[gap] + top[gap + 1]) / 2
    ref_preds, _ = pytorch_run(model, points_to_batch([kitti_frames[0]], processor))
    got_preds, _ = OnnxPillarDetector(model, out, num_threads=1)(points_to_batch([kitti_frames[0]], processor))
    assert ref_preds[0]['pred_boxes'].shape[0] > 0
    assert_same_boxes(ref_preds[0], got_preds[0])


def test_test_py_onnx_gives_the_pytorch_evaluation(tiny_synth, exported, tmp_path):
    """tools/test.py --onnx and --ckpt on the same weights: the same detections per frame and the same KITTI
    metric dict. The weights are the confident random ones (a 1-epoch student detects nothing at 0.1)."""
    data, _, tag = tiny_synth
    _, model, path = exported('kitti_synth_models/pointpillar_4x.yaml')
    ckpt = tmp_path / 'checkpoint_epoch_7.pth'
    torch.save({'model_state': model.state_dict(), 'epoch': 7, 'it': 0}, ckpt)  # OpenPCDet's checkpoint layout
    onnx_path = tmp_path / 'pp_4x_epoch_7.onnx'
    shutil.copy(path, onnx_path)  # the epoch number is read from the file name
    common = ['--cfg_file', SYNTH_4X, '--batch_size', 2, '--workers', 0, '--extra_tag', tag,
              '--set', 'DATA_CONFIG.DATA_PATH', data]
    run(['tools/test.py', '--ckpt', ckpt] + common)
    run(['tools/test.py', '--onnx', onnx_path] + common)
    res = OUT_GROUP / tag / 'eval' / 'epoch_7' / 'val'
    annos = {}
    for eval_tag in ('default', 'onnx'):
        with open(res / eval_tag / 'result.pkl', 'rb') as f:
            annos[eval_tag] = pickle.load(f)
    assert [a['frame_id'] for a in annos['default']] == [a['frame_id'] for a in annos['onnx']]
    assert sum(len(a['name']) for a in annos['default']) > 0
    for ref, got in zip(annos['default'], annos['onnx']):
        nearest, dist = match_boxes(ref['location'], ref['name'], got['location'], got['name'])
        assert len(dist) == 0 or dist.max() < CENTRE_TOL_M
        np.testing.assert_allclose(got['score'][nearest], ref['score'], atol=1e-4, rtol=0)
    m_ref = json.loads((res / 'default' / 'metrics.json').read_text())
    m_onnx = json.loads((res / 'onnx' / 'metrics.json').read_text())
    assert m_ref.keys() == m_onnx.keys()
    for key in m_ref:
        assert m_onnx[key] == pytest.approx(m_ref[key], abs=1e-6), key
