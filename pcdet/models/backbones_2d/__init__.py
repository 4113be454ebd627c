"""2D backbone registry (config key ``MODEL.BACKBONE_2D.NAME``)."""
from pcdet.utils.registry import make_registry

from .base_bev_backbone import BaseBEVBackbone

__all__ = make_registry([
    ('BaseBEVBackbone', BaseBEVBackbone),
], what='BACKBONE_2D registry')
