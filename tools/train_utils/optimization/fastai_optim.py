"""fastai-style optimizer wrapper used by ``OPTIMIZER: adam_onecycle`` (OpenPCDet semantics, own code).

The model's parameters are split in two groups: those owned by BatchNorm layers and all others. The inner
optimizer (Adam) runs with ``weight_decay=0``; decoupled ("true") weight decay ``p <- p * (1 - wd * lr)`` is
applied to both groups before each step, as OpenPCDet does (``true_wd=True, bn_wd=True``).
Learning rate and momentum (Adam beta1) are set on every group through the ``lr`` / ``mom`` properties, which
the OneCycle schedule drives; they are stored as Python floats so checkpoints load with ``weights_only``.
"""
import torch
import torch.nn as nn

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def split_bn_params(model):
    """Return ``(other_params, bn_params)``: trainable parameters of ``model``, BN-owned ones separated.

    Every module contributes its own (non-recursive) parameters, so parameters held directly by a container
    module are not lost (OpenPCDet's ``flatten_model`` only visits leaf modules).
    """
    seen, other, bn = set(), [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (bn if isinstance(module, BN_TYPES) else other).append(p)
    return other, bn


class OptimWrapper:
    """Wrap ``opt_func(param_groups, lr=...)``; exposes ``lr``, ``mom``, ``wd`` and the optimizer protocol.

    Duck-types ``torch.optim.Optimizer`` (``param_groups``, ``state``, ``step``, ``zero_grad``,
    ``state_dict``, ``load_state_dict``) so GradScaler and gradient clipping work on it.
    """

    def __init__(self, opt_func, lr, model, wd=0.0, true_wd=True, bn_wd=True):
        other, bn = split_bn_params(model)
        groups = [{'params': other}]
        if bn:
            groups.append({'params': bn, 'is_bn': True})
        self.opt = opt_func(groups, lr=float(lr))
        self.true_wd, self.bn_wd = true_wd, bn_wd
        self._wd = float(wd)
        for g in self.opt.param_groups:
            g['weight_decay'] = 0.0 if true_wd else (0.0 if g.get('is_bn') and not bn_wd else self._wd)
        self.lr = float(lr)

    # --- optimizer protocol ---
    @property
    def param_groups(self):
        return self.opt.param_groups

    @property
    def state(self):
        return self.opt.state

    @property
    def defaults(self):
        return self.opt.defaults

    def zero_grad(self, set_to_none=True):
        self.opt.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        if self.true_wd and self._wd != 0:
            for g in self.opt.param_groups:
                if g.get('is_bn') and not self.bn_wd:
                    continue
                for p in g['params']:
                    if p.grad is not None:
                        p.mul_(1 - self._wd * g['lr'])
        return self.opt.step(closure)

    def state_dict(self):
        return self.opt.state_dict()

    def load_state_dict(self, state_dict):
        self.opt.load_state_dict(state_dict)
        for g in self.opt.param_groups:  # old checkpoints may carry numpy scalars
            g['lr'] = float(g['lr'])
            if 'betas' in g:
                g['betas'] = tuple(float(b) for b in g['betas'])

    # --- hyper-parameters driven by the schedule ---
    @property
    def lr(self):
        return self.opt.param_groups[0]['lr']

    @lr.setter
    def lr(self, value):
        for g in self.opt.param_groups:
            g['lr'] = float(value)

    @property
    def mom(self):
        g = self.opt.param_groups[0]
        return g['betas'][0] if 'betas' in g else g['momentum']

    @mom.setter
    def mom(self, value):
        for g in self.opt.param_groups:
            if 'betas' in g:
                g['betas'] = (float(value), float(g['betas'][1]))
            elif 'momentum' in g:
                g['momentum'] = float(value)

    @property
    def wd(self):
        return self._wd

    @wd.setter
    def wd(self, value):
        self._wd = float(value)

    def __repr__(self):
        return f'OptimWrapper({self.opt!r}, wd={self._wd}, true_wd={self.true_wd}, bn_wd={self.bn_wd})'
