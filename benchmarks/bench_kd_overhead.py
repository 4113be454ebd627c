"""Cost of PointDistiller per training step, relative to the unavoidable teacher forward.

Times (CPU by default, CUDA with --device cuda), seconds per step:
- student: one training step of the student alone (forward + backward + Adam step);
- teacher fwd: the teacher's full forward (vfe -> dense head, eval mode, no_grad, no post-processing);
- KD: one Distiller training step (teacher forward as the Distiller runs it, student step, graph + loss);
- KD full-teacher: the same with TEACHER.EARLY_STOP False (the teacher runs to its dense head).
The four are timed in interleaved rounds (median per closure), so drift of a shared machine hits all alike.
ratio = KD / (student + teacher fwd); target <= 1.10.

Scenes: the real KITTI sample frames (``--kitti_root``, default ../shared/data/kitti_samples), points in the
camera field of view (KITTI's FOV_POINTS_ONLY) cropped to each config's POINT_CLOUD_RANGE and pillarised
here with a plain numpy voxeliser (same layout as the dataset's ``transform_points_to_voxels``); GT boxes
from label_2 (Car / Pedestrian / Cyclist) in the LiDAR frame.
The teacher has random weights (timing does not depend on them).

    python benchmarks/bench_kd_overhead.py [--reps 3] [--batch 4] [--configs synth kitti]
"""
import argparse
import glob
import logging
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from pcdet.utils.timing import interleaved_rounds  # noqa: E402

CONFIGS = {
    'synth': 'kitti_synth_models/pointpillar_4x_pointdistiller.yaml',
    'kitti': 'kitti_models/pointpillar_4x_pointdistiller.yaml',
}


