"""Where PointDistiller's loss weight lands, measured on a trained teacher's real features.

An investigation tool, not a speed target. For training samples of the synthetic set, as the
training pipeline produces them (augmentation, GT sampling, voxelisation), the teacher of a distillation config
runs exactly as in training (``Distiller.run_teacher``), and each ``PointDistillerLoss`` of the config selects its
nodes and computes its weights with its own code (``_flatten`` + ``build_graph``): the configured setting is the
weights the loss uses. Alternative settings re-weight the same selected nodes (``importance_weights``) with other
``SCORE_NORM`` / ``TAU``. Printed per loss and setting:
- n_eff: effective number of weighted nodes per sample, (sum w)^2 / sum w^2 (N when all weights are equal);
- fg weight: share of the loss weight on foreground nodes (node cell centre inside a GT box in BEV, the box grown
  by half a cell), beside the share of foreground nodes among the selected ones.

Node geometry: voxel / pillar features (V, C) take the dataset's voxel grid; dense BEV maps (B, C, H, W) take
cells of (range / W, range / H). Sparse 3D features are not supported (their stride is not recorded).

    python benchmarks/pd_weight_focus.py --cfg_file tools/cfgs/kitti_synth_models/second_coarse_4x_pointdistiller.yaml \
        --teacher_ckpt output/kitti_synth_models/second_coarse/bench_e8_seed0/ckpt/checkpoint_epoch_8.pth \
        --data_path data/kitti_synth_bench --samples 40
"""
import argparse
import logging
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# alternative (SCORE_NORM, TAU) settings applied to the selected nodes of every loss
ALTERNATIVES = [('none', 1e-4), ('none', 0.01), ('none', 1.0), ('none', 10.0), ('max', 0.1), ('max', 1.0)]


def bev_foreground(centres, boxes, margin):
    """(P, 2) BEV points, (M, 7+) boxes [x, y, z, dx, dy, dz, heading] (LiDAR frame) -> (P,) bool in any box."""
    fg = np.zeros(len(centres), dtype=bool)
    for b in boxes:
        c, s = np.cos(-b[6]), np.sin(-b[6])
        d = centres - b[:2]
        lx, ly = d[:, 0] * c - d[:, 1] * s, d[:, 0] * s + d[:, 1] * c
        fg |= (np.abs(lx) <= b[3] / 2 + margin) & (np.abs(ly) <= b[4] / 2 + margin)
    return fg


def node_centres(coords, feature, dataset):
    """BEV centres (V, 2) [x, y] in metres (LiDAR frame) and the cell size of the nodes of ``feature``.

    ``coords``: the loss's node coordinates, (V, 3) [z, y, x] voxel indices for (V, C) features or (V, 2) [y, x]
    cell indices for (B, C, H, W) maps."""
    pcr = np.asarray(dataset.point_cloud_range, dtype=float)
    if torch.is_tensor(feature) and feature.dim() == 4:
        h, w = feature.shape[2:]
        cell = np.array([(pcr[3] - pcr[0]) / w, (pcr[4] - pcr[1]) / h])
    elif torch.is_tensor(feature) and feature.dim() == 2:
        cell = np.asarray(dataset.voxel_size[:2], dtype=float)
    else:
        raise SystemExit('pd_weight_focus: sparse 3D features are not supported (no recorded stride)')
    yx = coords[:, -2:].double().numpy()
    return np.stack([(yx[:, 1] + 0.5) * cell[0] + pcr[0], (yx[:, 0] + 0.5) * cell[1] + pcr[1]], 1), cell


def effective_nodes(w):
    return float(w.sum() ** 2 / (w ** 2).sum())


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--cfg_file', default=os.path.join(ROOT, 'tools/cfgs/kitti_synth_models/'
                                                            'pointpillar_4x_pointdistiller.yaml'))
    p.add_argument('--teacher_ckpt', required=True, help='the trained teacher (the weights decide the activations)')
    p.add_argument('--data_path', default=os.path.join(ROOT, 'data/kitti_synth'))
    p.add_argument('--samples', type=int, default=40)
    return p.parse_args()


