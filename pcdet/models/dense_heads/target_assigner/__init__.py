"""Target assigner registry (config key ``DENSE_HEAD.TARGET_ASSIGNER_CONFIG.NAME``)."""
from pcdet.utils.registry import make_registry

from .anchor_generator import AnchorGenerator
from .axis_aligned_target_assigner import AxisAlignedTargetAssigner

__all__ = make_registry([
    ('AxisAlignedTargetAssigner', AxisAlignedTargetAssigner),
], what='target assigner registry')

ANCHOR_GENERATORS = make_registry([('AnchorGenerator', AnchorGenerator)], what='anchor generator registry')
