"""Training loop (OpenPCDet ``train_one_epoch`` / ``train_model`` semantics).

Per iteration: schedule step (global iteration) -> ``model.train()`` -> ``zero_grad`` -> forward under autocast
(``--use_amp``; CUDA float16 with a GradScaler; on CPU AMP is disabled with a log line) -> backward ->
unscale -> ``clip_grad_norm_(GRAD_NORM_CLIP)`` -> step. Rank 0 logs to tensorboard (``train/loss``,
``meta_data/learning_rate``, ``train/<tb_dict key>``), shows tqdm with ETA and loss, and writes checkpoints:
``checkpoint_epoch_<N>.pth`` every ``ckpt_save_interval`` epochs (pruned to ``max_ckpt_save_num``) and
``latest_model.pth`` every ``ckpt_save_time_interval`` seconds within an epoch.
"""
import glob
import os
import time

import torch
import tqdm
from torch.nn.utils import clip_grad_norm_

from pcdet.utils import checkpoint_utils, common_utils
from pcdet.utils.dist_utils import get_dist_info


def make_amp(use_amp, device, logger=None):
    """Return ``(autocast_context_factory, GradScaler)`` for the device; AMP only on CUDA."""
    device_type = torch.device(device).type
    enabled = bool(use_amp) and device_type == 'cuda'
    if use_amp and not enabled and logger is not None:
        logger.info('--use_amp: mixed precision is only used on CUDA; training in float32 on %s', device_type)
    scaler = torch.amp.GradScaler('cuda', enabled=enabled, init_scale=2.0 ** 16) if enabled else None

    def autocast():
        return torch.autocast(device_type=device_type, enabled=enabled)
    return autocast, scaler


def _current_lr(optimizer):
    lr = getattr(optimizer, 'lr', None)
    return float(lr) if lr is not None else float(optimizer.param_groups[0]['lr'])


def train_one_epoch(model, optimizer, train_loader, model_func, lr_scheduler, accumulated_iter, optim_cfg,
                    rank, tbar, total_it_each_epoch, dataloader_iter, tb_log=None, leave_pbar=False,
                    use_logger_to_record=False, logger=None, logger_iter_interval=50, cur_epoch=None,
                    total_epochs=None, ckpt_save_dir=None, ckpt_save_time_interval=300, amp=None):
    """Run the rest of one epoch, starting at iteration ``accumulated_iter % total_it_each_epoch`` (mid-epoch
    resume). Returns ``(accumulated_iter, dataloader_iter)``."""
    autocast, scaler = amp
    start_it = accumulated_iter % total_it_each_epoch
    ckpt_save_cnt = 1
    pbar = None
    if rank == 0 and not use_logger_to_record:
        pbar = tqdm.tqdm(total=total_it_each_epoch, leave=leave_pbar, desc='train', dynamic_ncols=True,
                         initial=start_it)
    data_time, batch_time = common_utils.AverageMeter(), common_utils.AverageMeter()
    losses_m = common_utils.AverageMeter()
    epoch_start = end = time.time()
    for cur_it in range(start_it, total_it_each_epoch):
        try:
            batch = next(dataloader_iter)
        except StopIteration:
            dataloader_iter = iter(train_loader)
            batch = next(dataloader_iter)
        data_timer = time.time()
        lr_scheduler.step(accumulated_iter, cur_epoch)
        cur_lr = _current_lr(optimizer)
        if tb_log is not None:
            tb_log.add_scalar('meta_data/learning_rate', cur_lr, accumulated_iter)

        model.train()
        optimizer.zero_grad()
        with autocast():
            loss, tb_dict, disp_dict = model_func(model, batch)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        clip_grad_norm_(model.parameters(), optim_cfg.GRAD_NORM_CLIP)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        accumulated_iter += 1

        now = time.time()
        data_time.update(data_timer - end)
        batch_time.update(now - end)
        end = now
        losses_m.update(loss.item())
        if rank == 0:
            disp_dict.update({'loss': f'{loss.item():.4f}', 'lr': f'{cur_lr:.3e}',
                              'd_time': f'{data_time.val:.2f}({data_time.avg:.2f})',
                              'b_time': f'{batch_time.val:.2f}({batch_time.avg:.2f})'})
            remaining = (total_it_each_epoch - cur_it - 1) * batch_time.avg
            if use_logger_to_record and logger is not None:
                if (accumulated_iter % logger_iter_interval == 0 or cur_it == start_it
                        or cur_it + 1 == total_it_each_epoch):
                    logger.info('Train: %3d/%d (%3d%%) [%4d/%4d] Loss: %.4f (%.4f) LR: %.3e Time cost: %s/%s '
                                'Data %.2f(%.2f) Batch %.2f(%.2f)', cur_epoch + 1, total_epochs,
                                int(100.0 * (cur_it + 1) / total_it_each_epoch), cur_it, total_it_each_epoch,
                                loss.item(), losses_m.avg, cur_lr, tbar.format_interval(now - epoch_start),
                                tbar.format_interval(remaining), data_time.val, data_time.avg,
                                batch_time.val, batch_time.avg)
            elif pbar is not None:
                pbar.update()
                pbar.set_postfix(dict(total_it=accumulated_iter))
                tbar.set_postfix(disp_dict)
            if tb_log is not None:
                tb_log.add_scalar('train/loss', loss.item(), accumulated_iter)
                for key, val in tb_dict.items():
                    tb_log.add_scalar('train/' + key, float(val), accumulated_iter)
            if ckpt_save_dir is not None and ckpt_save_time_interval is not None and ckpt_save_time_interval >= 0:
                elapsed = now - epoch_start
                if ckpt_save_time_interval == 0 or elapsed // ckpt_save_time_interval >= ckpt_save_cnt:
                    # epoch = the unfinished 0-based epoch; resume restarts it at accumulated_iter
                    checkpoint_utils.save_checkpoint(
                        checkpoint_utils.checkpoint_state(model, optimizer, cur_epoch, accumulated_iter),
                        filename=os.path.join(str(ckpt_save_dir), 'latest_model'))
                    if logger is not None:
                        logger.info('Save latest model to %s (epoch %d, it %d)',
                                    os.path.join(str(ckpt_save_dir), 'latest_model.pth'), cur_epoch,
                                    accumulated_iter)
                    ckpt_save_cnt += 1
    if pbar is not None:
        pbar.close()
    return accumulated_iter, dataloader_iter


