"""VFE registry (config key ``MODEL.VFE.NAME``)."""
from pcdet.utils.registry import make_registry

from .mean_vfe import MeanVFE
from .pillar_vfe import PillarVFE
from .vfe_template import VFETemplate

__all__ = make_registry([
    ('VFETemplate', VFETemplate),
    ('MeanVFE', MeanVFE),
    ('PillarVFE', PillarVFE),
], what='VFE registry')
