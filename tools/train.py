"""Train a detector (or distil a student) with OpenPCDet's command line, on CPU or CUDA, 1 or N processes.

    python tools/train.py --cfg_file tools/cfgs/kitti_models/pointpillar.yaml [--set KEY VALUE ...]
    bash tools/scripts/dist_train.sh 2 --cfg_file ...           # torchrun, --launcher pytorch

Output: ``<repo>/output/<EXP_GROUP_PATH>/<TAG>/<extra_tag>/`` (independent of the CWD) with the config copy,
``train_<ts>.log``, ``tensorboard/``, ``ckpt/`` and ``eval/eval_with_train/``. A DISTILL block in the config
builds a Distiller around the student (``--teacher_ckpt`` overrides ``TEACHER.CKPT``).
"""
import argparse
import datetime
import glob
import os
import shutil
from pathlib import Path

import _init_path  # noqa: F401  (puts the repo root on sys.path)
import torch

from pcdet.config import cfg
from pcdet.utils import checkpoint_utils, common_utils, dist_utils
from train_utils import (ResumeError, add_common_args, parse_args_and_config, run_tool, select_device,
                         setup_cfg_and_dist, start_run_log)


def parse_config(argv=None):
    parser = argparse.ArgumentParser(description='train a 3D detector (OpenPCDet flags)')
    add_common_args(parser, max_waiting_mins=0)
    parser.add_argument('--epochs', type=int, default=None, help='number of epochs (default NUM_EPOCHS)')
    parser.add_argument('--sync_bn', action='store_true', default=False, help='synchronised BatchNorm')
    parser.add_argument('--fix_random_seed', action='store_true', default=False, help='seed --seed + rank')
    parser.add_argument('--seed', type=int, default=666,
                        help='base seed used with --fix_random_seed (OpenPCDet: 666); the benchmark varies it')
    parser.add_argument('--ckpt_save_interval', type=int, default=1, help='epochs between checkpoints')
    parser.add_argument('--max_ckpt_save_num', type=int, default=30, help='checkpoints kept')
    parser.add_argument('--merge_all_iters_to_one_epoch', action='store_true', default=False)
    parser.add_argument('--num_epochs_to_eval', type=int, default=0, help='evaluate the last N epochs')
    parser.add_argument('--use_tqdm_to_record', action='store_true', default=False,
                        help='log progress with tqdm instead of logger lines')
    parser.add_argument('--logger_iter_interval', type=int, default=50)
    parser.add_argument('--ckpt_save_time_interval', type=int, default=300,
                        help='seconds between latest_model.pth saves (0: every iteration)')
    parser.add_argument('--wo_gpu_stat', action='store_true', help='do not log GPU memory')
    parser.add_argument('--use_amp', action='store_true', help='mixed precision (CUDA)')
    parser.add_argument('--teacher_ckpt', type=str, default=None, help='teacher checkpoint (DISTILL configs)')
    parser.add_argument('--fresh_start', action='store_true', default=False,
                        help='do not resume: move the checkpoints already in the output folder to '
                             'ckpt/superseded_<time>/ and train from scratch')
    return parse_args_and_config(parser, argv, cfg)


def find_resume_checkpoint(ckpt_dir, model, optimizer, logger, batch_size, allow_unsafe=False):
    """Auto-resume from the newest ``*.pth`` in ``ckpt_dir`` (by mtime) that loads; an unloadable one is logged
    and the next older one tried.

    Returns ``(it, epoch)``, or ``(0, 0)`` when the folder holds no checkpoint. Raises ``ResumeError`` naming
    every checkpoint and why it failed when there are some and none loads (a changed config, another batch
    size): starting over would overwrite them (``--fresh_start`` moves them aside instead).
    """
    candidates = sorted(glob.glob(os.path.join(str(ckpt_dir), '*.pth')), key=os.path.getmtime, reverse=True)
    failures = []
    for path in candidates:
        try:
            it, epoch = checkpoint_utils.load_params_with_optimizer(
                model, path, optimizer=optimizer, logger=logger, batch_size=batch_size, allow_unsafe=allow_unsafe)
        except checkpoint_utils.CheckpointError as err:
            logger.warning('Cannot resume from %s (%s); trying an older checkpoint', path, err)
            failures.append(f'{os.path.basename(path)}: {str(err).splitlines()[0]}')
            continue
        logger.info('Auto-resumed from %s', path)
        return it, epoch
    if failures:
        raise ResumeError(f'{ckpt_dir} holds {len(failures)} checkpoint(s) and none can continue this run ('
                          + ' | '.join(failures) + '). Restore the config they were trained with, or pass '
                          '--fresh_start to move them to ckpt/superseded_<time>/ and train from scratch')
    return 0, 0


