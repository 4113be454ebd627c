"""One evaluation pass over a dataloader (OpenPCDet ``eval_one_epoch`` semantics).

Writes ``<result_dir>/result.pkl`` (det_annos, dataset order), ``metrics.json`` (the returned dict),
``final_result/data/<frame>.txt`` with ``--save_to_file``, logs recall statistics and the dataset metric, and
returns the metric dict (``recall/roi_<t>``, ``recall/rcnn_<t>`` + ``dataset.evaluation``'s dict) on rank 0,
``{}`` on other ranks.

Distributed (``dist_test=True``): the ranks split the set by the dataloader's (non-shuffling, possibly padded)
sampler; padding duplicates are dropped *before* inference, so every frame is run exactly once and recall
counts are exact; det_annos and counts are gathered in memory (``gather_object``) and rank 0 evaluates. With
the same per-frame batches the result dict equals the single-process one exactly.
"""
import os
import pickle
import time
from pathlib import Path

import torch
import tqdm

from pcdet.utils import dist_utils


def statistics_info(cfg, ret_dict, metric, disp_dict):
    """Accumulate one batch's recall record into ``metric`` (``recall_roi_<t>``, ``recall_rcnn_<t>``, ``gt_num``)."""
    threshs = cfg.MODEL.POST_PROCESSING.RECALL_THRESH_LIST
    for t in threshs:
        metric['recall_roi_%s' % str(t)] += ret_dict.get('roi_%s' % str(t), 0)
        metric['recall_rcnn_%s' % str(t)] += ret_dict.get('rcnn_%s' % str(t), 0)
    metric['gt_num'] += ret_dict.get('gt', 0)
    t0 = threshs[0]
    disp_dict['recall_%s' % str(t0)] = '(%d, %d) / %d' % (
        metric['recall_roi_%s' % str(t0)], metric['recall_rcnn_%s' % str(t0)], metric['gt_num'])


def _unique_rank_indices(dataloader):
    """This rank's dataset indices (sampler order) with padding duplicates removed (first occurrence over
    ranks in rank order wins). Every rank calls this (it all-gathers the index lists)."""
    rank, _ = dist_utils.get_dist_info()
    mine = [int(i) for i in iter(dataloader.sampler)]
    owner = {}
    for r, idx_list in enumerate(dist_utils.all_gather_objects(mine)):
        for i in idx_list:
            owner.setdefault(i, r)
    kept, seen = [], set()
    for i in mine:
        if owner[i] == rank and i not in seen:
            seen.add(i)
            kept.append(i)
    missing = set(range(len(dataloader.dataset))) - set(owner)
    if missing:
        raise RuntimeError(f'distributed evaluation: the sampler leaves {len(missing)} frames unevaluated '
                           f'(e.g. index {min(missing)}); use a non-shuffling sampler that covers the set')
    return kept


def _rank_loader(dataloader, indices):
    """A DataLoader over ``indices`` (in order) with the original loader's batch size, workers and collate."""
    return torch.utils.data.DataLoader(
        dataloader.dataset, batch_size=dataloader.batch_size, sampler=list(indices),
        num_workers=dataloader.num_workers, collate_fn=dataloader.collate_fn, pin_memory=dataloader.pin_memory,
        drop_last=False, worker_init_fn=dataloader.worker_init_fn, timeout=dataloader.timeout)


def _model_device(model, default='cpu'):
    for p in model.parameters():
        return p.device
    return torch.device(default)


def _empty_recall_counts(threshs):
    counts = {'gt_num': 0}
    for t in threshs:
        counts['recall_roi_%s' % str(t)] = 0
        counts['recall_rcnn_%s' % str(t)] = 0
    return counts


def _inference_pass(cfg, args, model, loader, dataset, final_output_dir, show_progress):
    """Run the model over ``loader``. Returns ``(det_annos, recall counts, per-batch inference ms)``."""
    from pcdet.models import load_data_to_gpu
    save_to_file = bool(getattr(args, 'save_to_file', False))
    infer_time = bool(getattr(args, 'infer_time', False))
    skip_iters = int(len(loader) * 0.1) if infer_time else 0
    device = _model_device(model)
    metric = _empty_recall_counts(cfg.MODEL.POST_PROCESSING.RECALL_THRESH_LIST)
    det_annos, infer_ms = [], []
    model.eval()
    pbar = tqdm.tqdm(total=len(loader), leave=True, desc='eval', dynamic_ncols=True) if show_progress else None
    for i, batch_dict in enumerate(loader):
        load_data_to_gpu(batch_dict, device=device)
        t0 = time.time()
        with torch.no_grad():
            pred_dicts, ret_dict = model(batch_dict)
        if device.type == 'cuda' and infer_time:
            torch.cuda.synchronize(device)
        disp_dict = {}
        if infer_time and i >= skip_iters:
            infer_ms.append((time.time() - t0) * 1000)
            disp_dict['infer_time'] = f'{infer_ms[-1]:.2f}({sum(infer_ms) / len(infer_ms):.2f})'
        statistics_info(cfg, ret_dict, metric, disp_dict)
        det_annos += dataset.generate_prediction_dicts(batch_dict, pred_dicts, dataset.class_names,
                                                       output_path=final_output_dir if save_to_file else None)
        if pbar is not None:
            pbar.set_postfix(disp_dict)
            pbar.update()
    if pbar is not None:
        pbar.close()
    return det_annos, metric, infer_ms