def build(args, logger):
    """(dataset, loader, distiller) for ``args.cfg_file`` with the given teacher."""
    from pcdet.config import cfg, cfg_from_yaml_file
    from pcdet.datasets import build_dataloader
    from pcdet.distill import build_distiller
    from pcdet.models import build_network
    from pcdet.utils import common_utils
    common_utils.set_random_seed(0)   # augmentation and GT sampling draw from numpy: the same samples every run
    cfg_from_yaml_file(args.cfg_file, cfg)
    cfg.DATA_CONFIG.DATA_PATH = args.data_path
    dataset, loader, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, batch_size=1, dist=False, workers=0,
                                          seed=0, logger=logger, training=True)
    student = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=dataset)
    distiller = build_distiller(cfg, student, logger, teacher_ckpt=args.teacher_ckpt,
                                cfg_dir=os.path.dirname(os.path.abspath(args.cfg_file)))
    return dataset, loader, distiller


def measure(loss, teacher_feats, batch, dataset, stats):
    """Add one sample's figures of ``loss`` (configured weights and the alternatives) to ``stats``."""
    from pcdet.distill.losses.pointdistiller_loss import importance_weights
    o = loss.opts
    feature = loss.feature(teacher_feats, o['TEACHER_FEATURE'], 'teacher')
    t_nodes, bidx, coords, is_voxel = loss._flatten(feature, batch, 'teacher')
    mode, scores = loss.score_mode(is_voxel), loss.node_scores(t_nodes, is_voxel, batch)
    with torch.no_grad():
        center, _, weights = loss.build_graph(t_nodes, bidx, coords, scores)
    centres, cell = node_centres(coords.index_select(0, center), feature, dataset)
    gt = batch['gt_boxes'][0].cpu().numpy()
    fg = bev_foreground(centres, gt[np.abs(gt[:, 3:6]).sum(1) > 0], margin=cell.max() / 2)
    stats['nodes'].append(center.numel())
    stats['fg_nodes'].append(fg.mean())
    settings = {f'configured: SCORE {mode}, SCORE_NORM {o["SCORE_NORM"]}, TAU {o["TAU"]:g}'
                f'{"" if o["REWEIGHT"] else ", REWEIGHT off"}': weights}
    for norm, tau in ALTERNATIVES:
        settings[f'SCORE_NORM {norm}, TAU {tau:g}'] = importance_weights(scores[center], tau, norm)
    settings['no reweighting'] = torch.ones(center.numel())
    for label, w in settings.items():
        w = w.double().numpy()
        row = stats['settings'].setdefault(label, dict(fg=[], neff=[]))
        row['fg'].append(w[fg].sum() / w.sum())
        row['neff'].append(effective_nodes(w))


def main():
    args = parse_args()
    from pcdet.models import load_data_to_gpu
    logger = logging.getLogger('pd_weight_focus')
    dataset, loader, distiller = build(args, logger)
    distiller.eval()
    stats = {tag: dict(nodes=[], fg_nodes=[], settings={}) for tag in distiller.losses}
    for i, batch in enumerate(loader):
        if i >= args.samples:
            break
        load_data_to_gpu(batch, torch.device('cpu'))
        teacher_feats = distiller.run_teacher(batch)
        for tag, loss in distiller.losses.items():
            measure(loss, teacher_feats, batch, dataset, stats[tag])
    print(f'{args.samples} training samples of {args.data_path}; {args.cfg_file}; teacher {args.teacher_ckpt}')
    for tag, st in stats.items():
        print(f'\n{tag}: {np.mean(st["nodes"]):.0f} nodes selected per sample, '
              f'{100 * np.mean(st["fg_nodes"]):.1f}% of them foreground\n')
        print('| setting | n_eff per sample, mean (min-max) | fg share of loss weight (%) |')
        print('|---|---:|---:|')
        for label, row in st['settings'].items():
            print(f'| {label} | {np.mean(row["neff"]):.1f} ({np.min(row["neff"]):.1f}-{np.max(row["neff"]):.1f}) | '
                  f'{100 * np.mean(row["fg"]):.1f} +- {100 * np.std(row["fg"]):.1f} |')


if __name__ == '__main__':
    main()