def move_checkpoints_aside(ckpt_dir, logger):
    """``--fresh_start``: move every ``*.pth`` of ``ckpt_dir`` into ``ckpt_dir/superseded_<time>/`` (rank 0)."""
    paths = sorted(glob.glob(os.path.join(str(ckpt_dir), '*.pth')))
    if not paths:
        return None
    target = Path(ckpt_dir) / ('superseded_' + datetime.datetime.now().strftime('%Y%m%d-%H%M%S'))
    target.mkdir(parents=True, exist_ok=False)
    for path in paths:
        shutil.move(path, target / os.path.basename(path))
    logger.info('--fresh_start: moved %d checkpoint(s) to %s', len(paths), target)
    return target


def build_model(args, cfg, train_set, logger):
    """Detector from cfg.MODEL; wrapped in a Distiller when the config has a DISTILL block."""
    from pcdet.models import build_network
    model = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=train_set)
    if 'DISTILL' in cfg:
        from pcdet.distill import build_distiller
        # a relative TEACHER.CFG_FILE is looked up next to the experiment YAML first
        model = build_distiller(cfg, model, logger, teacher_ckpt=args.teacher_ckpt,
                                cfg_dir=os.path.dirname(args.cfg_file), unsafe_load=args.unsafe_load)
    elif args.teacher_ckpt is not None:
        raise ValueError(f'--teacher_ckpt given but {args.cfg_file} has no DISTILL block')
    return model


def prepare_output(args, cfg, device, world_size):
    """Create ``output/<EXP_GROUP_PATH>/<TAG>/<extra_tag>/{ckpt}``, start the log (rank 0 writes), copy the config
    and open tensorboard (rank 0). Returns ``(output_dir, ckpt_dir, logger, tb_log or None)``."""
    output_dir = Path(cfg.ROOT_DIR) / 'output' / cfg.EXP_GROUP_PATH / cfg.TAG / args.extra_tag
    ckpt_dir = output_dir / 'ckpt'
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    log_file = output_dir / ('train_%s.log' % datetime.datetime.now().strftime('%Y%m%d-%H%M%S'))
    logger = start_run_log(log_file, args, cfg, device, world_size)
    tb_log = None
    if cfg.RANK == 0:
        shutil.copy(args.cfg_file, output_dir / Path(args.cfg_file).name)
        from tensorboardX import SummaryWriter
        tb_log = SummaryWriter(log_dir=str(output_dir / 'tensorboard'))
    return output_dir, ckpt_dir, logger, tb_log


def restore_or_start(args, cfg, model, optimizer, ckpt_dir, logger, total_batch, iters_per_epoch, dist_train):
    """Weights and position to start from: ``--pretrained_model`` (non-strict), then ``--ckpt`` (resume),
    ``--fresh_start`` (old checkpoints moved aside) or auto-resume from ``ckpt_dir``.

    Returns ``(it, start_epoch, last_epoch)``: accumulated iterations, the first epoch to run and the
    scheduler's ``last_epoch`` (-1 for a fresh start).
    """
    student = model.student if hasattr(model, 'student') else model
    start_epoch = it = 0
    last_epoch = -1
    if args.pretrained_model is not None:
        student.load_params_from_file(filename=args.pretrained_model, to_cpu=dist_train, logger=logger,
                                      allow_unsafe=args.unsafe_load)
    if args.ckpt is not None:
        it, start_epoch = checkpoint_utils.load_params_with_optimizer(
            model, args.ckpt, optimizer=optimizer, logger=logger, batch_size=total_batch,
            allow_unsafe=args.unsafe_load)
        last_epoch = start_epoch + 1
    elif args.fresh_start:
        if cfg.RANK == 0:
            move_checkpoints_aside(ckpt_dir, logger)
        dist_utils.barrier()
    else:
        it, start_epoch = find_resume_checkpoint(ckpt_dir, model, optimizer, logger, total_batch,
                                                 allow_unsafe=args.unsafe_load)
        if it > 0 or start_epoch > 0:
            last_epoch = start_epoch + 1
    if iters_per_epoch > 0 and it >= (start_epoch + 1) * iters_per_epoch:
        # a latest_model saved after the last iteration of its epoch (checkpoints record their batch size, so
        # one written with another batch size never gets here)
        start_epoch = it // iters_per_epoch
    return it, max(start_epoch, 0), last_epoch


