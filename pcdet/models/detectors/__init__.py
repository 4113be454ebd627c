"""Detector registry (config key ``MODEL.NAME``). Importing it does not import spconv."""
from pcdet.utils.registry import lookup, make_registry

from .detector3d_template import Detector3DTemplate
from .point_rcnn import PointRCNN
from .pointpillar import PointPillar
from .second_net import SECONDNet

__all__ = make_registry([
    ('Detector3DTemplate', Detector3DTemplate),
    ('PointPillar', PointPillar),
    ('SECONDNet', SECONDNet),
    ('PointRCNN', PointRCNN),
], what='detector registry')


def build_detector(model_cfg, num_class, dataset):
    cls = lookup(__all__, model_cfg.NAME, 'detector', 'MODEL.NAME')
    return cls(model_cfg=model_cfg, num_class=num_class, dataset=dataset)
