"""FitNet feature imitation (Romero et al., ICLR 2015) on a BEV map or on point features.

L = mean_{b,c,h,w} (A(F_S) - F_T)^2 with A a trainable 1x1 Conv2d + BN2d (C_S -> C_T). When the maps differ in
size the adapted student map is resized to the teacher's (bilinear, ``RESIZE: True``) or an error is raised.
Point features (V, C) (PointRCNN's ``point_features``, rows aligned on both sides: the same sampled points) go
through the same 1x1 adapter as a (1, C, V, 1) map, i.e. a per-point linear map + BN over the points:
L = mean_{v,c} (A(F_S) - F_T)^2.
"""
import torch.nn.functional as F

from .base import DistillLoss
from ..adapters import ConvAdapter


def match_bev(student_map, teacher_map, resize, where):
    """Bring the (B, C, H_s, W_s) student map to the teacher's (H_t, W_t) or raise naming ``where``."""
    if student_map.dim() != 4 or teacher_map.dim() != 4:
        raise ValueError(f'{where}: expected (B, C, H, W) maps, got {tuple(student_map.shape)} and '
                         f'{tuple(teacher_map.shape)}')
    if student_map.shape[-2:] != teacher_map.shape[-2:]:
        if not resize:
            raise ValueError(f'{where}: student map {tuple(student_map.shape)} and teacher map '
                             f'{tuple(teacher_map.shape)} differ in size; set RESIZE: True to interpolate')
        student_map = F.interpolate(student_map, size=teacher_map.shape[-2:], mode='bilinear', align_corners=False)
    return student_map


class FitNetLoss(DistillLoss):
    DEFAULT_WEIGHT = 1.0
    DEFAULTS = {
        'STUDENT_FEATURE': 'spatial_features_2d',
        'TEACHER_FEATURE': 'spatial_features_2d',
        'RESIZE': True,
        'STUDENT_CHANNELS': None,
        'TEACHER_CHANNELS': None,
    }

    def __init__(self, loss_cfg, where, channels_of, context=None):
        super().__init__(loss_cfg, where)
        o = self.opts
        self.student_features = [o['STUDENT_FEATURE']]
        self.teacher_features = [o['TEACHER_FEATURE']]
        self.adapter = ConvAdapter(*self.resolve_channels(channels_of))

    def forward(self, student_feats, teacher_feats, batch_dict):
        o = self.opts
        f_t = self.feature(teacher_feats, o['TEACHER_FEATURE'], 'teacher').detach()
        f_s = self.feature(student_feats, o['STUDENT_FEATURE'], 'student')
        if f_s.dim() == 2 and f_t.dim() == 2:
            if f_s.shape[0] != f_t.shape[0]:
                raise ValueError(f'{self.where}: student and teacher point features have {f_s.shape[0]} and '
                                 f'{f_t.shape[0]} rows; FitNet on points needs the same points on both sides')
            adapted = self.adapter(f_s.t().unsqueeze(0).unsqueeze(-1))[0, :, :, 0].t()     # (V, C_T)
            return F.mse_loss(adapted, f_t), {}
        f_s = match_bev(self.adapter(f_s), f_t, o['RESIZE'], self.where)
        return F.mse_loss(f_s, f_t), {}