def main(argv=None):
    args, cfg = parse_config(argv)
    dist_train, world_size = setup_cfg_and_dist(args, cfg)
    device = select_device(args.device)
    if args.batch_size is None:
        args.batch_size = cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU
    else:
        args.batch_size = dist_utils.check_batch_size(args.batch_size, world_size)
    args.epochs = cfg.OPTIMIZATION.NUM_EPOCHS if args.epochs is None else args.epochs
    if args.fix_random_seed:
        common_utils.set_random_seed(args.seed + cfg.RANK)

    output_dir, ckpt_dir, logger, tb_log = prepare_output(args, cfg, device, world_size)

    from pcdet.datasets import build_dataloader
    from pcdet.models import model_fn_decorator
    from train_utils.optimization import build_optimizer, build_scheduler
    from train_utils.train_utils import train_model
    train_set, train_loader, train_sampler = build_dataloader(
        dataset_cfg=cfg.DATA_CONFIG, class_names=cfg.CLASS_NAMES, batch_size=args.batch_size, dist=dist_train,
        workers=args.workers, logger=logger, training=True,
        merge_all_iters_to_one_epoch=args.merge_all_iters_to_one_epoch, total_epochs=args.epochs,
        seed=args.seed if args.fix_random_seed else None)

    model = build_model(args, cfg, train_set, logger)
    if args.sync_bn:
        model = dist_utils.convert_sync_batchnorm(model)
    model.to(device)
    optimizer = build_optimizer(model, cfg.OPTIMIZATION)
    student = model.student if hasattr(model, 'student') else model

    iters_per_epoch = len(train_loader)
    it, start_epoch, last_epoch = restore_or_start(args, cfg, model, optimizer, ckpt_dir, logger,
                                                   total_batch=args.batch_size * world_size,
                                                   iters_per_epoch=iters_per_epoch, dist_train=dist_train)

    model.train()
    if dist_train:
        ddp_kwargs = {'device_ids': [device.index]} if device.type == 'cuda' else {}
        model = torch.nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
    logger.info('----------- Model %s created, param count: %d -----------', cfg.MODEL.NAME,
                sum(p.numel() for p in model.parameters()))
    logger.info(model)

    lr_scheduler, lr_warmup_scheduler = build_scheduler(
        optimizer, total_iters_each_epoch=iters_per_epoch, total_epochs=args.epochs, last_epoch=last_epoch,
        optim_cfg=cfg.OPTIMIZATION)

    logger.info('**********************Start training %s/%s(%s)**********************',
                cfg.EXP_GROUP_PATH, cfg.TAG, args.extra_tag)
    train_model(
        model, optimizer, train_loader, model_func=model_fn_decorator(), lr_scheduler=lr_scheduler,
        optim_cfg=cfg.OPTIMIZATION, start_epoch=start_epoch, total_epochs=args.epochs, start_iter=it,
        rank=cfg.RANK, tb_log=tb_log, ckpt_save_dir=ckpt_dir, train_sampler=train_sampler,
        lr_warmup_scheduler=lr_warmup_scheduler, ckpt_save_interval=args.ckpt_save_interval,
        max_ckpt_save_num=args.max_ckpt_save_num, merge_all_iters_to_one_epoch=args.merge_all_iters_to_one_epoch,
        use_amp=args.use_amp or cfg.OPTIMIZATION.get('USE_AMP', False), logger=logger,
        use_logger_to_record=not args.use_tqdm_to_record, logger_iter_interval=args.logger_iter_interval,
        ckpt_save_time_interval=args.ckpt_save_time_interval, show_gpu_stat=not args.wo_gpu_stat, device=device)
    if tb_log is not None:
        tb_log.close()
    if hasattr(train_set, 'use_shared_memory') and train_set.use_shared_memory:
        train_set.clean_shared_memory()
    logger.info('**********************End training %s/%s(%s)**********************\n\n\n',
                cfg.EXP_GROUP_PATH, cfg.TAG, args.extra_tag)

    if args.num_epochs_to_eval > 0:
        evaluate_after_training(args, cfg, student, dist_train, output_dir, ckpt_dir, logger)
    dist_utils.shut_down()


def evaluate_after_training(args, cfg, student, dist_train, output_dir, ckpt_dir, logger):
    """Evaluate the last ``--num_epochs_to_eval`` epoch checkpoints (the student only, as it is saved)."""
    from pcdet.datasets import build_dataloader
    from eval_utils.eval_utils import repeat_eval_ckpt
    logger.info('**********************Start evaluation %s/%s(%s)**********************',
                cfg.EXP_GROUP_PATH, cfg.TAG, args.extra_tag)
    test_set, test_loader, _ = build_dataloader(
        dataset_cfg=cfg.DATA_CONFIG, class_names=cfg.CLASS_NAMES, batch_size=args.batch_size, dist=dist_train,
        workers=args.workers, logger=logger, training=False)
    eval_output_dir = output_dir / 'eval' / 'eval_with_train'
    eval_output_dir.mkdir(parents=True, exist_ok=True)
    args.start_epoch = max(args.epochs - args.num_epochs_to_eval + 1, 0)  # exactly the last N epochs
    repeat_eval_ckpt(student, test_loader, args, eval_output_dir, logger, ckpt_dir, dist_test=dist_train,
                     poll=False)
    logger.info('**********************End evaluation %s/%s(%s)**********************',
                cfg.EXP_GROUP_PATH, cfg.TAG, args.extra_tag)


if __name__ == '__main__':
    run_tool(main)
