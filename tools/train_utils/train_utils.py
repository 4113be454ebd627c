"""Training loop (OpenPCDet ``train_one_epoch`` / ``train_model`` semantics).

Per iteration: schedule step (global iteration) -> ``model.train()`` -> ``zero_grad`` -> forward under autocast
(``--use_amp``; CUDA float16 with a GradScaler; on CPU AMP is disabled with a log line) -> backward ->
unscale -> ``clip_grad_norm_(GRAD_NORM_CLIP)`` -> non-finite check -> step. Rank 0 logs to tensorboard
(``train/loss``, ``meta_data/learning_rate``, ``train/<tb_dict key>``), shows tqdm with ETA and loss, and writes
checkpoints: ``checkpoint_epoch_<N>.pth`` every ``ckpt_save_interval`` epochs (pruned to ``max_ckpt_save_num``)
and ``latest_model.pth`` every ``ckpt_save_time_interval`` seconds of training (the clock runs across epochs).

Non-finite guard: a step whose loss or gradient norm is NaN / inf (decided identically on every rank) is skipped:
no optimiser step, and the buffers the forward changed (BatchNorm running statistics) are restored. After
``OPTIMIZATION.MAX_NONFINITE_STEPS`` (default 10) consecutive skipped steps training stops with
``NonFiniteTrainingError``; ``save_checkpoint`` refuses non-finite weights in any case.
"""
import glob
import os
import time

import torch
import tqdm
from torch.nn.utils import clip_grad_norm_

from pcdet.utils import checkpoint_utils, common_utils
from pcdet.utils.dist_utils import get_dist_info

DEFAULT_MAX_NONFINITE_STEPS = 10


class NonFiniteTrainingError(RuntimeError):
    """Too many consecutive steps with a NaN / inf loss or gradient."""


def make_amp(use_amp, device, logger=None, init_scale=2.0 ** 16):
    """Return ``(autocast_context_factory, GradScaler)`` for the device; AMP only on CUDA."""
    device_type = torch.device(device).type
    enabled = bool(use_amp) and device_type == 'cuda'
    if use_amp and not enabled and logger is not None:
        logger.info('--use_amp: mixed precision is only used on CUDA; training in float32 on %s', device_type)
    scaler = torch.amp.GradScaler('cuda', enabled=enabled, init_scale=init_scale) if enabled else None

    def autocast():
        return torch.autocast(device_type=device_type, enabled=enabled)
    return autocast, scaler


def _current_lr(optimizer):
    lr = getattr(optimizer, 'lr', None)
    return float(lr) if lr is not None else float(optimizer.param_groups[0]['lr'])


class NonFiniteGuard:
    """Decides per step whether the update is finite and stops training after too many bad steps in a row.

    Args:
        max_consecutive: consecutive skipped steps tolerated (``OPTIMIZATION.MAX_NONFINITE_STEPS``).
        logger: where each skipped step is reported (rank 0).
    """

    def __init__(self, max_consecutive=DEFAULT_MAX_NONFINITE_STEPS, logger=None):
        if int(max_consecutive) < 1:
            raise ValueError(f'OPTIMIZATION.MAX_NONFINITE_STEPS must be >= 1, got {max_consecutive}')
        self.max_consecutive = int(max_consecutive)
        self.logger = logger
        self.consecutive = 0
        self.skipped = 0

    @staticmethod
    def all_finite(loss, grad_norm, buffers=()):
        """True when loss, gradient norm and ``buffers`` (what the forward changed: BatchNorm statistics, which
        overflow before the loss does) are finite on every rank (one all-reduce under torch.distributed, so
        every rank takes the same decision and DDP replicas stay identical)."""
        checks = [torch.isfinite(loss.detach().float()).all(), torch.isfinite(grad_norm.detach().float()).all()]
        checks += [torch.isfinite(b).all() for b in buffers if b.is_floating_point()]
        flag = torch.stack([c.to(loss.device) for c in checks]).all().to(torch.int32)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    @staticmethod
    def check_weights(model, accumulated_iter):
        """``NonFiniteTrainingError`` when a finite-looking step still overflowed a weight (a huge learning rate
        times a large gradient): there is nothing left to continue from."""
        named = list(model.named_parameters())
        finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named])   # one host sync per step
        if not bool(finite.all()):
            bad = [name for (name, _), ok in zip(named, finite.tolist()) if not ok]
            raise NonFiniteTrainingError(
                f'training stopped at iteration {accumulated_iter}: the update made {len(bad)} weight tensor(s) '
                f'NaN/inf ({bad[:3]}); the last checkpoint holds the last finite weights. Lower OPTIMIZATION.LR')

    def record(self, finite, accumulated_iter, loss):
        """Count a step; ``NonFiniteTrainingError`` after ``max_consecutive`` skipped ones in a row."""
        if finite:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.skipped += 1
        if self.logger is not None:
            self.logger.warning('iteration %d: loss %s or its gradient is not finite: step skipped (%d in a row, '
                                '%d in all)', accumulated_iter, f'{float(loss):.4g}', self.consecutive, self.skipped)
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteTrainingError(
                f'training stopped at iteration {accumulated_iter}: {self.consecutive} consecutive steps with a '
                f'NaN/inf loss or gradient (OPTIMIZATION.MAX_NONFINITE_STEPS = {self.max_consecutive}); the last '
                'checkpoint holds the last finite weights. Lower OPTIMIZATION.LR or check the data')