def voxelise(points, ds):
    """(P, 4) points -> voxels (V, T, 4), num_points (V,), coords (V, 3) [z, y, x], first-come order as OpenPCDet."""
    rng, vs = ds.point_cloud_range, ds.voxel_size
    keep = np.all((points[:, :3] >= rng[:3]) & (points[:, :3] < rng[3:]), axis=1)
    pts = points[keep]
    idx = ((pts[:, :3] - rng[:3]) / vs).astype(np.int64)
    gx, gy, _ = ds.grid_size
    lin = idx[:, 2] * gy * gx + idx[:, 1] * gx + idx[:, 0]
    uniq, first, inverse = np.unique(lin, return_index=True, return_inverse=True)
    order = np.argsort(first, kind='stable')[:ds.max_voxels]          # voxels in order of first point
    slot = np.full(uniq.shape[0], -1, dtype=np.int64)
    slot[order] = np.arange(order.shape[0])
    vid = slot[inverse]
    valid = vid >= 0
    pv, pp = vid[valid], pts[valid]
    srt = np.argsort(pv, kind='stable')                 # stable: points keep their order inside a voxel
    pv_s = pv[srt]
    rank = np.arange(pv_s.shape[0]) - np.searchsorted(pv_s, pv_s, side='left')
    ok = rank < ds.max_points_per_voxel
    voxels = np.zeros((order.shape[0], ds.max_points_per_voxel, 4), dtype=np.float32)
    voxels[pv_s[ok], rank[ok]] = pp[srt][ok]
    counts = np.minimum(np.bincount(pv, minlength=order.shape[0]), ds.max_points_per_voxel)
    u = uniq[order]
    coords = np.stack([u // (gy * gx), (u // gx) % gy, u % gx], axis=1).astype(np.int32)
    return voxels, counts.astype(np.int32), coords


def png_size(path):
    """(height, width) of a PNG, read from its IHDR header."""
    with open(path, 'rb') as f:
        head = f.read(24)
    return int.from_bytes(head[20:24], 'big'), int.from_bytes(head[16:20], 'big')


def fov_mask(points, calib, hw):
    """Points inside the camera image (KITTI's FOV_POINTS_ONLY), as the KITTI dataset keeps them."""
    img, depth = calib.lidar_to_img(points[:, :3])
    return (img[:, 0] >= 0) & (img[:, 0] < hw[1]) & (img[:, 1] >= 0) & (img[:, 1] < hw[0]) & (depth >= 0)


def load_frames(root, ds, batch):
    from pcdet.utils import box_utils, calibration_kitti, object3d_kitti

    ids = sorted(os.path.basename(f)[:-4] for f in glob.glob(os.path.join(root, 'training', 'velodyne', '*.bin')))
    if len(ids) < batch:
        raise FileNotFoundError(f'need {batch} velodyne frames under {root}/training/velodyne, found {len(ids)}')
    vox, nums, coords, boxes = [], [], [], []
    for b, fid in enumerate(ids[:batch]):
        pts = np.fromfile(os.path.join(root, 'training', 'velodyne', fid + '.bin'), dtype=np.float32).reshape(-1, 4)
        calib = calibration_kitti.Calibration(os.path.join(root, 'training', 'calib', fid + '.txt'))
        pts = pts[fov_mask(pts, calib, png_size(os.path.join(root, 'training', 'image_2', fid + '.png')))]
        v, n, c = voxelise(pts, ds)
        vox.append(v)
        nums.append(n)
        coords.append(np.concatenate([np.full((c.shape[0], 1), b, np.int32), c], axis=1))
        objs = [o for o in object3d_kitti.get_objects_from_label(os.path.join(root, 'training', 'label_2',
                                                                               fid + '.txt'))
                if o.cls_type in ds.class_names]
        if objs:
            cam = np.array([[*o.loc, o.l, o.h, o.w, o.ry] for o in objs], dtype=np.float32)
            lidar = box_utils.boxes3d_kitti_camera_to_lidar(cam, calib)
            cls = np.array([ds.class_names.index(o.cls_type) + 1 for o in objs], dtype=np.float32)
            boxes.append(np.concatenate([lidar, cls[:, None]], axis=1))
        else:
            boxes.append(np.zeros((0, 8), np.float32))
    m = max(1, max(b.shape[0] for b in boxes))
    gt = np.zeros((batch, m, 8), np.float32)
    for b, bx in enumerate(boxes):
        gt[b, :bx.shape[0]] = bx
    return {'voxels': torch.from_numpy(np.concatenate(vox)), 'voxel_num_points': torch.from_numpy(np.concatenate(nums)),
            'voxel_coords': torch.from_numpy(np.concatenate(coords)), 'gt_boxes': torch.from_numpy(gt),
            'batch_size': batch}


def to_device(batch, device):
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def train_step(model, batch, device):
    """A closure running one training step (forward, backward, Adam step) of ``model`` on ``batch``."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad()
        ret, _, _ = model(to_device(batch, device))
        ret['loss'].backward()
        opt.step()
    return step


def bench_config(name, rel_cfg, args, device, logger):
    from easydict import EasyDict

    from pcdet.config import cfg_from_yaml_file
    from pcdet.datasets.dataset_meta import DatasetMeta
    from pcdet.distill import build_distiller
    from pcdet.models import build_network

    path = os.path.join(args.cfgs_dir, rel_cfg)
    cfg = EasyDict()
    cfg_from_yaml_file(path, cfg)
    cfg.TEACHER.ALLOW_RANDOM_INIT = True
    ds = DatasetMeta.from_cfg(cfg)
    batch = load_frames(args.kitti_root, ds, args.batch)
    torch.manual_seed(0)
    student = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=ds).to(device)
    steps = {}
    distillers = []
    for early in (True, False):
        cfg.TEACHER.EARLY_STOP = early
        distiller = build_distiller(cfg, student, logger, cfg_dir=os.path.dirname(path)).to(device)
        distiller.train()              # both Distillers share the student: a recorder only captures while
        distillers.append(distiller)   # its own step runs
        steps['kd' if early else 'kd_full'] = train_step(distiller, batch, device)
    teacher = distillers[0].teacher
    steps['student'] = train_step(student, batch, device)

    @torch.no_grad()
    def teacher_fwd():
        d = to_device(batch, device)
        for module in teacher.module_list:
            d = module(d)
    steps['teacher'] = teacher_fwd
    sync = torch.cuda.synchronize if device.type == 'cuda' else None
    results = {name: float(np.median(t)) for name, t in interleaved_rounds(steps, args.reps, synchronize=sync).items()}
    pd = distillers[0].resolved['LOSSES'][0]
    results['pillars'] = int(batch['voxel_coords'].shape[0])
    results['N'], results['K'] = pd['NUM_NODES'], pd['K']
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--configs', nargs='+', default=['synth', 'kitti'], choices=sorted(CONFIGS))
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfgs_dir', default=os.path.join(ROOT, 'tools', 'cfgs'))
    parser.add_argument('--kitti_root', default=os.path.join(ROOT, '..', 'shared', 'data', 'kitti_samples'))
    args = parser.parse_args()
    device = torch.device(args.device)
    logger = logging.getLogger('bench_kd_overhead')
    print(f'device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, median of {args.reps}')
    head = (f'{"config":8s} {"pillars":>8s} {"N":>5s} {"K":>4s} {"student":>8s} {"teacher":>8s} {"KD":>8s} '
            f'{"ratio":>6s} {"KD full-T":>9s} {"ratio":>6s}')
    rows = []
    for name in args.configs:
        r = bench_config(name, CONFIGS[name], args, device, logger)
        base = r['student'] + r['teacher']
        rows.append(f'{name:8s} {r["pillars"]:8d} {r["N"]:5d} {r["K"]:4d} {r["student"]:8.3f} {r["teacher"]:8.3f} '
                    f'{r["kd"]:8.3f} {r["kd"] / base:6.3f} {r["kd_full"]:9.3f} {r["kd_full"] / base:6.3f}')
        print(rows[-1], flush=True)
    print(head)
    print('\n'.join(rows))
    print('ratio = KD step / (student step + teacher forward); target <= 1.10 '
          '(KD: teacher stops after its last recorded feature; KD full-T: teacher runs to its dense head)')


if __name__ == '__main__':
    main()
