"""ONNX export of the network of a PointPillars-family detector (pillar VFE -> scatter -> 2D backbone -> head).

What the graph holds and what it does not:

- In the graph: the point decoration and PFN layers of ``PillarVFE``, ``PointPillarScatter``, the 2D backbone
  and the three 1x1 convolutions of ``AnchorHeadSingle`` (``predict_maps``). The modules are the detector's
  own, called as the PyTorch path calls them, so the graph computes what the detector computes.
- Outside the graph, in the project's Python code: voxelisation (the dataset's ``transform_points_to_voxels``),
  box decoding (``AnchorHeadTemplate.generate_predicted_boxes``) and score threshold + rotated NMS
  (``Detector3DTemplate.post_processing``); ``pcdet.deploy.onnx_runtime`` runs them around the session.

Graph inputs (one sample, V = number of pillars, a dynamic axis; P = MAX_POINTS_PER_VOXEL, C = point features):
``voxels`` (V, P, C) float32 LiDAR points per pillar, zero-padded; ``voxel_num_points`` (V,) int32;
``voxel_coords`` (V, 4) int32 [b, z, y, x] grid indices with b = 0.
Graph outputs (channels last, as ``AnchorHeadSingle`` stores them; H, W = BEV grid / feature-map stride,
A = anchors per location): ``cls_preds`` (1, H, W, A*num_class) logits, ``box_preds`` (1, H, W, A*7) anchor
residuals, ``dir_cls_preds`` (1, H, W, A*NUM_DIR_BINS) logits (absent without a direction classifier).

Exporter: torch.onnx's dynamo exporter (``dynamo=True``, torch.export + onnxscript), chosen over the TorchScript
exporter (``dynamo=False``) because the pillar count is declared as a symbolic dimension (``torch.export.Dim``)
and torch.export checks it: an op that specialised on the example's pillar count (a data-dependent Python branch,
a size baked into a reshape) fails the export with a constraint error instead of giving a graph that is silently
wrong for other counts, which is what tracing does. Both exporters were tried on torch 2.13: both give ORT
head outputs within 2e-6 of PyTorch's from 0 to 16,737 pillars (the largest full KITTI sample frame) on this
network with default-initialised weights; the TorchScript one is deprecated (DeprecationWarning "legacy
TorchScript-based ONNX export") and exports in about half the time (1 s instead of 2 s after the first export
of a process).
"""
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

INPUT_NAMES = ('voxels', 'voxel_num_points', 'voxel_coords')
OUTPUT_NAMES = ('cls_preds', 'box_preds', 'dir_cls_preds')
DEFAULT_OPSET = 18

# config NAME per slot that the export supports, and why other detectors cannot be exported
_SUPPORTED = {'VFE': 'PillarVFE', 'MAP_TO_BEV': 'PointPillarScatter', 'DENSE_HEAD': 'AnchorHeadSingle'}


class NotExportableError(ValueError):
    """The detector is not of the PointPillars family; the message says which block and why."""


def check_exportable(model_cfg):
    """Raise ``NotExportableError`` unless ``model_cfg`` (the ``MODEL`` block) is PillarVFE -> PointPillarScatter
    -> BACKBONE_2D -> AnchorHeadSingle with no 3D backbone and no point or second stage. Reads the config only
    (nothing is built)."""
    name = model_cfg.get('NAME', '?')
    if model_cfg.get('BACKBONE_3D', None) is not None:
        raise NotExportableError(
            f'{name} cannot be exported to ONNX: its 3D backbone {model_cfg.BACKBONE_3D.NAME} runs spconv sparse '
            'convolutions, which have no ONNX operator (only the PointPillars family, PillarVFE -> '
            'PointPillarScatter -> 2D backbone -> AnchorHeadSingle, is exported)')
    for key, expected in _SUPPORTED.items():
        block = model_cfg.get(key, None)
        got = block.get('NAME', None) if block is not None else None
        if got != expected:
            raise NotExportableError(
                f'{name} cannot be exported to ONNX: MODEL.{key}.NAME is {got!r}, the export supports {expected!r} '
                '(PointPillars family only)')
    if model_cfg.get('BACKBONE_2D', None) is None:
        raise NotExportableError(f'{name} cannot be exported to ONNX: it has no MODEL.BACKBONE_2D block')
    for key in ('PFE', 'POINT_HEAD', 'ROI_HEAD'):
        if model_cfg.get(key, None) is not None:
            raise NotExportableError(f'{name} cannot be exported to ONNX: MODEL.{key} (a point or second stage) is '
                                     'not part of the PointPillars export, which ends at the dense head')


class PillarNetworkGraph(nn.Module):
    """Tensor-argument wrapper around a PointPillars detector's network, for tracing.

    Holds the detector's own ``vfe``, ``map_to_bev_module``, ``backbone_2d`` and ``dense_head`` (shared, not
    copied: the ONNX initialiser names are the checkpoint's parameter names). ``forward(voxels,
    voxel_num_points, voxel_coords)`` (shapes in the module docstring; one sample, b = 0) returns
    ``(cls_preds, box_preds[, dir_cls_preds])``.
    """

    def __init__(self, detector):
        super().__init__()
        check_exportable(detector.model_cfg)
        self.vfe = detector.vfe
        self.map_to_bev_module = detector.map_to_bev_module
        self.backbone_2d = detector.backbone_2d
        self.dense_head = detector.dense_head
        self.has_dir_cls = detector.dense_head.conv_dir_cls is not None

    @property
    def output_names(self):
        return list(OUTPUT_NAMES if self.has_dir_cls else OUTPUT_NAMES[:2])

    def forward(self, voxels, voxel_num_points, voxel_coords):
        batch_dict = {'voxels': voxels, 'voxel_num_points': voxel_num_points, 'voxel_coords': voxel_coords,
                      'batch_size': 1}
        for module in (self.vfe, self.map_to_bev_module, self.backbone_2d):
            batch_dict = module(batch_dict)
        cls_preds, box_preds, dir_cls_preds = self.dense_head.predict_maps(batch_dict['spatial_features_2d'])
        if dir_cls_preds is None:
            return cls_preds, box_preds
        return cls_preds, box_preds, dir_cls_preds


