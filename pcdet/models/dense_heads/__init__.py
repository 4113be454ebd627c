"""Dense head registry (config keys ``MODEL.DENSE_HEAD.NAME`` and ``MODEL.POINT_HEAD.NAME``)."""
from pcdet.utils.registry import make_registry

from .anchor_head_single import AnchorHeadSingle
from .anchor_head_template import AnchorHeadTemplate
from .point_head_box import PointHeadBox
from .point_head_template import PointHeadTemplate

__all__ = make_registry([
    ('AnchorHeadTemplate', AnchorHeadTemplate),
    ('AnchorHeadSingle', AnchorHeadSingle),
    ('PointHeadTemplate', PointHeadTemplate),
    ('PointHeadBox', PointHeadBox),
], what='DENSE_HEAD registry')
