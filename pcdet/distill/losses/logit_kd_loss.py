"""Logit KD on the dense (anchor) head outputs: soft classification targets and box regression to the teacher.

Recorded tensors are the raw head convolutions (``module:dense_head.conv_cls`` (B, A*C, H, W) and
``module:dense_head.conv_box`` (B, A*7, H, W)); teacher and student share anchors, so they align one to one.
On a point head (PointRCNN: ``module:point_head.cls_layers`` (V, C), ``module:point_head.box_layers`` (V, 8))
the rows are the same sampled points on both sides; ``HEADING_INDEX: -1`` there, since PointResidualCoder
encodes the heading as (cos, sin) and the plain difference applies.
- cls: ``CLS_MODE: bce`` -> BCE(sigmoid(z_S / T), sigmoid(z_T / T)) * T^2;
  ``mse`` -> (sigmoid(z_S / T) - sigmoid(z_T / T))^2; mean over anchors and classes.
- box: smooth-L1 (beta 1/9, OpenPCDet's) of the encoded residual difference, the heading channel as
  sin(r_S - r_T) (OpenPCDet's sin-difference); each anchor weighted by the teacher's max class probability
  (``BOX_MASK: teacher_score``, normalised to sum 1) or uniformly (``all``).
Total = CLS_WEIGHT * cls + BOX_WEIGHT * box (then times WEIGHT in the Distiller).
"""
import torch
import torch.nn.functional as F

from .base import DistillLoss, check_choice


def anchors_last(head_map, code_size):
    """(B, A*code, H, W) head map -> (B, H*W*A, code), the order OpenPCDet uses for anchors; a point head's
    (V, code) output (PointRCNN's ``point_head.box_layers``) -> (1, V, code)."""
    if head_map.dim() == 2:
        if head_map.shape[1] != code_size:
            raise ValueError(f'point head output with {head_map.shape[1]} channels, CODE_SIZE is {code_size}')
        return head_map.unsqueeze(0)
    b, ch, h, w = head_map.shape
    if ch % code_size:
        raise ValueError(f'head map with {ch} channels is not a multiple of {code_size}')
    return head_map.permute(0, 2, 3, 1).reshape(b, h * w * (ch // code_size), code_size)


class LogitKDLoss(DistillLoss):
    DEFAULT_WEIGHT = 1.0

    @classmethod
    def check_applies(cls, loss_cfg, student, where):
        opts = dict(cls.DEFAULTS, **loss_cfg)
        for key in ('CLS_FEATURE', 'BOX_FEATURE'):
            name = opts[key]
            if not name or not str(name).startswith('module:'):
                continue
            path = str(name)[len('module:'):]
            try:
                student.get_submodule(path)
            except AttributeError:
                hint = (' (a point head: CLS_FEATURE module:point_head.cls_layers, BOX_FEATURE '
                        'module:point_head.box_layers, CODE_SIZE 8, HEADING_INDEX -1)'
                        if getattr(student, 'point_head', None) is not None else '')
                raise ValueError(f'{where}: LogitKDLoss reads {key} {name!r}, and {type(student).__name__} has no '
                                 f'module {path!r}; with these settings it does not apply to this detector{hint}') \
                    from None
    DEFAULTS = {
        'CLS_FEATURE': 'module:dense_head.conv_cls',
        'BOX_FEATURE': 'module:dense_head.conv_box',
        'CODE_SIZE': 7,
        'TEMPERATURE': 1.0,
        'CLS_MODE': 'bce',
        'CLS_WEIGHT': 1.0,
        'BOX_WEIGHT': 1.0,
        'BOX_MASK': 'teacher_score',
        'HEADING_INDEX': 6,
    }

    def __init__(self, loss_cfg, where, channels_of=None, context=None):
        super().__init__(loss_cfg, where)
        o = self.opts
        check_choice(o, 'CLS_MODE', ('bce', 'mse'), where)
        check_choice(o, 'BOX_MASK', ('teacher_score', 'all'), where)
        names = [n for n in (o['CLS_FEATURE'], o['BOX_FEATURE']) if n]
        if not names:
            raise ValueError(f'{where}: set CLS_FEATURE and/or BOX_FEATURE')
        if o['BOX_FEATURE'] and o['BOX_MASK'] == 'teacher_score' and not o['CLS_FEATURE']:
            raise ValueError(f'{where}: BOX_MASK teacher_score needs CLS_FEATURE')
        self.student_features = list(names)
        self.teacher_features = list(names)

    def _pair(self, s, t, name):
        zs, zt = self.feature(s, name, 'student'), self.feature(t, name, 'teacher').detach()
        if zs.shape != zt.shape:
            raise ValueError(f'{self.where}: {name} shapes differ, student {tuple(zs.shape)} vs teacher '
                             f'{tuple(zt.shape)} (logit KD needs the same anchors and classes)')
        return zs, zt

    def forward(self, student_feats, teacher_feats, batch_dict):
        o = self.opts
        tb, total, t_prob = {}, 0.0, None
        if o['CLS_FEATURE']:
            zs, zt = self._pair(student_feats, teacher_feats, o['CLS_FEATURE'])
            temp = float(o['TEMPERATURE'])
            p_t = torch.sigmoid(zt / temp)
            if o['CLS_MODE'] == 'bce':
                cls = F.binary_cross_entropy_with_logits(zs / temp, p_t) * temp ** 2
            else:
                cls = (torch.sigmoid(zs / temp) - p_t).pow(2).mean()
            t_prob = torch.sigmoid(zt)
            total = total + o['CLS_WEIGHT'] * cls
            tb['cls'] = float(cls.detach())
        if o['BOX_FEATURE']:
            rs, rt = self._pair(student_feats, teacher_feats, o['BOX_FEATURE'])
            code = int(o['CODE_SIZE'])
            rs, rt = anchors_last(rs, code), anchors_last(rt, code)           # (B, HWA, code)
            diff = rs - rt
            hi = int(o['HEADING_INDEX'])
            if hi >= 0:   # an angle residual; -1: none (PointResidualCoder encodes the heading as cos, sin)
                diff = torch.cat([diff[..., :hi], torch.sin(diff[..., hi:hi + 1]), diff[..., hi + 1:]], dim=-1)
            per_anchor = F.smooth_l1_loss(diff, torch.zeros_like(diff), beta=1.0 / 9.0, reduction='none').sum(-1)
            if o['BOX_MASK'] == 'teacher_score':
                b, n_anchor = per_anchor.shape
                probs = t_prob.unsqueeze(0) if t_prob.dim() == 2 else t_prob.permute(0, 2, 3, 1)
                scores = probs.reshape(b, n_anchor, -1).amax(dim=-1)                      # (B, HWA) or (1, V)
                weight = scores / scores.sum().clamp(min=1e-6)
                box = (per_anchor * weight).sum()
            else:
                box = per_anchor.mean()
            total = total + o['BOX_WEIGHT'] * box
            tb['box'] = float(box.detach())
        return total, tb