def example_inputs(meta, num_pillars=2000, seed=0):
    """Random pillars of one sample at distinct BEV cells of ``meta``'s grid (values do not matter for tracing).

    Args:
        meta: a dataset or ``DatasetMeta`` (point_cloud_range, voxel_size, grid_size, max_points_per_voxel,
            point_feature_encoder.num_point_features).
    Returns:
        voxels (V, P, C) float32 in the LiDAR frame (points inside their pillar, zero-padded), voxel_num_points
        (V,) int32 in [1, P], voxel_coords (V, 4) int32 [0, 0, y, x]; V = min(num_pillars, nx * ny).
    """
    rng = np.random.default_rng(seed)
    nx, ny = int(meta.grid_size[0]), int(meta.grid_size[1])
    num_points = int(meta.max_points_per_voxel)
    channels = int(meta.point_feature_encoder.num_point_features)
    v = min(int(num_pillars), nx * ny)
    cells = rng.choice(nx * ny, size=v, replace=False)
    y, x = cells // nx, cells % nx
    counts = rng.integers(1, num_points + 1, size=v)
    rng_lo, size = np.asarray(meta.point_cloud_range[:3]), np.asarray(meta.voxel_size)
    voxels = np.zeros((v, num_points, channels), dtype=np.float32)
    offsets = rng.random((v, num_points, 3))
    cell = np.stack([x, y, np.zeros_like(x)], axis=1)[:, None, :]
    voxels[..., :3] = rng_lo + (cell + offsets) * size
    if channels > 3:
        voxels[..., 3:] = rng.random((v, num_points, channels - 3))
    voxels[np.arange(num_points)[None, :] >= counts[:, None]] = 0.0
    coords = np.stack([np.zeros_like(x), np.zeros_like(x), y, x], axis=1).astype(np.int32)
    return torch.from_numpy(voxels), torch.from_numpy(counts.astype(np.int32)), torch.from_numpy(coords)


def deploy_metadata(detector, cfg_file=None):
    """The geometry an ONNX file was exported for (stored as ONNX metadata_props, JSON values)."""
    from pcdet.version import __version__
    dataset = detector.dataset
    meta = {
        'pcdet_version': __version__,
        'detector': detector.model_cfg.NAME,
        'class_names': list(detector.class_names),
        'point_cloud_range': [float(v) for v in dataset.point_cloud_range],
        'voxel_size': [float(v) for v in dataset.voxel_size],
        'grid_size': [int(v) for v in dataset.grid_size],
        'num_point_features': int(dataset.point_feature_encoder.num_point_features),
    }
    if cfg_file is not None:
        meta['cfg_file'] = str(cfg_file)
    return {key: json.dumps(val) for key, val in meta.items()}


def export_onnx(detector, out_path, example=None, opset=DEFAULT_OPSET, cfg_file=None):
    """Export ``detector``'s network (eval mode, on the CPU) to ``out_path`` and check the file with onnx.

    Args:
        detector: a built PointPillars-family detector (weights loaded); moved to the CPU and set to eval.
        example: (voxels, voxel_num_points, voxel_coords) as from ``example_inputs`` (default: 2,000 random
            pillars); any pillar count runs afterwards.
    Returns:
        ``Path`` of the written file.
    Raises:
        NotExportableError for other detectors (before anything is traced); ImportError without onnx or
        onnxscript (``pip install -e .[deploy]``).
    """
    check_exportable(detector.model_cfg)
    from .onnx_runtime import import_deploy_package
    onnx = import_deploy_package('onnx')
    import_deploy_package('onnxscript')  # the dynamo exporter needs it; say how to install it
    detector = detector.cpu().eval()
    graph = PillarNetworkGraph(detector).eval()
    if example is None:
        example = example_inputs(detector.dataset)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    grid = detector.dataset.grid_size
    num_pillars = torch.export.Dim('num_pillars', min=1, max=int(grid[0]) * int(grid[1]))
    dynamic_shapes = {name: {0: num_pillars} for name in INPUT_NAMES}
    registration_log = logging.getLogger('torch.onnx._internal.exporter._registration')
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" etc.
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch-internal notices of torch 2.13's exporter, not about this model
            warnings.filterwarnings('ignore', message='.*isinstance\\(treespec, LeafSpec\\).*',
                                    category=FutureWarning)
            warnings.filterwarnings('ignore', message='.*axis name: num_pillars will not be used.*')
            program = torch.onnx.export(graph, tuple(example), input_names=list(INPUT_NAMES),
                                        output_names=graph.output_names, dynamic_shapes=dynamic_shapes,
                                        opset_version=opset, dynamo=True, optimize=True, verbose=False)
    finally:
        registration_log.setLevel(level)
    model = program.model_proto
    for key, val in deploy_metadata(detector, cfg_file).items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, val
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return out_path
