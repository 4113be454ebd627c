"""3D backbone registry (config key ``MODEL.BACKBONE_3D.NAME``).

``spconv_backbone`` imports spconv only when a backbone is built, so this registry is spconv-free at import.
"""
from pcdet.utils.registry import make_registry

from .spconv_backbone import VoxelBackBone8x

__all__ = make_registry([
    ('VoxelBackBone8x', VoxelBackBone8x),
], what='BACKBONE_3D registry')
