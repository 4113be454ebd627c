"""Where PointDistiller's loss weight lands: foreground (pillars in GT boxes) vs background, per score/TAU setting.

An investigation for the benchmark (issue 7), not a speed target. For training samples of the synthetic set, as
the training pipeline produces them (augmentation, GT sampling, voxelisation), it selects the top ``NUM_NODES``
pillars per sample exactly as ``PointDistillerLoss`` does and computes its node weights
(``importance_weights``) for several settings. Printed per setting:
- fg weight: share of the total loss weight on foreground pillars (pillar centre inside a GT box in BEV,
  box enlarged by half a pillar), to compare with the share of foreground pillars among the selected ones;
- n_eff: effective number of weighted nodes per sample, (sum w)^2 / sum w^2 (N when all weights are equal).
``SCORE: max_activation`` settings need the teacher's pillar features: ``--teacher_ckpt``.

    python benchmarks/pd_weight_focus.py --samples 40 \
        --teacher_ckpt output/kitti_synth_models/pointpillar/quickstart/ckpt/checkpoint_epoch_8.pth
"""
import argparse
import logging
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# (label, SCORE, SCORE_NORM, TAU, REWEIGHT)
SETTINGS = [
    ('num_points, TAU 0.01 (default)', 'num_points', 'none', 0.01, True),
    ('num_points, TAU 1', 'num_points', 'none', 1.0, True),
    ('num_points, TAU 3', 'num_points', 'none', 3.0, True),
    ('num_points, TAU 10', 'num_points', 'none', 10.0, True),
    ('num_points / max, TAU 0.1', 'num_points', 'max', 0.1, True),
    ('no reweighting', 'num_points', 'none', 1.0, False),
    ('max_activation, TAU 0.01', 'max_activation', 'none', 0.01, True),
    ('max_activation / max, TAU 0.1', 'max_activation', 'max', 0.1, True),
    ('max_activation / max, TAU 1', 'max_activation', 'max', 1.0, True),
]


def bev_foreground(centres, boxes, margin):
    """(P, 2) BEV points, (M, 7+) boxes [x, y, z, dx, dy, dz, heading] (LiDAR frame) -> (P,) bool in any box."""
    fg = np.zeros(len(centres), dtype=bool)
    for b in boxes:
        c, s = np.cos(-b[6]), np.sin(-b[6])
        d = centres - b[:2]
        lx, ly = d[:, 0] * c - d[:, 1] * s, d[:, 0] * s + d[:, 1] * c
        fg |= (np.abs(lx) <= b[3] / 2 + margin) & (np.abs(ly) <= b[4] / 2 + margin)
    return fg


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--cfg_file', default=os.path.join(ROOT, 'tools/cfgs/kitti_synth_models/'
                                                            'pointpillar_4x_pointdistiller.yaml'))
    p.add_argument('--data_path', default=os.path.join(ROOT, 'data/kitti_synth'))
    p.add_argument('--samples', type=int, default=40)
    p.add_argument('--teacher_ckpt', default=None)
    args = p.parse_args()

    from pcdet.config import cfg, cfg_from_yaml_file
    from pcdet.datasets import build_dataloader
    from pcdet.distill.losses.pointdistiller_loss import PointDistillerLoss, importance_weights, top_nodes
    from pcdet.models import build_network, load_data_to_gpu
    cfg_from_yaml_file(args.cfg_file, cfg)
    cfg.DATA_CONFIG.DATA_PATH = args.data_path
    pd_cfg = next(loss for loss in cfg.DISTILL.LOSSES if loss.NAME == 'PointDistillerLoss')
    num_nodes = pd_cfg.get('NUM_NODES', PointDistillerLoss.DEFAULTS['NUM_NODES'])
    logger = logging.getLogger('pd_weight_focus')
    dataset, loader, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, batch_size=1, dist=False, workers=0,
                                          seed=0, logger=logger, training=True)
    teacher = None
    if args.teacher_ckpt:
        from easydict import EasyDict
        from pcdet.distill.teacher import load_teacher_checkpoint, resolve_teacher_cfg
        t_cfg = resolve_teacher_cfg(cfg, cfg_dir=os.path.dirname(os.path.abspath(args.cfg_file)))
        tc = cfg_from_yaml_file(t_cfg, EasyDict())
        teacher = build_network(tc.MODEL, len(cfg.CLASS_NAMES), dataset).eval()
        load_teacher_checkpoint(teacher, args.teacher_ckpt, logger)
    settings = [s for s in SETTINGS if teacher is not None or s[1] != 'max_activation']
    vs, pcr = dataset.voxel_size, dataset.point_cloud_range
    stats = {s[0]: dict(fg=[], neff=[]) for s in settings}
    sel_fg, all_fg, n_sel = [], [], []
    for i, batch in enumerate(loader):
        if i >= args.samples:
            break
        coords = batch['voxel_coords']                       # (V, 4) [b, z, y, x]
        centres = np.stack([(coords[:, 3] + 0.5) * vs[0] + pcr[0], (coords[:, 2] + 0.5) * vs[1] + pcr[1]], 1)
        fg = bev_foreground(centres, batch['gt_boxes'][0], margin=vs[0] / 2)
        counts = torch.from_numpy(batch['voxel_num_points']).float()
        act = None
        if teacher is not None:
            load_data_to_gpu(batch, torch.device('cpu'))
            with torch.no_grad():
                act = teacher.vfe(batch)['pillar_features'].max(dim=1).values
        all_fg.append(fg.mean())
        for label, score, norm, tau, reweight in settings:
            s = counts if score == 'num_points' else act
            sel = top_nodes(s, min(num_nodes, s.numel()))
            w = importance_weights(s[sel], tau, norm) if reweight else torch.ones(sel.numel())
            w = w.double().numpy()
            f = fg[sel.numpy()]
            stats[label]['fg'].append(w[f].sum() / w.sum())
            stats[label]['neff'].append(w.sum() ** 2 / (w ** 2).sum())
            if label == settings[0][0]:
                sel_fg.append(f.mean())
                n_sel.append(sel.numel())
    n = len(all_fg)
    print(f'{n} training samples of {args.data_path} ({args.cfg_file}), NUM_NODES {num_nodes}: '
          f'{np.mean(n_sel):.0f} pillars selected per sample on average; foreground pillars: '
          f'{100 * np.mean(all_fg):.1f}% of all, {100 * np.mean(sel_fg):.1f}% of the selected')
    print('| setting | fg share of loss weight (%) | n_eff per sample |')
    print('|---|---:|---:|')
    for label, *_ in settings:
        st = stats[label]
        print(f'| {label} | {100 * np.mean(st["fg"]):.1f} +- {100 * np.std(st["fg"]):.1f} | '
              f'{np.mean(st["neff"]):.0f} |')


if __name__ == '__main__':
    main()