def _snapshot_buffers(model):
    return [b.detach().clone() for b in model.buffers()]


def _restore_buffers(model, snapshot):
    with torch.no_grad():
        for buf, saved in zip(model.buffers(), snapshot):
            buf.copy_(saved)


def train_step(model, optimizer, batch, model_func, optim_cfg, amp, guard, accumulated_iter):
    """One optimisation step; skipped (no update, buffers restored) when the guard finds it non-finite.

    Returns:
        (loss, tb_dict, disp_dict) of the forward.
    """
    autocast, scaler = amp
    buffers = _snapshot_buffers(model)
    model.train()
    optimizer.zero_grad()
    with autocast():
        loss, tb_dict, disp_dict = model_func(model, batch)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    grad_norm = clip_grad_norm_(model.parameters(), optim_cfg.GRAD_NORM_CLIP)
    if scaler is not None:
        # an inf gradient under float16 is the scaler's business: it skips the step (a NaN loss gives NaN
        # gradients, so that step is skipped too) and lowers the scale; only the loss counts for the guard
        finite = guard.all_finite(loss, torch.zeros(()), model.buffers())
        scaler.step(optimizer)
        scaler.update()
    else:
        finite = guard.all_finite(loss, grad_norm, model.buffers())
        if finite:
            optimizer.step()
    if not finite:
        optimizer.zero_grad()
        _restore_buffers(model, buffers)
    guard.record(finite, accumulated_iter, loss.detach())
    if finite:
        guard.check_weights(model, accumulated_iter)
    return loss, tb_dict, disp_dict


