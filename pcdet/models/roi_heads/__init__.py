"""RoI head registry (config key ``MODEL.ROI_HEAD.NAME``). Importing it imports no compiled op: the PointNet++
and RoI pooling ops load when a head is built."""
from pcdet.utils.registry import make_registry

from .pointrcnn_head import PointRCNNHead
from .roi_head_template import RoIHeadTemplate

__all__ = make_registry([
    ('RoIHeadTemplate', RoIHeadTemplate),
    ('PointRCNNHead', PointRCNNHead),
], what='ROI_HEAD registry')
