"""Bird's-eye-view picture (PNG) of a frame's points, its ground-truth boxes and one or more models' predictions.

    python tools/visualize_bev.py --cfg_file tools/cfgs/kitti_synth_models/pointpillar.yaml \
        --ckpt output/.../checkpoint_epoch_10.pth --frame_id 000003 --out bev.png

Several ``--ckpt`` (each with its own ``--cfg_file``, or one cfg for all) draw one panel per checkpoint. Boxes and
points are in the LiDAR frame (x forward = up in the picture, y left = left); only the model's point-cloud range is
shown.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'tools')]

GT_COLOR = '#2ca02c'
PRED_COLOR = '#d62728'


def bev_corners(boxes):
    """(N, 7) LiDAR boxes -> (N, 4, 2) BEV corners (x, y), counter-clockwise from front-left."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    dx, dy, h = boxes[:, 3:4] / 2, boxes[:, 4:5] / 2, boxes[:, 6:7]
    local = np.stack([np.concatenate(c, 1) for c in ((dx, dy), (-dx, dy), (-dx, -dy), (dx, -dy))], 1)  # (N,4,2)
    cos, sin = np.cos(h)[:, :, None], np.sin(h)[:, :, None]
    rot = np.concatenate([local[..., :1] * cos - local[..., 1:] * sin, local[..., :1] * sin + local[..., 1:] * cos], 2)
    return rot + boxes[:, None, :2]


def draw_bev(ax, points, pc_range, gt_boxes=None, pred_boxes=None, title=None):
    """Draw one BEV panel on a matplotlib axis. The picture's up is LiDAR +x, its left is LiDAR +y."""
    mask = ((points[:, 0] >= pc_range[0]) & (points[:, 0] <= pc_range[3]) &
            (points[:, 1] >= pc_range[1]) & (points[:, 1] <= pc_range[4]))
    p = points[mask]
    ax.scatter(-p[:, 1], p[:, 0], s=0.2, c='#555555', linewidths=0)
    for boxes, color, lw in ((gt_boxes, GT_COLOR, 1.2), (pred_boxes, PRED_COLOR, 0.9)):
        if boxes is None or len(boxes) == 0:
            continue
        for k, c in enumerate(bev_corners(boxes)):
            ring = np.vstack([c, c[:1]])
            ax.plot(-ring[:, 1], ring[:, 0], color=color, lw=lw)
            front = (c[0] + c[3]) / 2  # heading tick: from the centre to the middle of the front edge
            ax.plot([-front[1], -boxes[k][1]], [front[0], boxes[k][0]], color=color, lw=lw)
    ax.set_xlim(-pc_range[4], -pc_range[1])
    ax.set_ylim(pc_range[0], pc_range[3])
    ax.set_aspect('equal')
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def predict(cfg_file, ckpt, index, data_path=None, score_thresh=0.3):
    """Run ``ckpt`` on validation sample ``index``.

    Returns (points (N, 4), gt_boxes (M, 7) or None, pred_boxes (K, 7) or None, point_cloud_range (6,), frame_id).
    """
    from pcdet.datasets import build_dataloader
    from pcdet.models import build_network, load_data_to_gpu
    from pcdet.utils import common_utils
    from report_utils import load_cfg

    cfg = load_cfg(cfg_file, data_path)
    logger = common_utils.create_logger()
    dataset, _, _ = build_dataloader(dataset_cfg=cfg.DATA_CONFIG, class_names=cfg.CLASS_NAMES, batch_size=1,
                                     dist=False, workers=0, logger=logger, training=False)
    batch = dataset.collate_batch([dataset[index]])
    points = batch['points'][:, 1:].copy()
    info = dataset.kitti_infos[index]
    annos = info.get('annos', {})
    keep = np.array([n != 'DontCare' for n in annos.get('name', [])], dtype=bool)
    gt = annos['gt_boxes_lidar'][keep[:len(annos['gt_boxes_lidar'])]] if 'gt_boxes_lidar' in annos else None
    boxes = None
    if ckpt is not None:
        model = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=dataset)
        model.load_params_from_file(str(ckpt), logger=logger, to_cpu=True, strict=True)
        model.eval()
        load_data_to_gpu(batch, device=torch.device('cpu'))
        with torch.no_grad():
            pred, _ = model(batch)
        sel = pred[0]['pred_scores'] >= score_thresh
        boxes = pred[0]['pred_boxes'][sel].cpu().numpy()
    return points, gt, boxes, np.asarray(cfg.DATA_CONFIG.POINT_CLOUD_RANGE), info['point_cloud']['lidar_idx']


def render(panels, out_file, ncols=None):
    """Render a list of panel dicts (keys of :func:`draw_bev`) into one PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    ncols = ncols or len(panels)
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.8 * nrows), squeeze=False)
    for ax, panel in zip(axes.ravel(), panels):
        draw_bev(ax, **panel)
    for ax in axes.ravel()[len(panels):]:
        ax.axis('off')
    fig.tight_layout()
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file, dpi=130)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--cfg_file', action='append', required=True, help='model config (once, or once per --ckpt)')
    p.add_argument('--ckpt', action='append', default=[], help='checkpoint(s); none draws GT only')
    p.add_argument('--frame_id', default=None, help='frame id in the validation split (default: --index)')
    p.add_argument('--index', type=int, default=0, help='index into the validation split')
    p.add_argument('--data_path', default=None, help='override DATA_CONFIG.DATA_PATH')
    p.add_argument('--score_thresh', type=float, default=0.3)
    p.add_argument('--out', default='bev.png')
    args = p.parse_args(argv)
    cfgs = args.cfg_file * len(args.ckpt) if len(args.cfg_file) == 1 else args.cfg_file
    if args.ckpt and len(cfgs) != len(args.ckpt):
        p.error(f'got {len(args.cfg_file)} --cfg_file for {len(args.ckpt)} --ckpt: give one, or one per checkpoint')
    index = args.index
    if args.frame_id is not None:
        from pcdet.datasets import build_dataloader
        from pcdet.utils import common_utils
        from report_utils import load_cfg
        cfg = load_cfg(cfgs[0] if cfgs else args.cfg_file[0], args.data_path)
        dataset, _, _ = build_dataloader(dataset_cfg=cfg.DATA_CONFIG, class_names=cfg.CLASS_NAMES, batch_size=1,
                                         dist=False, workers=0, logger=common_utils.create_logger(), training=False)
        ids = [i['point_cloud']['lidar_idx'] for i in dataset.kitti_infos]
        if args.frame_id not in ids:
            p.error(f'frame {args.frame_id} is not in the validation split ({len(ids)} frames, e.g. {ids[:3]})')
        index = ids.index(args.frame_id)
    panels = []
    for cfg_file, ckpt in (zip(cfgs, args.ckpt) if args.ckpt else [(args.cfg_file[0], None)]):
        pts, gt, boxes, pcr, fid = predict(cfg_file, ckpt, index, args.data_path, args.score_thresh)
        name = Path(ckpt).parent.parent.parent.name if ckpt else 'ground truth'
        panels.append(dict(points=pts, pc_range=pcr, gt_boxes=gt, pred_boxes=boxes, title=f'{fid}: {name}'))
    render(panels, args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
