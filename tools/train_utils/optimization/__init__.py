"""build_optimizer / build_scheduler from ``cfg.OPTIMIZATION`` (OpenPCDet keys, see spec section 8)."""
from functools import partial

import torch.optim as optim

from .fastai_optim import OptimWrapper
from .learning_schedules_fastai import CosineWarmupLR, LambdaStepLR, OneCycle

OPTIMIZERS = ('adam', 'sgd', 'adam_onecycle')


def build_optimizer(model, optim_cfg):
    """Optimizer over ``model.parameters()`` (for a Distiller: student + adapters; the teacher is not a child)."""
    name = optim_cfg.OPTIMIZER
    params = [p for p in model.parameters() if p.requires_grad]
    if name == 'adam':
        return optim.Adam(params, lr=optim_cfg.LR, weight_decay=optim_cfg.WEIGHT_DECAY)
    if name == 'sgd':
        return optim.SGD(params, lr=optim_cfg.LR, weight_decay=optim_cfg.WEIGHT_DECAY,
                         momentum=optim_cfg.MOMENTUM)
    if name == 'adam_onecycle':
        betas = tuple(float(b) for b in optim_cfg.get('BETAS', (0.9, 0.99)))
        return OptimWrapper(partial(optim.Adam, betas=betas), 3e-3, model, wd=optim_cfg.WEIGHT_DECAY,
                            true_wd=True, bn_wd=True)
    raise KeyError(f'OPTIMIZATION.OPTIMIZER: unknown optimizer {name!r}; valid: {list(OPTIMIZERS)}')


def build_scheduler(optimizer, total_iters_each_epoch, total_epochs, last_epoch, optim_cfg):
    """Return ``(lr_scheduler, lr_warmup_scheduler_or_None)``; both are stepped with the global iteration.

    ``last_epoch`` is accepted for OpenPCDet compatibility; the schedules are pure functions of the iteration,
    so resuming needs no scheduler state.
    """
    total_steps = total_iters_each_epoch * total_epochs
    if optim_cfg.OPTIMIZER == 'adam_onecycle':
        return OneCycle(optimizer, total_steps, optim_cfg.LR, list(optim_cfg.MOMS), optim_cfg.DIV_FACTOR,
                        optim_cfg.PCT_START), None
    decay_steps = [e * total_iters_each_epoch for e in optim_cfg.get('DECAY_STEP_LIST', [])]
    scheduler = LambdaStepLR(optimizer, decay_steps, optim_cfg.get('LR_DECAY', 0.1), optim_cfg.get('LR_CLIP', 0.0))
    warmup = None
    if optim_cfg.get('LR_WARMUP', False):
        warmup = CosineWarmupLR(optimizer, optim_cfg.WARMUP_EPOCH * total_iters_each_epoch,
                                eta_min=optim_cfg.LR / optim_cfg.DIV_FACTOR)
    return scheduler, warmup


__all__ = ['build_optimizer', 'build_scheduler', 'OptimWrapper', 'OneCycle', 'LambdaStepLR', 'CosineWarmupLR']
