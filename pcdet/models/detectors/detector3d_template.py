"""Detector3DTemplate: builds the module pipeline from ``MODEL`` config blocks, post-processes, loads weights.

Pipeline slots (``module_topology``), each built from one config block whose ``NAME`` is looked up in the slot's
registry: vfe (VFE), backbone_3d (BACKBONE_3D), map_to_bev_module (MAP_TO_BEV), pfe (PFE), backbone_2d
(BACKBONE_2D), dense_head (DENSE_HEAD), point_head (POINT_HEAD), roi_head (ROI_HEAD). An absent block leaves
the slot ``None``. Geometry (grid_size, point_cloud_range, voxel_size) comes from the dataset only.
"""

import torch
import torch.nn as nn

from pcdet.utils.registry import lookup

from .. import backbones_2d, backbones_3d, dense_heads, roi_heads
from ..backbones_2d import map_to_bev
from ..backbones_3d import vfe
from ..model_utils import model_nms_utils


class Detector3DTemplate(nn.Module):
    """Args: model_cfg (the ``MODEL`` block), num_class, dataset (provides class_names, grid_size,
    point_cloud_range, voxel_size, point_feature_encoder.num_point_features, depth_downsample_factor)."""

    def __init__(self, model_cfg, num_class, dataset):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_class = num_class
        self.dataset = dataset
        self.class_names = dataset.class_names
        self.register_buffer('global_step', torch.LongTensor(1).zero_())
        self.module_topology = [
            'vfe', 'backbone_3d', 'map_to_bev_module', 'pfe',
            'backbone_2d', 'dense_head', 'point_head', 'roi_head'
        ]

    @property
    def mode(self):
        return 'TRAIN' if self.training else 'TEST'

    def update_global_step(self):
        self.global_step += 1

    def build_networks(self):
        model_info_dict = {
            'module_list': [],
            'num_rawpoint_features': self.dataset.point_feature_encoder.num_point_features,
            'num_point_features': self.dataset.point_feature_encoder.num_point_features,
            'grid_size': self.dataset.grid_size,
            'point_cloud_range': self.dataset.point_cloud_range,
            'voxel_size': self.dataset.voxel_size,
            'depth_downsample_factor': getattr(self.dataset, 'depth_downsample_factor', None),
        }
        for module_name in self.module_topology:
            module, model_info_dict = getattr(self, f'build_{module_name}')(model_info_dict=model_info_dict)
            self.add_module(module_name, module)
        return model_info_dict['module_list']

    def _geometry_kwargs(self, info):
        return {'grid_size': info['grid_size'], 'point_cloud_range': info['point_cloud_range'],
                'voxel_size': info['voxel_size'], 'depth_downsample_factor': info['depth_downsample_factor']}

    def build_vfe(self, model_info_dict):
        cfg = self.model_cfg.get('VFE', None)
        if cfg is None:
            return None, model_info_dict
        cls = lookup(vfe.__all__, cfg.NAME, 'VFE', 'MODEL.VFE.NAME')
        module = cls(model_cfg=cfg, num_point_features=model_info_dict['num_rawpoint_features'],
                     **self._geometry_kwargs(model_info_dict))
        model_info_dict['num_point_features'] = module.get_output_feature_dim()
        model_info_dict['module_list'].append(module)
        return module, model_info_dict

    def build_backbone_3d(self, model_info_dict):
        cfg = self.model_cfg.get('BACKBONE_3D', None)
        if cfg is None:
            return None, model_info_dict
        cls = lookup(backbones_3d.__all__, cfg.NAME, '3D backbone', 'MODEL.BACKBONE_3D.NAME')
        module = cls(model_cfg=cfg, input_channels=model_info_dict['num_point_features'],
                     **self._geometry_kwargs(model_info_dict))
        model_info_dict['module_list'].append(module)
        model_info_dict['num_point_features'] = module.num_point_features
        model_info_dict['backbone_channels'] = getattr(module, 'backbone_channels', None)
        return module, model_info_dict

    def build_map_to_bev_module(self, model_info_dict):
        cfg = self.model_cfg.get('MAP_TO_BEV', None)
        if cfg is None:
            return None, model_info_dict
        cls = lookup(map_to_bev.__all__, cfg.NAME, 'BEV projection', 'MODEL.MAP_TO_BEV.NAME')
        module = cls(model_cfg=cfg, grid_size=model_info_dict['grid_size'])
        model_info_dict['module_list'].append(module)
        model_info_dict['num_bev_features'] = module.num_bev_features
        return module, model_info_dict

    def build_backbone_2d(self, model_info_dict):
        cfg = self.model_cfg.get('BACKBONE_2D', None)
        if cfg is None:
            return None, model_info_dict
        cls = lookup(backbones_2d.__all__, cfg.NAME, '2D backbone', 'MODEL.BACKBONE_2D.NAME')
        module = cls(model_cfg=cfg, input_channels=model_info_dict.get('num_bev_features', None))
        model_info_dict['module_list'].append(module)
        model_info_dict['num_bev_features'] = module.num_bev_features
        return module, model_info_dict

    def build_dense_head(self, model_info_dict):
        cfg = self.model_cfg.get('DENSE_HEAD', None)
        if cfg is None:
            return None, model_info_dict
        cls = lookup(dense_heads.__all__, cfg.NAME, 'dense head', 'MODEL.DENSE_HEAD.NAME')
        input_channels = model_info_dict.get('num_bev_features', cfg.get('INPUT_FEATURES', None))
        module = cls(model_cfg=cfg, input_channels=input_channels,
                     num_class=self.num_class if not cfg.CLASS_AGNOSTIC else 1, class_names=self.class_names,
                     predict_boxes_when_training=bool(self.model_cfg.get('ROI_HEAD', False)),
                     **self._geometry_kwargs(model_info_dict))
        model_info_dict['module_list'].append(module)
        return module, model_info_dict

    def _unsupported(self, key, model_info_dict):
        if self.model_cfg.get(key, None) is not None:
            raise NotImplementedError(f'detector3d_template.py: MODEL.{key} is not supported by this toolbox '
                                      '(PointPillars / SECOND / PointRCNN only); remove the block from the config')
        return None, model_info_dict

    def build_pfe(self, model_info_dict):
        return self._unsupported('PFE', model_info_dict)

    def build_point_head(self, model_info_dict):
        cfg = self.model_cfg.get('POINT_HEAD', None)
        if cfg is None:
            return None, model_info_dict
        cls = lookup(dense_heads.__all__, cfg.NAME, 'point head', 'MODEL.POINT_HEAD.NAME')
        if cfg.get('USE_POINT_FEATURES_BEFORE_FUSION', False):
            num_point_features = model_info_dict['num_point_features_before_fusion']
        else:
            num_point_features = model_info_dict['num_point_features']
        module = cls(model_cfg=cfg, input_channels=num_point_features,
                     num_class=self.num_class if not cfg.CLASS_AGNOSTIC else 1,
                     predict_boxes_when_training=bool(self.model_cfg.get('ROI_HEAD', False)))
        model_info_dict['module_list'].append(module)
        return module, model_info_dict

    def build_roi_head(self, model_info_dict):
        cfg = self.model_cfg.get('ROI_HEAD', None)
        if cfg is None:
            return None, model_info_dict
        cls = lookup(roi_heads.__all__, cfg.NAME, 'RoI head', 'MODEL.ROI_HEAD.NAME')
        module = cls(model_cfg=cfg, input_channels=model_info_dict['num_point_features'],
                     backbone_channels=model_info_dict.get('backbone_channels', None),
                     point_cloud_range=model_info_dict['point_cloud_range'], voxel_size=model_info_dict['voxel_size'],
                     num_class=self.num_class if not cfg.CLASS_AGNOSTIC else 1)
        model_info_dict['module_list'].append(module)
        return module, model_info_dict

    def forward(self, batch_dict):
        """Runs every module; train -> ({'loss'}, tb_dict, disp_dict), eval -> (pred_dicts, recall_dicts)."""
        for cur_module in self.module_list:
            batch_dict = cur_module(batch_dict)
        if self.training:
            loss, tb_dict, disp_dict = self.get_training_loss()
            return {'loss': loss}, tb_dict, disp_dict
        return self.post_processing(batch_dict)

    def get_training_loss(self):
        """Anchor-head detectors: the dense head's loss (tb_dict adds ``loss_rpn``)."""
        loss_rpn, tb_dict = self.dense_head.get_loss()
        tb_dict = {'loss_rpn': loss_rpn.item(), **tb_dict}
        return loss_rpn, tb_dict, {}

    def post_processing(self, batch_dict):
        """
        Reads:
            batch_cls_preds (B, N, C) logits (or probabilities if cls_preds_normalized), batch_box_preds
            (B, N, 7), batch_size; gt_boxes (B, M, 8) if present (for recall).
        Returns:
            pred_dicts: per sample {pred_boxes (K, 7), pred_scores (K,), pred_labels (K,) 1-based long};
            recall_dict: {gt, roi_<t>, rcnn_<t>} counts (empty if no gt_boxes); rcnn_<t> counts the final boxes, or
            with ``rois`` (two-stage) every refined box before score threshold and NMS, as OpenPCDet.
        """
        post_process_cfg = self.model_cfg.POST_PROCESSING
        nms_config = post_process_cfg.NMS_CONFIG
        recall_dict, pred_dicts = {}, []
        for index in range(int(batch_dict['batch_size'])):
            if batch_dict.get('batch_index', None) is not None:
                batch_mask = batch_dict['batch_index'] == index
            else:
                batch_mask = index
            box_preds = batch_dict['batch_box_preds'][batch_mask]
            cls_preds = batch_dict['batch_cls_preds'][batch_mask]
            src_cls_preds = cls_preds
            if cls_preds.shape[1] not in (1, self.num_class):
                raise ValueError(f'detector3d_template.py: batch_cls_preds has {cls_preds.shape[1]} classes, '
                                 f'expected 1 or {self.num_class}')
            if not batch_dict['cls_preds_normalized']:
                cls_preds = torch.sigmoid(cls_preds)
            if nms_config.MULTI_CLASSES_NMS:
                label_mapping = torch.arange(1, cls_preds.shape[1] + 1, device=cls_preds.device)
                final_scores, final_labels, final_boxes = model_nms_utils.multi_classes_nms(
                    cls_scores=cls_preds, box_preds=box_preds, nms_config=nms_config,
                    score_thresh=post_process_cfg.SCORE_THRESH)
                final_labels = label_mapping[final_labels]
            else:
                cls_scores, label_preds = torch.max(cls_preds, dim=-1)
                if batch_dict.get('has_class_labels', False):
                    label_key = 'roi_labels' if 'roi_labels' in batch_dict else 'batch_pred_labels'
                    label_preds = batch_dict[label_key][index]
                else:
                    label_preds = label_preds + 1
                selected, selected_scores = model_nms_utils.class_agnostic_nms(
                    box_scores=cls_scores, box_preds=box_preds, nms_config=nms_config,
                    score_thresh=post_process_cfg.SCORE_THRESH)
                if post_process_cfg.OUTPUT_RAW_SCORE:
                    selected_scores = torch.max(src_cls_preds, dim=-1)[0][selected]
                final_scores, final_labels, final_boxes = selected_scores, label_preds[selected], box_preds[selected]
            # two-stage models (rois present): recall of all refined boxes, before score threshold and NMS (OpenPCDet)
            recall_dict = self.generate_recall_record(
                box_preds=final_boxes if 'rois' not in batch_dict else box_preds, recall_dict=recall_dict,
                batch_index=index, data_dict=batch_dict,
                thresh_list=post_process_cfg.RECALL_THRESH_LIST)
            pred_dicts.append({'pred_boxes': final_boxes, 'pred_scores': final_scores, 'pred_labels': final_labels})
        return pred_dicts, recall_dict

    @staticmethod
    def generate_recall_record(box_preds, recall_dict, batch_index, data_dict=None, thresh_list=None):
        """Add, per IoU threshold, how many GT boxes of sample ``batch_index`` have a 3D-IoU match > thresh."""
        if data_dict is None or 'gt_boxes' not in data_dict:
            return recall_dict
        from pcdet.ops.iou3d_nms import iou3d_nms_utils
        rois = data_dict['rois'][batch_index] if 'rois' in data_dict else None
        gt_boxes = data_dict['gt_boxes'][batch_index]
        if len(recall_dict) == 0:
            recall_dict = {'gt': 0}
            for t in thresh_list:
                recall_dict[f'roi_{t}'] = 0
                recall_dict[f'rcnn_{t}'] = 0
        cur_gt = gt_boxes[gt_boxes.abs().sum(dim=1) > 0]
        if cur_gt.shape[0] > 0:
            if box_preds.shape[0] > 0:
                iou3d_rcnn = iou3d_nms_utils.boxes_iou3d_gpu(box_preds[:, 0:7], cur_gt[:, 0:7])
            else:
                iou3d_rcnn = torch.zeros((0, cur_gt.shape[0]), device=cur_gt.device)
            iou3d_roi = iou3d_nms_utils.boxes_iou3d_gpu(rois[:, 0:7], cur_gt[:, 0:7]) if rois is not None else None
            for t in thresh_list:
                if iou3d_rcnn.shape[0] > 0:
                    recall_dict[f'rcnn_{t}'] += int((iou3d_rcnn.max(dim=0)[0] > t).sum().item())
                if iou3d_roi is not None:
                    recall_dict[f'roi_{t}'] += int((iou3d_roi.max(dim=0)[0] > t).sum().item())
            recall_dict['gt'] += int(cur_gt.shape[0])
        return recall_dict

    def load_params_from_file(self, filename, logger, to_cpu=False, strict=False, pre_trained_path=None,
                              allow_unsafe=False):
        """Load ``model_state`` of a checkpoint through the one checkpoint loader (``pcdet.utils.checkpoint_utils``).

        strict=False (``--pretrained_model``): loads the tensors that fit, logs every key that was not updated
        and ``==> Done (loaded X/Y)``. strict=True (evaluation): ``CheckpointMismatchError`` listing missing /
        unexpected / mis-shaped keys, nothing loaded. spconv weight layouts are converted either way.
        ``pre_trained_path``: a second file whose ``model_state`` is merged over the first (OpenPCDet).
        """
        from pcdet.utils import checkpoint_utils
        logger.info('==> Loading parameters from checkpoint %s to %s', filename, 'CPU' if to_cpu else 'its device')
        map_location = torch.device('cpu') if to_cpu else self.global_step.device
        checkpoint = checkpoint_utils.load_checkpoint(filename, map_location, allow_unsafe, logger)
        if pre_trained_path is not None:
            pretrain = checkpoint_utils.load_checkpoint(pre_trained_path, map_location, allow_unsafe, logger)
            merged = dict(checkpoint_utils.model_state_of(checkpoint, filename))
            merged.update(checkpoint_utils.model_state_of(pretrain, pre_trained_path))
            checkpoint = {'model_state': merged, 'version': checkpoint.get('version')}
        version = checkpoint.get('version', None) if isinstance(checkpoint, dict) else None
        if version is not None:
            logger.info('==> Checkpoint trained from version: %s', version)
        match = checkpoint_utils.load_model_state(self, filename, strict=strict, logger=logger, checkpoint=checkpoint)
        for key in match.model_state:
            if key not in match.fitting:
                logger.info('Not updated weight %s: %s', key, str(tuple(match.model_state[key].shape)))
        logger.info('==> Done (loaded %d/%d)', len(match.fitting), len(match.model_state))

    def load_params_with_optimizer(self, filename, to_cpu=False, optimizer=None, logger=None, allow_unsafe=False):
        """Resume: strict weight loading plus the optimizer state (``checkpoint_utils.load_params_with_optimizer``).
        Returns ``(it, epoch)``."""
        from pcdet.utils import checkpoint_utils
        map_location = torch.device('cpu') if to_cpu else self.global_step.device
        return checkpoint_utils.load_params_with_optimizer(self, filename, optimizer=optimizer, logger=logger,
                                                           map_location=map_location, allow_unsafe=allow_unsafe)
