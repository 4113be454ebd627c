"""AnchorHeadSingle: 1x1 convolutions for class scores, box residuals and direction bins on one BEV map."""
import numpy as np
import torch.nn as nn

from .anchor_head_template import AnchorHeadTemplate


class AnchorHeadSingle(AnchorHeadTemplate):
    def __init__(self, model_cfg, input_channels, num_class, class_names, grid_size, point_cloud_range,
                 predict_boxes_when_training=True, **kwargs):
        super().__init__(model_cfg=model_cfg, num_class=num_class, class_names=class_names, grid_size=grid_size,
                         point_cloud_range=point_cloud_range,
                         predict_boxes_when_training=predict_boxes_when_training)
        self.num_anchors_per_location = sum(self.num_anchors_per_location)
        self.conv_cls = nn.Conv2d(input_channels, self.num_anchors_per_location * self.num_class, kernel_size=1)
        self.conv_box = nn.Conv2d(input_channels, self.num_anchors_per_location * self.box_coder.code_size,
                                  kernel_size=1)
        if self.model_cfg.get('USE_DIRECTION_CLASSIFIER', None):
            self.conv_dir_cls = nn.Conv2d(input_channels, self.num_anchors_per_location * self.model_cfg.NUM_DIR_BINS,
                                          kernel_size=1)
        else:
            self.conv_dir_cls = None
        self.init_weights()

    def init_weights(self):
        pi = 0.01  # prior foreground probability: bias -log(99), so the focal loss starts near background
        nn.init.constant_(self.conv_cls.bias, -np.log((1 - pi) / pi))
        nn.init.normal_(self.conv_box.weight, mean=0, std=0.001)

    def predict_maps(self, spatial_features_2d):
        """The raw head outputs, channels last (what ``forward`` stores and the ONNX export returns).

        Args:
            spatial_features_2d (B, C, H, W) float BEV map.
        Returns:
            cls_preds (B, H, W, A*num_class) logits, box_preds (B, H, W, A*code_size) anchor residuals,
            dir_cls_preds (B, H, W, A*NUM_DIR_BINS) logits or None without a direction classifier.
        """
        cls_preds = self.conv_cls(spatial_features_2d).permute(0, 2, 3, 1).contiguous()
        box_preds = self.conv_box(spatial_features_2d).permute(0, 2, 3, 1).contiguous()
        dir_cls_preds = None
        if self.conv_dir_cls is not None:
            dir_cls_preds = self.conv_dir_cls(spatial_features_2d).permute(0, 2, 3, 1).contiguous()
        return cls_preds, box_preds, dir_cls_preds

    def forward(self, data_dict):
        """
        Reads:
            spatial_features_2d (B, C, H, W) float; gt_boxes (B, M, 8) when training; batch_size int.
        Writes (eval, or training with predict_boxes_when_training):
            batch_cls_preds (B, N, num_class) logits, batch_box_preds (B, N, 7) LiDAR boxes,
            cls_preds_normalized False. N = H * W * anchors per location.
        """
        cls_preds, box_preds, dir_cls_preds = self.predict_maps(data_dict['spatial_features_2d'])
        self.forward_ret_dict['cls_preds'] = cls_preds
        self.forward_ret_dict['box_preds'] = box_preds
        if dir_cls_preds is not None:
            self.forward_ret_dict['dir_cls_preds'] = dir_cls_preds
        if self.training:
            self.forward_ret_dict.update(self.assign_targets(gt_boxes=data_dict['gt_boxes']))
        if not self.training or self.predict_boxes_when_training:
            batch_cls_preds, batch_box_preds = self.generate_predicted_boxes(
                batch_size=int(data_dict['batch_size']), cls_preds=cls_preds, box_preds=box_preds,
                dir_cls_preds=dir_cls_preds)
            data_dict['batch_cls_preds'] = batch_cls_preds
            data_dict['batch_box_preds'] = batch_box_preds
            data_dict['cls_preds_normalized'] = False
        return data_dict
