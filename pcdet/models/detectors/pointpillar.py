"""PointPillars (Lang et al., CVPR 2019): PillarVFE -> PointPillarScatter -> BaseBEVBackbone -> AnchorHeadSingle."""
from .detector3d_template import Detector3DTemplate


class PointPillar(Detector3DTemplate):
    def __init__(self, model_cfg, num_class, dataset):
        super().__init__(model_cfg=model_cfg, num_class=num_class, dataset=dataset)
        self.module_list = self.build_networks()