class IterationLog:
    """Rank-0 reporting of training iterations: logger lines or tqdm, and tensorboard scalars."""

    def __init__(self, tbar, total_it_each_epoch, start_it, tb_log, use_logger_to_record, logger,
                 logger_iter_interval, cur_epoch, total_epochs, leave_pbar):
        self.tbar, self.total, self.start_it, self.tb_log = tbar, total_it_each_epoch, start_it, tb_log
        self.use_logger, self.logger, self.interval = use_logger_to_record, logger, logger_iter_interval
        self.cur_epoch, self.total_epochs = cur_epoch, total_epochs
        self.pbar = None if use_logger_to_record else tqdm.tqdm(
            total=total_it_each_epoch, leave=leave_pbar, desc='train', dynamic_ncols=True, initial=start_it)
        self.data_time, self.batch_time = common_utils.AverageMeter(), common_utils.AverageMeter()
        self.losses = common_utils.AverageMeter()
        self.epoch_start = self.end = time.time()

    def learning_rate(self, lr, accumulated_iter):
        if self.tb_log is not None:
            self.tb_log.add_scalar('meta_data/learning_rate', lr, accumulated_iter)

    def iteration(self, cur_it, accumulated_iter, loss, lr, tb_dict, disp_dict, data_ready):
        now = time.time()
        self.data_time.update(data_ready - self.end)
        self.batch_time.update(now - self.end)
        self.end = now
        loss_value = loss.item()
        self.losses.update(loss_value)
        remaining = (self.total - cur_it - 1) * self.batch_time.avg
        if self.use_logger and self.logger is not None:
            if accumulated_iter % self.interval == 0 or cur_it == self.start_it or cur_it + 1 == self.total:
                self.logger.info(
                    'Train: %3d/%d (%3d%%) [%4d/%4d] Loss: %.4f (%.4f) LR: %.3e Time cost: %s/%s '
                    'Data %.2f(%.2f) Batch %.2f(%.2f)', self.cur_epoch + 1, self.total_epochs,
                    int(100.0 * (cur_it + 1) / self.total), cur_it, self.total, loss_value, self.losses.avg, lr,
                    self.tbar.format_interval(now - self.epoch_start), self.tbar.format_interval(remaining),
                    self.data_time.val, self.data_time.avg, self.batch_time.val, self.batch_time.avg)
        elif self.pbar is not None:
            disp_dict.update({'loss': f'{loss_value:.4f}', 'lr': f'{lr:.3e}',
                              'd_time': f'{self.data_time.val:.2f}({self.data_time.avg:.2f})',
                              'b_time': f'{self.batch_time.val:.2f}({self.batch_time.avg:.2f})'})
            self.pbar.update()
            self.pbar.set_postfix(dict(total_it=accumulated_iter))
            self.tbar.set_postfix(disp_dict)
        if self.tb_log is not None:
            self.tb_log.add_scalar('train/loss', loss_value, accumulated_iter)
            for key, val in tb_dict.items():
                self.tb_log.add_scalar('train/' + key, float(val), accumulated_iter)

    def close(self):
        if self.pbar is not None:
            self.pbar.close()


class LatestModelSaver:
    """Writes ``latest_model.pth`` every ``interval`` seconds of training (0: every iteration; None or < 0:
    never); ``epoch`` in it is the unfinished 0-based epoch, so a resume restarts it at ``it``.

    One saver lives for the whole run and its clock runs across epochs: a per-epoch clock (OpenPCDet's) never
    fires when an epoch is shorter than the interval, and a stopped run then loses every epoch since its last
    ``checkpoint_epoch_N``."""

    def __init__(self, ckpt_save_dir, interval, batch_size, logger):
        self.path = None if ckpt_save_dir is None else os.path.join(str(ckpt_save_dir), 'latest_model')
        self.interval, self.batch_size, self.logger = interval, batch_size, logger
        self.last_save = time.monotonic()

    def maybe_save(self, model, optimizer, cur_epoch, accumulated_iter):
        if self.path is None or self.interval is None or self.interval < 0:
            return
        if time.monotonic() - self.last_save < self.interval:
            return
        checkpoint_utils.save_checkpoint(checkpoint_utils.checkpoint_state(
            model, optimizer, cur_epoch, accumulated_iter, batch_size=self.batch_size), filename=self.path)
        if self.logger is not None:
            self.logger.info('Save latest model to %s.pth (epoch %d, it %d)', self.path, cur_epoch, accumulated_iter)
        self.last_save = time.monotonic()


