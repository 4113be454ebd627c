"""ONNX Runtime backend for an exported PointPillars-family network (see ``pcdet.deploy.onnx_export``).

``OnnxPillarDetector`` stands in for the PyTorch detector wherever a detector is evaluated: ``model(batch_dict)``
returns ``(pred_dicts, recall_dict)``. It runs the exported graph per sample and then the detector's own
``dense_head.generate_predicted_boxes`` (anchor decoding, direction bins) and ``post_processing`` (score
threshold, rotated NMS, recall), so everything after the head outputs is the PyTorch path's code.
"""
import json
import os

import numpy as np
import torch
import torch.nn as nn

from .onnx_export import INPUT_NAMES, OUTPUT_NAMES, check_exportable


def import_deploy_package(name):
    """Import ``onnx`` or ``onnxruntime``, or raise an ImportError that says how to install them."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f'pcdet.deploy needs the {name!r} package, which is not installed: '
                          'pip install -e .[deploy]  (installs onnx and onnxruntime)') from exc


def create_session(onnx_path, num_threads=None, providers=None):
    """An ``onnxruntime.InferenceSession`` for ``onnx_path``.

    Args:
        num_threads: intra-op threads (None: ONNX Runtime's default, one per core); inter-op is 1.
        providers: execution providers (default ``['CPUExecutionProvider']``).
    """
    ort = import_deploy_package('onnxruntime')
    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), sess_options=options,
                                providers=list(providers or ['CPUExecutionProvider']))


def read_metadata(session):
    """The export's metadata (``pcdet.deploy.onnx_export.deploy_metadata``), JSON-decoded; {} if absent."""
    props = session.get_modelmeta().custom_metadata_map
    out = {}
    for key, val in props.items():
        try:
            out[key] = json.loads(val)
        except ValueError:
            out[key] = val
    return out


class OnnxPillarDetector(nn.Module):
    """The PyTorch detector's evaluation interface with the network run by ONNX Runtime.

    Args:
        detector: the detector built from the same config as the export (its weights are not used; it
            provides anchors, box coder, post-processing config and class names). Set to eval mode.
        onnx_path: the exported file; its geometry and output shapes are checked against ``detector``.
        num_threads, providers: see ``create_session``.

    ``forward(batch_dict)`` reads ``voxels`` (V, P, C), ``voxel_num_points`` (V,), ``voxel_coords`` (V, 4)
    [b, z, y, x] (float or int tensors, as a collated and ``load_data_to_gpu``-ed batch holds them) and
    ``batch_size``; writes ``cls_preds`` (B, H, W, A*num_class), ``box_preds`` (B, H, W, A*7),
    ``dir_cls_preds`` (B, H, W, A*bins) and, through the detector's own functions, ``batch_cls_preds`` (B, N,
    num_class), ``batch_box_preds`` (B, N, 7) LiDAR boxes, ``cls_preds_normalized``; returns the detector's
    ``post_processing(batch_dict)``: (pred_dicts, recall_dict). Inference only: ``train()`` raises.
    """

    def __init__(self, detector, onnx_path, num_threads=None, providers=None):
        super().__init__()
        check_exportable(detector.model_cfg)
        if not os.path.isfile(onnx_path):
            raise FileNotFoundError(f'ONNX file not found: {onnx_path} (write one with tools/export_onnx.py)')
        self.detector = detector.eval()
        self.onnx_path = str(onnx_path)
        self.session = create_session(onnx_path, num_threads=num_threads, providers=providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._check_matches_detector()
        self.training = False

    def train(self, mode=True):
        if mode:
            raise RuntimeError('OnnxPillarDetector is inference only: train the PyTorch detector and export it again')
        return super().train(False)

    def _check_matches_detector(self):
        """Input/output names, output shapes and the stored geometry must match the detector's config."""
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUT_NAMES) or self.output_names not in (list(OUTPUT_NAMES), list(OUTPUT_NAMES[:2])):
            raise ValueError(f'{self.onnx_path}: inputs {names} / outputs {self.output_names} are not those of '
                             f'pcdet.deploy.onnx_export ({list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)})')
        head = self.detector.dense_head
        h, w = (int(n) for n in head.anchors[0].shape[1:3])  # anchors (1, H, W, sizes, rotations, code_size)
        expected = {'cls_preds': [1, h, w, head.num_anchors_per_location * head.num_class],
                    'box_preds': [1, h, w, head.num_anchors_per_location * head.box_coder.code_size]}
        if head.conv_dir_cls is not None:
            expected['dir_cls_preds'] = [1, h, w, head.num_anchors_per_location * head.model_cfg.NUM_DIR_BINS]
        got = {o.name: list(o.shape) for o in self.session.get_outputs()}
        if got != expected:
            raise ValueError(f'{self.onnx_path} does not fit this config: its outputs have shapes {got}, the '
                             f'config\'s head gives {expected} (exported from another config?)')
        meta = read_metadata(self.session)
        for key, ours in (('point_cloud_range', self.detector.dataset.point_cloud_range),
                          ('voxel_size', self.detector.dataset.voxel_size)):
            if key in meta and not np.allclose(meta[key], np.asarray(ours, dtype=np.float64), atol=1e-6):
                raise ValueError(f'{self.onnx_path} was exported for {key} {meta[key]}, the config has '
                                 f'{[float(v) for v in ours]}')

    def run_network(self, batch_dict):
        """Run the graph on every sample of ``batch_dict`` and fill the head outputs and decoded boxes."""
        coords = batch_dict['voxel_coords']
        device = coords.device
        voxels = batch_dict['voxels'].detach().cpu().numpy().astype(np.float32, copy=False)
        num_points = batch_dict['voxel_num_points'].detach().cpu().numpy().astype(np.int32)
        coords = coords.detach().cpu().numpy().astype(np.int32)
        batch_size = int(batch_dict['batch_size'])
        outputs = {name: [] for name in self.output_names}
        for b in range(batch_size):
            mask = coords[:, 0] == b
            sample_coords = coords[mask].copy()
            sample_coords[:, 0] = 0  # the graph scatters one sample
            feeds = {'voxels': np.ascontiguousarray(voxels[mask]),
                     'voxel_num_points': np.ascontiguousarray(num_points[mask]),
                     'voxel_coords': sample_coords}
            for name, value in zip(self.output_names, self.session.run(self.output_names, feeds)):
                outputs[name].append(value)
        for name, values in outputs.items():
            batch_dict[name] = torch.from_numpy(np.concatenate(values, axis=0)).to(device)
        batch_cls_preds, batch_box_preds = self.detector.dense_head.generate_predicted_boxes(
            batch_size=batch_size, cls_preds=batch_dict['cls_preds'], box_preds=batch_dict['box_preds'],
            dir_cls_preds=batch_dict.get('dir_cls_preds', None))
        batch_dict['batch_cls_preds'] = batch_cls_preds
        batch_dict['batch_box_preds'] = batch_box_preds
        batch_dict['cls_preds_normalized'] = False
        return batch_dict

    def forward(self, batch_dict):
        return self.detector.post_processing(self.run_network(batch_dict))
