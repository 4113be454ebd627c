"""BEV projection registry (config key ``MODEL.MAP_TO_BEV.NAME``)."""
from pcdet.utils.registry import make_registry

from .height_compression import HeightCompression
from .pointpillar_scatter import PointPillarScatter

__all__ = make_registry([
    ('HeightCompression', HeightCompression),
    ('PointPillarScatter', PointPillarScatter),
], what='MAP_TO_BEV registry')
