"""Export a PointPillars-family detector's network to ONNX (dynamic pillar count); see pcdet/deploy/onnx_export.py.

    python tools/export_onnx.py --cfg_file tools/cfgs/kitti_synth_models/pointpillar_4x.yaml \
        --ckpt output/kitti_synth_models/pointpillar_4x/default/ckpt/checkpoint_epoch_8.pth --out pp_4x.onnx
    python tools/test.py --cfg_file tools/cfgs/kitti_synth_models/pointpillar_4x.yaml --onnx pp_4x.onnx

Every width comes from the config (teacher, 4x and 16x students, KITTI or synthetic geometry); a distillation
config exports its student. The graph covers pillar VFE -> scatter -> 2D backbone -> head outputs (cls_preds,
box_preds, dir_cls_preds); voxelisation, box decoding and NMS stay in pcdet's Python code. After writing, the
file is run once in ONNX Runtime on the example pillars and compared with PyTorch (``--no_verify`` skips it).
A detector that cannot be exported (SECOND: sparse convolutions) stops at once with one line on stderr and exit
status 2.
"""
import argparse
import sys

import _init_path  # noqa: F401  (puts the repo root and tools/ on sys.path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='export a PointPillars-family detector to ONNX')
    parser.add_argument('--cfg_file', required=True, help='detector (or distillation) config')
    parser.add_argument('--ckpt', default=None, help='checkpoint to export (required unless --random_init)')
    parser.add_argument('--random_init', action='store_true', help='export untrained weights (tests, timing)')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument('--num_pillars', type=int, default=2000, help='pillars in the example input (any count '
                                                                      'runs afterwards)')
    parser.add_argument('--opset', type=int, default=None, help='ONNX opset (default: pcdet.deploy\'s)')
    parser.add_argument('--no_verify', action='store_true', help='skip the ONNX Runtime vs PyTorch check')
    parser.add_argument('--set', dest='set_cfgs', default=None, nargs=argparse.REMAINDER,
                        help='override config keys (KEY VALUE ...), as in train.py / test.py')
    return parser.parse_args(argv)


def load_cfg(args):
    from easydict import EasyDict

    from pcdet.config import cfg_from_list, cfg_from_yaml_file
    from train_utils import resolve_cfg_file
    cfg = EasyDict()
    cfg_from_yaml_file(resolve_cfg_file(args.cfg_file), cfg)
    if args.set_cfgs is not None:
        cfg_from_list(args.set_cfgs, cfg)
    return cfg


def verify(detector, out_path, example):
    """Max |ORT - PyTorch| per head output on the export's example input."""
    import numpy as np
    import torch

    from pcdet.deploy.onnx_export import INPUT_NAMES, PillarNetworkGraph
    from pcdet.deploy.onnx_runtime import create_session
    graph = PillarNetworkGraph(detector).eval()
    with torch.no_grad():
        ref = graph(*example)
    session = create_session(out_path)
    got = session.run(graph.output_names, {name: t.numpy() for name, t in zip(INPUT_NAMES, example)})
    return {name: float(np.abs(g - r.numpy()).max()) for name, g, r in zip(graph.output_names, got, ref)}


def fail(message):
    """One line on stderr, exit status 2 (a user error, as train.py / test.py report them)."""
    print(f'export_onnx.py: error: {message}', file=sys.stderr)
    raise SystemExit(2)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_cfg(args)
    from pcdet.deploy.onnx_export import DEFAULT_OPSET, NotExportableError, check_exportable, example_inputs
    try:
        check_exportable(cfg.MODEL)  # before anything is built: SECOND fails here, without importing spconv
    except NotExportableError as err:
        fail(err)
    if args.ckpt is None and not args.random_init:
        fail('give --ckpt (or --random_init for untrained weights)')

    import os

    import torch

    from pcdet.datasets.dataset_meta import DatasetMeta
    from pcdet.deploy.onnx_export import export_onnx
    from pcdet.models import build_network
    from pcdet.utils import common_utils
    logger = common_utils.create_logger()
    meta = DatasetMeta.from_cfg(cfg, training=False)
    torch.manual_seed(0)
    detector = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=meta)
    if args.ckpt is not None:
        detector.load_params_from_file(filename=args.ckpt, logger=logger, to_cpu=True, strict=True)
    detector.eval()
    example = example_inputs(meta, num_pillars=args.num_pillars)
    try:
        out = export_onnx(detector, args.out, example=example, opset=args.opset or DEFAULT_OPSET,
                          cfg_file=args.cfg_file)
    except ImportError as err:
        fail(err)
    params = sum(p.numel() for p in detector.parameters())
    print(f'wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB, {params / 1e6:.3f} M parameters, '
          f'{cfg.MODEL.NAME} from {args.ckpt or "random init"})')
    if not args.no_verify:
        diffs = verify(detector, out, example)
        print('ONNX Runtime vs PyTorch on the example input, max |diff|: '
              + ', '.join(f'{k} {v:.2e}' for k, v in diffs.items()))
    return out


if __name__ == '__main__':
    main(sys.argv[1:])
