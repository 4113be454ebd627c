"""Box coders: regression targets of LiDAR boxes relative to anchors (OpenPCDet's ``ResidualCoder``) or points
(``PointResidualCoder``, PointRCNN's point head).

Boxes and anchors are LiDAR ``(..., 7 + C) [x, y, z, dx, dy, dz, heading, *extra]`` float tensors, geometric
centre, heading counter-clockwise from +x. Encoding (SECOND / PointPillars):
``xt = (xg - xa) / d``, ``yt = (yg - ya) / d`` with ``d = sqrt(dxa^2 + dya^2)``, ``zt = (zg - za) / dza``,
``dxt = log(dxg / dxa)`` (same for dy, dz), ``rt = rg - ra`` (or ``cos``/``sin`` differences), extras ``g - a``.
"""
import torch

from pcdet.utils.registry import lookup, make_registry


class ResidualCoder:
    """Residual anchor coder.

    Args:
        code_size: 7 + number of extra box attributes (e.g. velocities).
        encode_angle_by_sincos: encode heading as ``(cos rg - cos ra, sin rg - sin ra)``; code_size grows by 1.
        **kwargs: ignored (OpenPCDet passes ``num_dir_bins`` to every coder).
    """

    def __init__(self, code_size=7, encode_angle_by_sincos=False, **kwargs):
        self.code_size = code_size
        self.encode_angle_by_sincos = encode_angle_by_sincos
        if self.encode_angle_by_sincos:
            self.code_size += 1

    def encode_torch(self, boxes, anchors):
        """Encode ``boxes`` (N, 7 + C) against ``anchors`` (N, 7 + C) -> (N, code_size) targets."""
        # sizes must be positive for the log; clamp copies (OpenPCDet clamps the caller's tensors in place)
        anchors = torch.cat([anchors[..., :3], anchors[..., 3:6].clamp_min(1e-5), anchors[..., 6:]], dim=-1)
        boxes = torch.cat([boxes[..., :3], boxes[..., 3:6].clamp_min(1e-5), boxes[..., 6:]], dim=-1)
        xa, ya, za, dxa, dya, dza, ra, *cas = torch.split(anchors, 1, dim=-1)
        xg, yg, zg, dxg, dyg, dzg, rg, *cgs = torch.split(boxes, 1, dim=-1)
        diagonal = torch.sqrt(dxa ** 2 + dya ** 2)
        xt = (xg - xa) / diagonal
        yt = (yg - ya) / diagonal
        zt = (zg - za) / dza
        dxt = torch.log(dxg / dxa)
        dyt = torch.log(dyg / dya)
        dzt = torch.log(dzg / dza)
        if self.encode_angle_by_sincos:
            rts = [torch.cos(rg) - torch.cos(ra), torch.sin(rg) - torch.sin(ra)]
        else:
            rts = [rg - ra]
        cts = [g - a for g, a in zip(cgs, cas)]
        return torch.cat([xt, yt, zt, dxt, dyt, dzt, *rts, *cts], dim=-1)

    def decode_torch(self, box_encodings, anchors):
        """Decode ``box_encodings`` (..., code_size) with ``anchors`` (..., 7 + C) -> boxes (..., 7 + C)."""
        xa, ya, za, dxa, dya, dza, ra, *cas = torch.split(anchors, 1, dim=-1)
        if self.encode_angle_by_sincos:
            xt, yt, zt, dxt, dyt, dzt, cost, sint, *cts = torch.split(box_encodings, 1, dim=-1)
        else:
            xt, yt, zt, dxt, dyt, dzt, rt, *cts = torch.split(box_encodings, 1, dim=-1)
        diagonal = torch.sqrt(dxa ** 2 + dya ** 2)
        xg = xt * diagonal + xa
        yg = yt * diagonal + ya
        zg = zt * dza + za
        dxg = torch.exp(dxt) * dxa
        dyg = torch.exp(dyt) * dya
        dzg = torch.exp(dzt) * dza
        if self.encode_angle_by_sincos:
            rg = torch.atan2(sint + torch.sin(ra), cost + torch.cos(ra))
        else:
            rg = rt + ra
        cgs = [t + a for t, a in zip(cts, cas)]
        return torch.cat([xg, yg, zg, dxg, dyg, dzg, rg, *cgs], dim=-1)


