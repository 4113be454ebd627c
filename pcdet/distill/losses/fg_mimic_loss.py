"""Foreground-masked feature imitation (FG, Wang et al. CVPR 2019 / Mimic style) on a BEV map.

The mask marks BEV cells whose centre lies inside a box (GT boxes ``gt_boxes`` (B, M, 8) from the batch, or the
teacher's own boxes ``batch_box_preds`` (B, A, 7) with max sigmoid class score > ``SCORE_THRESH``, or both), each
box enlarged by ``ENLARGE`` metres in length and width; the cell under each box centre is always included so
small objects keep at least one cell. Cell centres follow from ``POINT_CLOUD_RANGE`` (the dataset's, via the
Distiller context) and the map size: the map (B, C, H, W) covers x along W and y along H (OpenPCDet BEV layout),
so the feature stride never has to be configured.

L = sum_{b,h,w} m * mean_c (A(F_S) - F_T)^2 / max(sum m, 1)  (+ BG_WEIGHT * the same over the background),
A = 1x1 Conv2d + BN2d (C_S -> C_T).
"""
import torch

from .base import DistillLoss, check_choice
from .fitnet_loss import match_bev
from ..adapters import ConvAdapter


def bev_box_mask(boxes, batch_size, height, width, pc_range, enlarge=0.0):
    """Foreground mask of BEV cells.

    Args:
        boxes: list (length B) of (M_b, 7+) float LiDAR boxes [x, y, z, dx, dy, dz, heading, ...].
        pc_range: [x_min, y_min, z_min, x_max, y_max, z_max] metres.

    Returns:
        (B, H, W) bool mask, True where the cell centre is inside a box (or holds its centre).
    """
    device = boxes[0].device if len(boxes) else torch.device('cpu')
    cell_x = (pc_range[3] - pc_range[0]) / width
    cell_y = (pc_range[4] - pc_range[1]) / height
    xs = pc_range[0] + (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * cell_x
    ys = pc_range[1] + (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * cell_y
    mask = torch.zeros(batch_size, height, width, dtype=torch.bool, device=device)
    for b in range(batch_size):
        bx = boxes[b].float()
        bx = bx[(bx[:, 3] > 0) & (bx[:, 4] > 0)]
        if bx.shape[0] == 0:
            continue
        dx = xs.view(1, 1, -1) - bx[:, 0].view(-1, 1, 1)                  # (M, 1, W)
        dy = ys.view(1, -1, 1) - bx[:, 1].view(-1, 1, 1)                  # (M, H, 1)
        cos, sin = torch.cos(bx[:, 6]).view(-1, 1, 1), torch.sin(bx[:, 6]).view(-1, 1, 1)
        local_x = dx * cos + dy * sin                                      # rotate by -heading
        local_y = -dx * sin + dy * cos
        half_l = (bx[:, 3] / 2 + enlarge).view(-1, 1, 1)
        half_w = (bx[:, 4] / 2 + enlarge).view(-1, 1, 1)
        mask[b] = ((local_x.abs() <= half_l) & (local_y.abs() <= half_w)).any(dim=0)
        col = ((bx[:, 0] - pc_range[0]) / cell_x).floor().long()
        row = ((bx[:, 1] - pc_range[1]) / cell_y).floor().long()
        ok = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        mask[b, row[ok], col[ok]] = True
    return mask


class FGMimicLoss(DistillLoss):
    DEFAULT_WEIGHT = 1.0

    @classmethod
    def check_applies(cls, loss_cfg, student, where):
        if getattr(student, 'map_to_bev_module', None) is None and getattr(student, 'backbone_2d', None) is None:
            raise ValueError(f'{where}: FGMimicLoss imitates BEV feature maps under box masks, and '
                             f'{type(student).__name__} has no BEV map (no MAP_TO_BEV / BACKBONE_2D module); it does '
                             'not apply to this detector (FitNetLoss or PointDistillerLoss on point_features do)')
    DEFAULTS = {
        'STUDENT_FEATURE': 'spatial_features_2d',
        'TEACHER_FEATURE': 'spatial_features_2d',
        'MASK_SOURCE': 'gt',          # gt | teacher | both
        'SCORE_THRESH': 0.3,
        'MAX_TEACHER_BOXES': 100,
        'ENLARGE': 0.0,
        'BG_WEIGHT': 0.0,
        'RESIZE': True,
        'POINT_CLOUD_RANGE': None,     # None -> the dataset's point_cloud_range
        'STUDENT_CHANNELS': None,
        'TEACHER_CHANNELS': None,
    }

    def __init__(self, loss_cfg, where, channels_of, context=None):
        super().__init__(loss_cfg, where)
        o = self.opts
        check_choice(o, 'MASK_SOURCE', ('gt', 'teacher', 'both'), where)
        pc_range = o['POINT_CLOUD_RANGE'] or (context or {}).get('point_cloud_range')
        if pc_range is None or len(pc_range) != 6:
            raise ValueError(f'{where}: POINT_CLOUD_RANGE unknown (not in the loss block nor the dataset)')
        o['POINT_CLOUD_RANGE'] = [float(v) for v in pc_range]
        self.student_features = [o['STUDENT_FEATURE']]
        self.teacher_features = [o['TEACHER_FEATURE']]
        if o['MASK_SOURCE'] != 'gt':
            self.teacher_features += ['batch_box_preds', 'batch_cls_preds']
        self.adapter = ConvAdapter(*self.resolve_channels(channels_of))

    def _boxes(self, teacher_feats, batch_dict, batch_size):
        o = self.opts
        per_sample = [[] for _ in range(batch_size)]
        if o['MASK_SOURCE'] in ('gt', 'both'):
            gt = self.batch_value(batch_dict, 'gt_boxes')
            for b in range(batch_size):
                per_sample[b].append(gt[b, :, :7])
        if o['MASK_SOURCE'] in ('teacher', 'both'):
            boxes = self.feature(teacher_feats, 'batch_box_preds', 'teacher')
            logits = self.feature(teacher_feats, 'batch_cls_preds', 'teacher')
            scores = torch.sigmoid(logits.float()).amax(dim=-1)                       # (B, A)
            for b in range(batch_size):
                keep = torch.nonzero(scores[b] > o['SCORE_THRESH'], as_tuple=False).view(-1)
                keep = keep[torch.argsort(scores[b, keep], descending=True)[:o['MAX_TEACHER_BOXES']]]
                per_sample[b].append(boxes[b, keep, :7])
        return [torch.cat(parts, dim=0) for parts in per_sample]

    def forward(self, student_feats, teacher_feats, batch_dict):
        o = self.opts
        f_t = self.feature(teacher_feats, o['TEACHER_FEATURE'], 'teacher').detach()
        f_s = match_bev(self.adapter(self.feature(student_feats, o['STUDENT_FEATURE'], 'student')), f_t,
                        o['RESIZE'], self.where)
        b, _, h, w = f_t.shape
        with torch.no_grad():
            fg = bev_box_mask(self._boxes(teacher_feats, batch_dict, b), b, h, w, o['POINT_CLOUD_RANGE'],
                              float(o['ENLARGE'])).to(f_t.dtype)
        per_cell = (f_s - f_t).pow(2).mean(dim=1)                              # (B, H, W)
        loss = (per_cell * fg).sum() / fg.sum().clamp(min=1.0)
        tb = {'fg_cells': float(fg.sum())}
        if o['BG_WEIGHT']:
            bg = 1.0 - fg
            loss = loss + o['BG_WEIGHT'] * (per_cell * bg).sum() / bg.sum().clamp(min=1.0)
        return loss, tb
