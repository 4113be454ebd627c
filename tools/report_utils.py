"""Evaluate a checkpoint in-process and format comparison tables (used by quickstart.py and benchmark_distill.py).

Every figure comes from the same code path a user gets with ``tools/test.py``: the dataset's KITTI evaluation
(``KittiDataset.evaluation``, official metric, AP at 40 recall positions) on the model's post-processed boxes.
"""
import math
import time
from pathlib import Path

import numpy as np
import torch

CLASSES = ('Car', 'Pedestrian', 'Cyclist')
LEVELS = ('easy', 'moderate', 'hard')


def load_cfg(cfg_file, data_path=None):
    """Load an experiment YAML into a fresh EasyDict (the global cfg is left alone); optionally repoint DATA_PATH."""
    from easydict import EasyDict

    from pcdet.config import cfg_from_yaml_file

    cfg = EasyDict()
    cfg_from_yaml_file(str(cfg_file), cfg)
    if data_path is not None:
        cfg.DATA_CONFIG.DATA_PATH = str(data_path)
    return cfg


def count_params(model):
    """Number of parameters (trainable and frozen), as the paper's 'M params' column counts them."""
    return sum(p.numel() for p in model.parameters())


def _single_frame_batch(dataset, index=0):
    from pcdet.models import load_data_to_gpu

    batch = dataset.collate_batch([dataset[index]])
    load_data_to_gpu(batch, device=torch.device('cpu'))
    return batch


def measure_gflops(model, dataset):
    """GFLOPs of one forward pass on one validation frame, counted by torch's FlopCounterMode.

    Counts dense ops (conv, linear, matmul) at 2 FLOPs per multiply-accumulate; sparse convolutions (spconv) and
    NMS are not counted, so SECOND's figure covers its dense 2D part only.
    """
    from torch.utils.flop_counter import FlopCounterMode

    batch = _single_frame_batch(dataset)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    return counter.get_total_flops() / 1e9


def measure_latency(model, dataset, frames=10, warmup=2):
    """Median CPU seconds per frame (batch 1): ``(network, post_processing)``.

    The network (voxels -> dense head) is what distillation shrinks; post-processing (score threshold + NMS)
    is timed apart because its cost follows the number of candidate boxes, i.e. how well the model is trained.
    """
    model.eval()
    n = min(len(dataset), frames + warmup)
    net, post = [], []
    with torch.no_grad():
        for i in range(n):
            batch = _single_frame_batch(dataset, i)
            t0 = time.perf_counter()
            batch = _run_network(model, batch)
            t1 = time.perf_counter()
            model.post_processing(batch)
            if i >= warmup or n <= warmup:
                net.append(t1 - t0)
                post.append(time.perf_counter() - t1)
    return float(np.median(net)), float(np.median(post))


def build_eval_model(cfg_file, ckpt, data_path=None, workers=2, batch_size=4):
    """``(cfg, dataset, loader, model)``: the validation split of ``cfg_file`` (DATA_PATH repointed to
    ``data_path`` when given) and its model with every tensor of ``ckpt`` loaded (strict), in eval mode, on CPU."""
    from pcdet.datasets import build_dataloader
    from pcdet.models import build_network
    from pcdet.utils import common_utils

    cfg = load_cfg(cfg_file, data_path)
    logger = common_utils.create_logger()
    dataset, loader, _ = build_dataloader(dataset_cfg=cfg.DATA_CONFIG, class_names=cfg.CLASS_NAMES,
                                          batch_size=batch_size, dist=False, workers=workers, logger=logger,
                                          training=False)
    model = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=dataset)
    model.load_params_from_file(str(ckpt), logger=logger, to_cpu=True, strict=True)
    model.eval()
    return cfg, dataset, loader, model


def measure_latency_interleaved(models, frames=10, rounds=15):
    """CPU milliseconds per frame (batch 1) of several models, timed in interleaved rounds
    (``pcdet.utils.timing``): each round runs every model's network over the same ``frames`` validation frames,
    then its post-processing (score threshold + NMS) on the network outputs, so a slow phase of a shared machine
    hits every model alike and same-architecture models agree within the spread.

    Args:
        models: ``{label: (model, dataset)}`` (eval mode, CPU).
    Returns:
        ``{label: {'net_ms': [per round], 'post_ms': [per round]}}``.
    """
    from pcdet.utils.timing import interleaved_rounds

    fns, count = {}, {}
    for label, (model, dataset) in models.items():
        batches = [_single_frame_batch(dataset, i) for i in range(min(len(dataset), frames))]
        with torch.no_grad():
            outputs = [_run_network(model, dict(b)) for b in batches]
        count[label] = len(batches)
        fns[(label, 'net_ms')] = _no_grad(lambda m=model, bs=batches: [_run_network(m, dict(b)) for b in bs])
        fns[(label, 'post_ms')] = _no_grad(lambda m=model, os=outputs: [m.post_processing(dict(o)) for o in os])
    times = interleaved_rounds(fns, rounds)
    return {label: {kind: [t * 1e3 / count[label] for t in times[(label, kind)]] for kind in ('net_ms', 'post_ms')}
            for label in models}


