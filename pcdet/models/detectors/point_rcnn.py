"""PointRCNN (Shi et al., CVPR 2019): PointNet2MSG -> PointHeadBox (segmentation + proposals) -> PointRCNNHead
(proposal NMS, RoI point pooling, refinement)."""
from .detector3d_template import Detector3DTemplate


class PointRCNN(Detector3DTemplate):
    def __init__(self, model_cfg, num_class, dataset):
        super().__init__(model_cfg=model_cfg, num_class=num_class, dataset=dataset)
        self.module_list = self.build_networks()

    def get_training_loss(self):
        """Point head + RoI head losses; tb_dict {point_loss_cls, point_pos_num, point_loss_box, rcnn_loss_cls,
        rcnn_loss_reg, rcnn_loss_corner, rcnn_loss}."""
        loss_point, tb_dict = self.point_head.get_loss()
        loss_rcnn, tb_dict = self.roi_head.get_loss(tb_dict)
        return loss_point + loss_rcnn, tb_dict, {}
