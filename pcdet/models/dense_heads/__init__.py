"""Dense head registry (config key ``MODEL.DENSE_HEAD.NAME``)."""
from pcdet.utils.registry import make_registry

from .anchor_head_single import AnchorHeadSingle
from .anchor_head_template import AnchorHeadTemplate

__all__ = make_registry([
    ('AnchorHeadTemplate', AnchorHeadTemplate),
    ('AnchorHeadSingle', AnchorHeadSingle),
], what='DENSE_HEAD registry')