def train_one_epoch(model, optimizer, train_loader, model_func, lr_scheduler, accumulated_iter, optim_cfg,
                    total_it_each_epoch, dataloader_iter, amp, guard, iteration_log=None, latest_saver=None,
                    cur_epoch=None):
    """Run the rest of one epoch, starting at iteration ``accumulated_iter % total_it_each_epoch`` (mid-epoch
    resume). ``iteration_log`` / ``latest_saver``: rank 0's reporting and ``latest_model`` writer (None on other
    ranks). Returns ``(accumulated_iter, dataloader_iter)``."""
    start_it = accumulated_iter % total_it_each_epoch
    for cur_it in range(start_it, total_it_each_epoch):
        try:
            batch = next(dataloader_iter)
        except StopIteration:
            dataloader_iter = iter(train_loader)
            batch = next(dataloader_iter)
        data_ready = time.time()
        lr_scheduler.step(accumulated_iter, cur_epoch)
        cur_lr = _current_lr(optimizer)
        if iteration_log is not None:
            iteration_log.learning_rate(cur_lr, accumulated_iter)
        loss, tb_dict, disp_dict = train_step(model, optimizer, batch, model_func, optim_cfg, amp, guard,
                                              accumulated_iter)
        accumulated_iter += 1
        if iteration_log is not None:
            iteration_log.iteration(cur_it, accumulated_iter, loss, cur_lr, tb_dict, disp_dict, data_ready)
        if latest_saver is not None:
            latest_saver.maybe_save(model, optimizer, cur_epoch, accumulated_iter)
    if iteration_log is not None:
        iteration_log.close()
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
    """Train epochs ``start_epoch .. total_epochs - 1``; ``start_iter`` = accumulated iterations (resume).

    Checkpoints record the total batch size (``batch_size``: the loader's batch size times the world size), so
    that a resume with another one is refused instead of mapping ``it`` to the wrong epoch.
    """
    del show_gpu_stat  # accepted for OpenPCDet compatibility; no GPU memory line is printed
    accumulated_iter = start_iter
    amp = make_amp(use_amp, device, logger, init_scale=optim_cfg.get('LOSS_SCALE_FP16', None) or 2.0 ** 16)
    rank_now, world_size = get_dist_info()
    rank = rank_now if rank is None else rank
    guard = NonFiniteGuard(optim_cfg.get('MAX_NONFINITE_STEPS', DEFAULT_MAX_NONFINITE_STEPS),
                           logger if rank == 0 else None)
    total_batch = None if train_loader.batch_size is None else train_loader.batch_size * world_size
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
        latest_saver = LatestModelSaver(ckpt_save_dir, ckpt_save_time_interval, total_batch, logger) \
            if rank == 0 else None
        for cur_epoch in tbar:
            if train_sampler is not None and hasattr(train_sampler, 'set_epoch'):
                train_sampler.set_epoch(cur_epoch)
            if dataloader_iter is None or not merge_all_iters_to_one_epoch:
                dataloader_iter = iter(train_loader)  # after set_epoch, so the new epoch order is used
            if lr_warmup_scheduler is not None and cur_epoch < optim_cfg.WARMUP_EPOCH:
                cur_scheduler = lr_warmup_scheduler
            else:
                cur_scheduler = lr_scheduler
            iteration_log = None
            if rank == 0:
                iteration_log = IterationLog(
                    tbar, total_it_each_epoch, accumulated_iter % total_it_each_epoch, tb_log, use_logger_to_record,
                    logger, logger_iter_interval, cur_epoch, total_epochs, leave_pbar=(cur_epoch + 1 == total_epochs))
            accumulated_iter, dataloader_iter = train_one_epoch(
                model, optimizer, train_loader, model_func, lr_scheduler=cur_scheduler,
                accumulated_iter=accumulated_iter, optim_cfg=optim_cfg, total_it_each_epoch=total_it_each_epoch,
                dataloader_iter=dataloader_iter, amp=amp, guard=guard, iteration_log=iteration_log,
                latest_saver=latest_saver, cur_epoch=cur_epoch)
            trained_epoch = cur_epoch + 1
            if trained_epoch % ckpt_save_interval == 0 and rank == 0:
                prune_checkpoints(ckpt_save_dir, max_ckpt_save_num)
                ckpt_name = os.path.join(str(ckpt_save_dir), f'checkpoint_epoch_{trained_epoch}')
                checkpoint_utils.save_checkpoint(
                    checkpoint_utils.checkpoint_state(model, optimizer, trained_epoch, accumulated_iter,
                                                      batch_size=total_batch),
                    filename=ckpt_name)
                if logger is not None:
                    logger.info('Save checkpoint to %s.pth', ckpt_name)
    if guard.skipped and logger is not None and rank == 0:
        logger.warning('%d step(s) with a non-finite loss or gradient were skipped', guard.skipped)
    return accumulated_iter
