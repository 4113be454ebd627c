"""Evaluate a checkpoint (or every checkpoint of a run) with OpenPCDet's command line, CPU or CUDA, 1 or N processes.

    python tools/test.py --cfg_file tools/cfgs/kitti_models/pointpillar.yaml --ckpt path/to/ckpt.pth
    bash tools/scripts/dist_test.sh 2 --cfg_file ... --ckpt ...      # torchrun, --launcher pytorch
    python tools/test.py --cfg_file ... --onnx model.onnx            # tools/export_onnx.py's file, in ONNX Runtime

Output: ``<repo>/output/<EXP_GROUP_PATH>/<TAG>/<extra_tag>/eval/epoch_<N>/<split>/<eval_tag>/`` (``--eval_all``:
``eval/eval_all_default/<eval_tag>/``) with ``log_eval_<ts>.txt``, ``result.pkl`` and, with ``--save_to_file``,
``final_result/data/<frame>.txt``. The epoch id is the last number in the checkpoint file name.
"""
import argparse
import datetime
import os
from pathlib import Path

import _init_path  # noqa: F401  (puts the repo root on sys.path)

from pcdet.config import cfg
from pcdet.utils import dist_utils
from train_utils import (add_common_args, parse_args_and_config, run_tool, select_device, setup_cfg_and_dist,
                         start_run_log)


def parse_config(argv=None):
    parser = argparse.ArgumentParser(description='evaluate a 3D detector (OpenPCDet flags)')
    add_common_args(parser, max_waiting_mins=30)
    parser.add_argument('--eval_tag', type=str, default='default', help='eval tag for this experiment')
    parser.add_argument('--eval_all', action='store_true', default=False, help='evaluate all checkpoints')
    parser.add_argument('--ckpt_dir', type=str, default=None, help='checkpoint folder for --eval_all')
    parser.add_argument('--infer_time', action='store_true', default=False, help='measure inference time')
    parser.add_argument('--onnx', type=str, default=None,
                        help='evaluate this ONNX export (tools/export_onnx.py) in ONNX Runtime instead of a checkpoint '
                             '(eval tag "onnx" unless --eval_tag is given)')
    return parse_args_and_config(parser, argv, cfg)


def main(argv=None):
    args, cfg = parse_config(argv)
    if args.infer_time:
        os.environ['CUDA_LAUNCH_BLOCKING'] = '1'  # before CUDA initialises, so kernel timings are real
    dist_test, world_size = setup_cfg_and_dist(args, cfg)
    device = select_device(args.device)
    if args.batch_size is None:
        args.batch_size = cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU
    else:
        args.batch_size = dist_utils.check_batch_size(args.batch_size, world_size)
    if not args.eval_all and args.ckpt is None and args.pretrained_model is None and args.onnx is None:
        raise SystemExit('test.py: give --ckpt (or --pretrained_model), --onnx, or --eval_all')
    if args.onnx is not None:
        if args.eval_all:
            raise SystemExit('test.py: --onnx evaluates one exported file; it does not combine with --eval_all')
        args.eval_tag = 'onnx' if args.eval_tag == 'default' else args.eval_tag

    output_dir = Path(cfg.ROOT_DIR) / 'output' / cfg.EXP_GROUP_PATH / cfg.TAG / args.extra_tag
    eval_output_dir = output_dir / 'eval'
    split = cfg.DATA_CONFIG.DATA_SPLIT['test']
    if not args.eval_all:
        from eval_utils.eval_utils import epoch_id_of
        epoch_id = epoch_id_of(args.onnx or (args.ckpt if args.ckpt is not None else args.pretrained_model))
        eval_output_dir = eval_output_dir / ('epoch_%s' % epoch_id) / split
    else:
        eval_output_dir = eval_output_dir / 'eval_all_default'
    if args.eval_tag is not None:
        eval_output_dir = eval_output_dir / args.eval_tag
    eval_output_dir.mkdir(parents=True, exist_ok=True)
    log_file = eval_output_dir / ('log_eval_%s.txt' % datetime.datetime.now().strftime('%Y%m%d-%H%M%S'))
    logger = start_run_log(log_file, args, cfg, device, world_size)

    from pcdet.datasets import build_dataloader
    from pcdet.models import build_network
    from eval_utils import eval_utils
    test_set, test_loader, _ = build_dataloader(
        dataset_cfg=cfg.DATA_CONFIG, class_names=cfg.CLASS_NAMES, batch_size=args.batch_size, dist=dist_test,
        workers=args.workers, logger=logger, training=False)
    model = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=test_set)
    model.to(device)

    if args.onnx is not None:  # the network in ONNX Runtime; voxels, box decoding, NMS and the metric as for a .pth
        from pcdet.deploy.onnx_runtime import OnnxPillarDetector
        eval_utils.eval_one_epoch(cfg, args, OnnxPillarDetector(model, args.onnx), test_loader, epoch_id, logger,
                                  dist_test=dist_test, result_dir=eval_output_dir)
    elif args.eval_all:
        ckpt_dir = Path(args.ckpt_dir) if args.ckpt_dir is not None else output_dir / 'ckpt'
        eval_utils.repeat_eval_ckpt(model, test_loader, args, eval_output_dir, logger, ckpt_dir,
                                    dist_test=dist_test, poll=True, cfg=cfg)
    else:
        if args.pretrained_model is not None and args.ckpt is None:
            args.ckpt = args.pretrained_model
        eval_utils.eval_single_ckpt(model, test_loader, args, eval_output_dir, logger, epoch_id,
                                    dist_test=dist_test, cfg=cfg)
    dist_utils.shut_down()


if __name__ == '__main__':
    run_tool(main)