def prune_checkpoints(ckpt_save_dir, max_ckpt_save_num):
    """Delete the oldest ``checkpoint_epoch_*.pth`` so that fewer than ``max_ckpt_save_num`` remain."""
    ckpts = sorted(glob.glob(os.path.join(str(ckpt_save_dir), 'checkpoint_epoch_*.pth')), key=os.path.getmtime)
    while len(ckpts) >= max_ckpt_save_num > 0:
        os.remove(ckpts.pop(0))


def train_model(model, optimizer, train_loader, model_func, lr_scheduler, optim_cfg, start_epoch, total_epochs,
                start_iter, rank, tb_log, ckpt_save_dir, train_sampler=None, lr_warmup_scheduler=None,
                ckpt_save_interval=1, max_ckpt_save_num=50, merge_all_iters_to_one_epoch=False, use_amp=False,
                use_logger_to_record=False, logger=None, logger_iter_interval=50, ckpt_save_time_interval=300,
                show_gpu_stat=False, device='cpu'):
    """Train epochs ``start_epoch .. total_epochs - 1``; ``start_iter`` = accumulated iterations (resume)."""
    del show_gpu_stat  # accepted for OpenPCDet compatibility; no GPU memory line is printed
    accumulated_iter = start_iter
    amp = make_amp(use_amp, device, logger)
    rank = get_dist_info()[0] if rank is None else rank
    with tqdm.trange(start_epoch, total_epochs, desc='epochs', dynamic_ncols=True, leave=(rank == 0),
                     disable=(rank != 0)) as tbar:
        total_it_each_epoch = len(train_loader)
        if merge_all_iters_to_one_epoch:
            if not hasattr(train_loader.dataset, 'merge_all_iters_to_one_epoch'):
                raise ValueError('--merge_all_iters_to_one_epoch: the dataset has no merge_all_iters_to_one_epoch')
            train_loader.dataset.merge_all_iters_to_one_epoch(merge=True, epochs=total_epochs)
            total_it_each_epoch = len(train_loader) // max(total_epochs, 1)
        if total_it_each_epoch < 1:
            raise ValueError('the training dataloader is empty (check DATA_SPLIT / INFO_PATH and --batch_size)')
        dataloader_iter = None
        for cur_epoch in tbar:
            if train_sampler is not None and hasattr(train_sampler, 'set_epoch'):
                train_sampler.set_epoch(cur_epoch)
            if dataloader_iter is None or not merge_all_iters_to_one_epoch:
                dataloader_iter = iter(train_loader)  # after set_epoch, so the new epoch order is used
            if lr_warmup_scheduler is not None and cur_epoch < optim_cfg.WARMUP_EPOCH:
                cur_scheduler = lr_warmup_scheduler
            else:
                cur_scheduler = lr_scheduler
            accumulated_iter, dataloader_iter = train_one_epoch(
                model, optimizer, train_loader, model_func, lr_scheduler=cur_scheduler,
                accumulated_iter=accumulated_iter, optim_cfg=optim_cfg, rank=rank, tbar=tbar, tb_log=tb_log,
                leave_pbar=(cur_epoch + 1 == total_epochs), total_it_each_epoch=total_it_each_epoch,
                dataloader_iter=dataloader_iter, cur_epoch=cur_epoch, total_epochs=total_epochs,
                use_logger_to_record=use_logger_to_record, logger=logger,
                logger_iter_interval=logger_iter_interval, ckpt_save_dir=ckpt_save_dir,
                ckpt_save_time_interval=ckpt_save_time_interval, amp=amp)
            trained_epoch = cur_epoch + 1
            if trained_epoch % ckpt_save_interval == 0 and rank == 0:
                prune_checkpoints(ckpt_save_dir, max_ckpt_save_num)
                ckpt_name = os.path.join(str(ckpt_save_dir), f'checkpoint_epoch_{trained_epoch}')
                checkpoint_utils.save_checkpoint(
                    checkpoint_utils.checkpoint_state(model, optimizer, trained_epoch, accumulated_iter),
                    filename=ckpt_name)
                if logger is not None:
                    logger.info('Save checkpoint to %s.pth', ckpt_name)
    return accumulated_iter
