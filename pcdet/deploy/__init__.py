"""Deployment of PointPillars-family detectors: ONNX export and an ONNX Runtime evaluation backend.

- ``onnx_export``: ``export_onnx(detector, out_path)`` writes the network (pillar VFE -> scatter -> 2D backbone ->
  dense head outputs) with a dynamic pillar count; ``check_exportable(model_cfg)`` refuses other detectors.
- ``onnx_runtime``: ``OnnxPillarDetector(detector, onnx_path)`` evaluates like the detector, with the network in
  ONNX Runtime and voxelisation, box decoding and NMS in the project's own code.

``onnx`` and ``onnxruntime`` are optional (``pip install -e .[deploy]``) and imported only when used.
"""