class PointResidualCoder:
    """Point-anchored coder of PointRCNN's point head: every point is the anchor of the box it predicts.

    Code (N, 8 + C) ``[xt, yt, zt, dxt, dyt, dzt, cos(rg), sin(rg), *extra]``. With ``use_mean_size`` the anchor
    size ``(dxa, dya, dza)`` is the mean size of the box's class (``mean_size[class - 1]``):
    ``xt = (xg - xp) / d``, ``yt = (yg - yp) / d`` with ``d = sqrt(dxa^2 + dya^2)``, ``zt = (zg - zp) / dza``,
    ``dxt = log(dxg / dxa)`` (same for dy, dz); without it ``xt = xg - xp`` and ``dxt = log(dxg)``. The heading
    is decoded as ``atan2(sin, cos)``, so it comes back in (-pi, pi]. Extra box columns are copied unchanged.

    Args:
        code_size: 8 (+ extra columns). use_mean_size: see above.
        mean_size: (num_class, 3) positive anchor sizes (dx, dy, dz) per class, 1-based class order; required
            with use_mean_size. Kept on the CPU and moved to the inputs' device on use.
    """

    def __init__(self, code_size=8, use_mean_size=True, mean_size=None, **kwargs):
        self.code_size = code_size
        self.use_mean_size = use_mean_size
        self.mean_size = None
        if use_mean_size:
            if mean_size is None:
                raise ValueError('PointResidualCoder: use_mean_size needs mean_size (num_class, 3) in '
                                 'TARGET_CONFIG.BOX_CODER_CONFIG')
            self.mean_size = torch.tensor(mean_size, dtype=torch.float32).view(-1, 3)
            if not bool((self.mean_size > 0).all()):
                raise ValueError(f'PointResidualCoder: mean_size must be positive, got {mean_size}')

    def _anchor_sizes(self, classes, like):
        """(..., 3) mean sizes of the 1-based ``classes`` (...,), on the device and dtype of ``like``."""
        if classes is None:
            raise ValueError('PointResidualCoder: use_mean_size needs the 1-based class of every box')
        classes = classes.long()
        if classes.numel() > 0 and (int(classes.min()) < 1 or int(classes.max()) > self.mean_size.shape[0]):
            raise ValueError(f'PointResidualCoder: classes must be in [1, {self.mean_size.shape[0]}], got '
                             f'[{int(classes.min())}, {int(classes.max())}]')
        return self.mean_size.to(device=like.device, dtype=like.dtype)[classes - 1]

    def encode_torch(self, gt_boxes, points, gt_classes=None):
        """
        Args:
            gt_boxes: (N, 7 + C) LiDAR boxes; points: (N, 3) LiDAR [x, y, z] of the points they belong to;
            gt_classes: (N,) 1-based class of each box (needed with use_mean_size).
        Returns:
            (N, 8 + C) codes.
        """
        sizes = gt_boxes[..., 3:6].clamp_min(1e-5)  # the log needs positive sizes (a copy: inputs unchanged)
        offsets = gt_boxes[..., 0:3] - points[..., 0:3]
        if self.use_mean_size:
            anchor = self._anchor_sizes(gt_classes, gt_boxes)
            diagonal = torch.sqrt(anchor[..., 0:1] ** 2 + anchor[..., 1:2] ** 2)
            centre_codes = offsets / torch.cat([diagonal, diagonal, anchor[..., 2:3]], dim=-1)
            size_codes = torch.log(sizes / anchor)
        else:
            centre_codes, size_codes = offsets, torch.log(sizes)
        heading = gt_boxes[..., 6:7]
        return torch.cat([centre_codes, size_codes, torch.cos(heading), torch.sin(heading), gt_boxes[..., 7:]],
                         dim=-1)

    def decode_torch(self, box_encodings, points, pred_classes=None):
        """
        Args:
            box_encodings: (N, 8 + C) codes; points: (N, 3) LiDAR anchor points; pred_classes: (N,) 1-based
            class whose mean size to use (needed with use_mean_size).
        Returns:
            (N, 7 + C) LiDAR boxes [x, y, z, dx, dy, dz, heading, *extra].
        """
        centre_codes, size_codes = box_encodings[..., 0:3], box_encodings[..., 3:6]
        if self.use_mean_size:
            anchor = self._anchor_sizes(pred_classes, box_encodings)
            diagonal = torch.sqrt(anchor[..., 0:1] ** 2 + anchor[..., 1:2] ** 2)
            centres = centre_codes * torch.cat([diagonal, diagonal, anchor[..., 2:3]], dim=-1) + points[..., 0:3]
            sizes = torch.exp(size_codes) * anchor
        else:
            centres, sizes = centre_codes + points[..., 0:3], torch.exp(size_codes)
        heading = torch.atan2(box_encodings[..., 7:8], box_encodings[..., 6:7])
        return torch.cat([centres, sizes, heading, box_encodings[..., 8:]], dim=-1)


__all__ = make_registry([
    ('ResidualCoder', ResidualCoder),
    ('PointResidualCoder', PointResidualCoder),
], what='box coder registry')


def build_box_coder(name, cfg_key='DENSE_HEAD.TARGET_ASSIGNER_CONFIG.BOX_CODER', **kwargs):
    """Instantiate the coder registered as ``name``; ``cfg_key`` names the config key in the unknown-name error."""
    return lookup(__all__, name, 'box coder', cfg_key)(**kwargs)