def _gather_on_rank0(indices, det_annos, metric, infer_ms):
    """Merge every rank's results on rank 0, in dataset order; None on the other ranks."""
    gathered = dist_utils.gather_objects((indices, det_annos, metric, infer_ms))
    if dist_utils.get_dist_info()[0] != 0:
        return None
    by_index, total, times = {}, {k: 0 for k in metric}, []
    for idx_list, annos, counts, rank_times in gathered:
        by_index.update(zip(idx_list, annos))
        for k, v in counts.items():
            total[k] += v
        times += rank_times
    return [by_index[i] for i in sorted(by_index)], total, times


def _recall_metrics(metric, threshs, logger):
    """``recall/roi_<t>`` and ``recall/rcnn_<t>`` from the summed counts (logged)."""
    ret, gt_num = {}, metric['gt_num']
    for t in threshs:
        roi = metric['recall_roi_%s' % str(t)] / max(gt_num, 1)
        rcnn = metric['recall_rcnn_%s' % str(t)] / max(gt_num, 1)
        logger.info('recall_roi_%s: %f', t, roi)
        logger.info('recall_rcnn_%s: %f', t, rcnn)
        ret['recall/roi_%s' % str(t)] = roi
        ret['recall/rcnn_%s' % str(t)] = rcnn
    return ret


def eval_one_epoch(cfg, args, model, dataloader, epoch_id, logger, dist_test=False, result_dir=None):
    """Evaluate ``model`` (a detector, not DDP-wrapped) on ``dataloader``; see the module docstring."""
    result_dir = Path(result_dir)
    result_dir.mkdir(parents=True, exist_ok=True)
    final_output_dir = result_dir / 'final_result' / 'data'
    if getattr(args, 'save_to_file', False):
        final_output_dir.mkdir(parents=True, exist_ok=True)
    rank, world_size = dist_utils.get_dist_info() if dist_test else (0, 1)
    dataset = dataloader.dataset
    distributed = dist_test and world_size > 1
    indices = _unique_rank_indices(dataloader) if distributed else list(range(len(dataset)))
    loader = _rank_loader(dataloader, indices) if distributed else dataloader

    logger.info('*************** EPOCH %s EVALUATION *****************', epoch_id)
    start_time = time.time()
    det_annos, metric, infer_ms = _inference_pass(cfg, args, model, loader, dataset, final_output_dir,
                                                  show_progress=(rank == 0))
    if len(det_annos) != len(indices):
        raise RuntimeError(f'generate_prediction_dicts returned {len(det_annos)} annos for {len(indices)} frames')
    if distributed:
        merged = _gather_on_rank0(indices, det_annos, metric, infer_ms)
        if merged is None:
            return {}
        det_annos, metric, infer_ms = merged

    logger.info('*************** Performance of EPOCH %s *****************', epoch_id)
    sec_per_example = (time.time() - start_time) / max(len(dataset), 1)
    logger.info('Generate label finished(sec_per_example: %.4f second).', sec_per_example)
    if infer_ms:
        logger.info('Average inference time: %.2f ms per batch (first 10%% of batches skipped)',
                    sum(infer_ms) / len(infer_ms))
    ret = _recall_metrics(metric, cfg.MODEL.POST_PROCESSING.RECALL_THRESH_LIST, logger)
    total_pred = sum(len(a['name']) for a in det_annos)
    logger.info('Average predicted number of objects(%d samples): %.3f', len(det_annos),
                total_pred / max(1, len(det_annos)))
    with open(result_dir / 'result.pkl', 'wb') as f:
        pickle.dump(det_annos, f)
    result_str, result_dict = dataset.evaluation(
        det_annos, dataset.class_names, eval_metric=cfg.MODEL.POST_PROCESSING.EVAL_METRIC,
        output_path=final_output_dir)
    logger.info(result_str)
    ret.update(result_dict)
    _write_metrics(result_dir / 'metrics.json', ret)
    logger.info('Result is saved to %s', result_dir)
    logger.info('****************Evaluation done.*****************')
    return ret


def _write_metrics(path, metrics):
    """The returned metric dict as JSON (numbers only), so scripts need not parse the log."""
    import json
    clean = {}
    for key, val in metrics.items():
        try:
            clean[key] = float(val)
        except (TypeError, ValueError):
            continue
    with open(path, 'w') as f:
        json.dump(clean, f, indent=1, sort_keys=True)


