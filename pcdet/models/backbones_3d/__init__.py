"""3D backbone registry (config key ``MODEL.BACKBONE_3D.NAME``).

``spconv_backbone`` imports spconv and ``pointnet2_backbone`` the PointNet++ ops only when a backbone is built, so
this registry imports neither.
"""
from pcdet.utils.registry import make_registry

from .pointnet2_backbone import PointNet2MSG
from .spconv_backbone import VoxelBackBone8x

__all__ = make_registry([
    ('VoxelBackBone8x', VoxelBackBone8x),
    ('PointNet2MSG', PointNet2MSG),
], what='BACKBONE_3D registry')