def _run_network(model, batch):
    """The detector's modules on ``batch`` (no post-processing); returns the batch dict they filled."""
    for module in model.module_list:
        batch = module(batch)
    return batch


def _no_grad(fn):
    def call():
        with torch.no_grad():
            return fn()
    return call


def evaluate_checkpoint(cfg_file, ckpt, data_path=None, workers=2, batch_size=4, latency_frames=10):
    """Evaluate ``ckpt`` with the model of ``cfg_file`` on its validation split.

    Returns a dict: ``params`` (int), ``gflops`` (float), ``latency_s`` (float, per frame), ``ap`` (the KITTI
    result dict, e.g. ``ap['Car_3d/moderate_R40']``), ``map_3d`` and ``map_bev`` (mean of the three classes'
    moderate AP R40, the paper's mAP).
    """
    from tqdm import tqdm

    from pcdet.models import load_data_to_gpu

    cfg, dataset, loader, model = build_eval_model(cfg_file, ckpt, data_path, workers, batch_size)
    det_annos = []
    with torch.no_grad():
        for batch in tqdm(loader, desc=f'eval {Path(cfg_file).stem}', dynamic_ncols=True):
            load_data_to_gpu(batch, device=torch.device('cpu'))
            pred_dicts, _ = model(batch)
            det_annos += dataset.generate_prediction_dicts(batch, pred_dicts, cfg.CLASS_NAMES, output_path=None)
    _, ap = dataset.evaluation(det_annos, cfg.CLASS_NAMES, eval_metric='kitti')
    ap = {k: float(v) for k, v in ap.items()}
    latency_s, post_s = measure_latency(model, dataset, frames=latency_frames)
    return dict(
        params=count_params(model),
        gflops=measure_gflops(model, dataset),
        latency_s=latency_s,
        post_s=post_s,
        ap=ap,
        map_3d=mean_moderate(ap, '3d'),
        map_bev=mean_moderate(ap, 'bev'),
    )


def mean_moderate(ap, metric):
    """The paper's mAP: mean over Car, Pedestrian, Cyclist of the moderate AP R40 for ``metric`` (3d or bev)."""
    vals = [ap.get(f'{c}_{metric}/moderate_R40') for c in CLASSES]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else float('nan')


def format_table(rows):
    """Markdown tables: a summary (size, cost, mAP) and the per-class easy/moderate/hard APs (3D and BEV, R40).

    ``rows``: list of dicts with ``label``, ``n`` (seeds), ``params``, ``gflops``, ``net_ms`` and ``post_ms`` (one
    value per timing round, ``measure_latency_interleaved``), ``map_3d`` and ``map_bev`` as ``(mean, std)`` over
    seeds (std nan for one), ``ap``: ``{KITTI key: (mean, std)}``.
    """
    from pcdet.utils.timing import format_spread, median_spread

    lines = ['| model | params (M) | GFLOPs | CPU ms/frame: network, median (min-max) | NMS ms | seeds '
             '| mAP 3D (mod.) | mAP BEV (mod.) |', '|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['label']} | {r['params'] / 1e6:.2f} | {r['gflops']:.1f} | {format_spread(r['net_ms'])} | "
                     f"{median_spread(r['post_ms'])[0]:.1f} | {r['n']} | {mean_std(r['map_3d'])} | "
                     f"{mean_std(r['map_bev'])} |")
    for metric, title in (('3d', '3D AP R40 (easy/moderate/hard)'), ('bev', 'BEV AP R40 (easy/moderate/hard)')):
        lines += ['', f'{title}, means over seeds:', '', '| model | ' + ' | '.join(CLASSES) + ' |',
                  '|---|' + '---|' * len(CLASSES)]
        for r in rows:
            cells = []
            for c in CLASSES:
                vals = [r['ap'].get(f'{c}_{metric}/{lv}_R40', (float('nan'),))[0] for lv in LEVELS]
                cells.append('/'.join(f'{v:.1f}' for v in vals))
            lines.append(f"| {r['label']} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def mean_std(pair, sign=False):
    """'mean +- std' of a ``(mean, std)`` pair (the mean alone when std is nan: one seed)."""
    mean, std = pair
    text = f'{mean:+.2f}' if sign else f'{mean:.2f}'
    return text if math.isnan(std) else f'{text} +- {std:.2f}'
