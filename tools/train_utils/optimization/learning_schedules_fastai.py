"""Per-iteration learning-rate schedules: OneCycle (cosine), step decay with floor, cosine warm-up.

All schedules share ``step(accumulated_iter, cur_epoch=None)``: they are functions of the global iteration
(OpenPCDet calls them once per iteration before the forward pass), so resuming at any iteration reproduces
the same learning rate.
"""
import math


def annealing_cos(start, end, pct):
    """Cosine from ``start`` (pct 0) to ``end`` (pct 1)."""
    pct = min(max(pct, 0.0), 1.0)
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


class OneCycle:
    """fastai OneCycle over ``total_step`` iterations.

    lr: cosine ``lr_max / div_factor -> lr_max`` during the first ``pct_start * total_step`` iterations, then
    cosine ``lr_max -> lr_max / div_factor / 1e4``. momentum (Adam beta1): ``moms[0] -> moms[1] -> moms[0]``.
    """

    def __init__(self, optimizer, total_step, lr_max, moms, div_factor, pct_start):
        if total_step < 1:
            raise ValueError(f'OneCycle: total_step must be >= 1, got {total_step}')
        self.optimizer = optimizer
        self.total_step = int(total_step)
        self.lr_max, self.moms = float(lr_max), tuple(float(m) for m in moms)
        self.div_factor, self.pct_start = float(div_factor), float(pct_start)
        self.warm_steps = int(self.total_step * self.pct_start)
        low = self.lr_max / self.div_factor
        self.lr_phases = ((self.warm_steps, low, self.lr_max), (self.total_step, self.lr_max, low / 1e4))
        self.mom_phases = ((self.warm_steps, self.moms[0], self.moms[1]),
                           (self.total_step, self.moms[1], self.moms[0]))
        self.step(0)

    @staticmethod
    def _value(phases, step):
        start = 0
        for end, v0, v1 in phases:
            if step < end or end == phases[-1][0]:
                return annealing_cos(v0, v1, (step - start) / max(end - start, 1))
            start = end
        raise AssertionError('unreachable')

    def lr_at(self, step):
        return self._value(self.lr_phases, step)

    def mom_at(self, step):
        return self._value(self.mom_phases, step)

    def step(self, step, cur_epoch=None):
        self.optimizer.lr = self.lr_at(step)
        self.optimizer.mom = self.mom_at(step)

    def get_last_lr(self):
        return [g['lr'] for g in self.optimizer.param_groups]


class _GroupSchedule:
    """Sets ``group['lr'] = base_lr * factor(step)`` on every param group of a torch optimizer."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g.setdefault('initial_lr', float(g['lr']))
        self.base_lrs = [float(g['initial_lr']) for g in optimizer.param_groups]

    def lr_at(self, step):
        raise NotImplementedError

    def step(self, step, cur_epoch=None):
        for g, lr in zip(self.optimizer.param_groups, self.lr_at(step)):
            g['lr'] = float(lr)

    def get_last_lr(self):
        return [g['lr'] for g in self.optimizer.param_groups]


class LambdaStepLR(_GroupSchedule):
    """``lr = base_lr * max(prod(lr_decay for each decay step passed), lr_clip / base_lr)`` (adam / sgd)."""

    def __init__(self, optimizer, decay_steps, lr_decay, lr_clip):
        super().__init__(optimizer)
        self.decay_steps, self.lr_decay, self.lr_clip = list(decay_steps), float(lr_decay), float(lr_clip)
        self.step(0)

    def lr_at(self, step):
        factor = 1.0
        for s in self.decay_steps:
            if step >= s:
                factor *= self.lr_decay
        return [base * max(factor, self.lr_clip / base) for base in self.base_lrs]


class CosineWarmupLR(_GroupSchedule):
    """Warm-up over ``t_max`` iterations: cosine ``eta_min -> base_lr``."""

    def __init__(self, optimizer, t_max, eta_min=0.0):
        super().__init__(optimizer)
        self.t_max, self.eta_min = max(int(t_max), 1), float(eta_min)

    def lr_at(self, step):
        pct = min(step / self.t_max, 1.0)
        return [self.eta_min + (base - self.eta_min) * (1 - math.cos(math.pi * pct)) / 2 for base in self.base_lrs]