def epoch_id_of(path):
    """Epoch id of a checkpoint: the last number in its file name (``checkpoint_epoch_12.pth`` -> ``'12'``)."""
    import re
    nums = re.findall(r'\d+', os.path.basename(str(path)))
    return nums[-1] if nums else 'no_number'


def get_no_evaluated_ckpt(ckpt_dir, ckpt_record_file, args):
    """Oldest-first ``checkpoint_epoch_*.pth`` not yet listed in ``ckpt_record_file`` with epoch >=
    ``args.start_epoch``. Returns ``(epoch_id, path)`` or ``(-1, None)``."""
    import glob
    with open(ckpt_record_file) as f:
        evaluated = {line.strip() for line in f if line.strip()}
    ckpts = sorted(glob.glob(os.path.join(str(ckpt_dir), '*checkpoint_epoch_*.pth')),
                   key=lambda p: (int(epoch_id_of(p)) if epoch_id_of(p).isdigit() else -1, p))
    for path in ckpts:
        epoch_id = epoch_id_of(path)
        if epoch_id in evaluated or not epoch_id.isdigit() or int(epoch_id) < args.start_epoch:
            continue
        return epoch_id, path
    return -1, None


def eval_single_ckpt(model, test_loader, args, eval_output_dir, logger, epoch_id, dist_test=False, cfg=None):
    """Load ``args.ckpt`` (or ``--pretrained_model``) into ``model`` and evaluate it once."""
    cfg = cfg if cfg is not None else _global_cfg()
    model.load_params_from_file(filename=args.ckpt, logger=logger, to_cpu=dist_test, strict=True,
                                allow_unsafe=getattr(args, 'unsafe_load', False))
    return eval_one_epoch(cfg, args, model, test_loader, epoch_id, logger, dist_test=dist_test,
                          result_dir=eval_output_dir)


def _global_cfg():
    from pcdet.config import cfg
    return cfg


def repeat_eval_ckpt(model, test_loader, args, eval_output_dir, logger, ckpt_dir, dist_test=False, poll=True,
                     cfg=None):
    """Evaluate every not-yet-evaluated ``checkpoint_epoch_*.pth`` in ``ckpt_dir`` (epoch >= args.start_epoch).

    ``poll=True`` (``test.py --eval_all``) waits for new checkpoints (checks every 30 s, gives up after
    ``--max_waiting_mins`` without one); ``poll=False`` (evaluation after training) stops when none is left.
    Rank 0 chooses the checkpoint and records it in ``eval_list_<split>.txt``; the choice is broadcast so all
    ranks evaluate the same file. Metrics go to ``tensorboard_<split>/`` at step = epoch.
    """
    cfg = cfg if cfg is not None else _global_cfg()
    split = cfg.DATA_CONFIG.DATA_SPLIT['test']
    rank = dist_utils.get_dist_info()[0] if dist_test else 0
    eval_output_dir = Path(eval_output_dir)
    record_file = eval_output_dir / ('eval_list_%s.txt' % split)
    if rank == 0:
        eval_output_dir.mkdir(parents=True, exist_ok=True)
        record_file.touch()
    dist_utils.barrier()
    tb_log = None
    if rank == 0:
        from tensorboardX import SummaryWriter
        tb_log = SummaryWriter(log_dir=str(eval_output_dir / ('tensorboard_%s' % split)))
    waited, results = 0, {}
    while True:
        choice = get_no_evaluated_ckpt(ckpt_dir, record_file, args) if rank == 0 else None
        epoch_id, ckpt = dist_utils.broadcast_object(choice) if dist_test else choice
        if ckpt is None:
            if not poll or waited > args.max_waiting_mins * 60:
                break
            if rank == 0:
                logger.info('Wait 30 s for the next checkpoint in %s (%.1f / %d minutes)', ckpt_dir,
                            waited / 60, args.max_waiting_mins)
            time.sleep(30)
            waited += 30
            continue
        waited = 0
        model.load_params_from_file(filename=ckpt, logger=logger, to_cpu=dist_test, strict=True,
                                    allow_unsafe=getattr(args, 'unsafe_load', False))
        result_dir = eval_output_dir / ('epoch_%s' % epoch_id) / split
        tb_dict = eval_one_epoch(cfg, args, model, test_loader, epoch_id, logger, dist_test=dist_test,
                                 result_dir=result_dir)
        if rank == 0:
            for key, val in tb_dict.items():
                if isinstance(val, (int, float)):
                    tb_log.add_scalar(key, val, int(epoch_id))
            with open(record_file, 'a') as f:
                print('%s' % epoch_id, file=f)
            logger.info('Epoch %s has been evaluated', epoch_id)
            results[epoch_id] = tb_dict
        dist_utils.barrier()
    if tb_log is not None:
        tb_log.close()
    return results
