"""Box coders: regression targets of LiDAR boxes relative to anchors (OpenPCDet's ``ResidualCoder``).

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


__all__ = make_registry([('ResidualCoder', ResidualCoder)], what='box coder registry')


def build_box_coder(name, **kwargs):
    """Instantiate the coder registered as ``name`` (config key ``TARGET_ASSIGNER_CONFIG.BOX_CODER``)."""
    return lookup(__all__, name, 'box coder', 'DENSE_HEAD.TARGET_ASSIGNER_CONFIG.BOX_CODER')(**kwargs)
