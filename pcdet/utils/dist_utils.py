"""torch.distributed helpers: process-group init (torchrun / slurm), rank info, object gather, CPU SyncBN.

Backends: ``nccl`` when CUDA is available, ``gloo`` otherwise (CPU processes). Every process group gets a finite
timeout so that a dead peer turns into an exception (non-zero exit) instead of an endless hang.
"""
import datetime
import os
import subprocess

import torch
import torch.nn as nn

DEFAULT_TIMEOUT_S = 600


def is_dist():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def get_dist_info():
    """Return ``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if is_dist():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def default_backend():
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def _timeout():
    """Process-group timeout in seconds (env ``PCDET_DIST_TIMEOUT`` overrides the 600 s default)."""
    return datetime.timedelta(seconds=float(os.environ.get('PCDET_DIST_TIMEOUT', DEFAULT_TIMEOUT_S)))


def init_dist_pytorch(tcp_port=None, local_rank=None, backend='auto'):
    """Join the process group started by torchrun (env:// rendezvous: MASTER_ADDR/PORT, RANK, WORLD_SIZE).

    ``local_rank`` defaults to env ``LOCAL_RANK`` (torch >= 2 no longer passes ``--local_rank``). On CUDA the
    process is pinned to GPU ``local_rank % device_count``. ``tcp_port`` is unused (torchrun chose the port).
    Returns ``(world_size, local_rank)`` — the world size, not the local GPU count (OpenPCDet's multi-node bug).
    """
    if local_rank is None or local_rank < 0:
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise RuntimeError(f'--launcher pytorch: environment variable {key} is not set; start the script with '
                               'torchrun (tools/scripts/dist_train.sh) or use --launcher none')
    backend = default_backend() if backend == 'auto' else backend
    if backend == 'nccl':
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    torch.distributed.init_process_group(backend=backend, init_method='env://', timeout=_timeout())
    return torch.distributed.get_world_size(), local_rank


def init_dist_slurm(tcp_port, local_rank=None, backend='auto'):
    """Join a process group from SLURM variables (one task per GPU): rank SLURM_PROCID, master = first node.

    Returns ``(world_size, rank)``.
    """
    proc_id = int(os.environ['SLURM_PROCID'])
    ntasks = int(os.environ['SLURM_NTASKS'])
    node_list = os.environ['SLURM_NODELIST']
    addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1').strip()
    os.environ.setdefault('MASTER_PORT', str(tcp_port))
    os.environ.setdefault('MASTER_ADDR', addr or '127.0.0.1')
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['RANK'] = str(proc_id)
    os.environ['LOCAL_RANK'] = str(int(os.environ.get('SLURM_LOCALID', proc_id % max(torch.cuda.device_count(), 1))))
    backend = default_backend() if backend == 'auto' else backend
    if backend == 'nccl':
        torch.cuda.set_device(proc_id % torch.cuda.device_count())
    torch.distributed.init_process_group(backend=backend, init_method='env://', timeout=_timeout())
    return torch.distributed.get_world_size(), torch.distributed.get_rank()


def barrier():
    if is_dist():
        torch.distributed.barrier()


def shut_down():
    """End of a successful distributed run: barrier, then destroy the process group (no-op outside one).

    Why: a process that exits with its gloo group alive leaves the group's C++ worker threads to interpreter
    finalization, which can abort it (SIGABRT, "terminate called without an active exception"), turning a finished
    run into a non-zero exit. The barrier first, so that no rank tears the group down while another still runs a
    collective. Not for error paths: destroying a group while a peer is inside a collective can deadlock.
    """
    if is_dist():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def broadcast_object(obj, src=0):
    """Return rank ``src``'s ``obj`` on every rank (pickled through the process group)."""
    if not is_dist():
        return obj
    holder = [obj]
    torch.distributed.broadcast_object_list(holder, src=src)
    return holder[0]


def gather_objects(obj, dst=0):
    """Gather one picklable object per rank, in memory. Returns the list (rank order) on ``dst``, None elsewhere."""
    if not is_dist():
        return [obj]
    rank, world_size = get_dist_info()
    out = [None] * world_size if rank == dst else None
    torch.distributed.gather_object(obj, out, dst=dst)
    return out


def all_gather_objects(obj):
    if not is_dist():
        return [obj]
    out = [None] * get_dist_info()[1]
    torch.distributed.all_gather_object(out, obj)
    return out


def check_batch_size(total_batch_size, world_size):
    """Per-process batch size from the TOTAL ``--batch_size``; raises ValueError when it does not divide."""
    if total_batch_size < 1 or total_batch_size % world_size != 0:
        raise ValueError(f'--batch_size {total_batch_size} is the total batch size and must be a positive multiple '
                         f'of the number of processes ({world_size})')
    return total_batch_size // world_size


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics are all-reduced over the process group (works with gloo on CPU).

    torch.nn.SyncBatchNorm needs CUDA; this one uses the autograd-aware
    ``torch.distributed.nn.functional.all_reduce`` so gradients flow through the global mean/variance exactly
    as in single-process BN over the concatenated batch. Input ``(N, C, *)``; mean and (biased) variance are
    computed in two all-reduce rounds for numerical stability; running variance uses the unbiased estimate.
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f'CPUSyncBatchNorm expects (N, C, *) input, got shape {tuple(input.shape)}')

    def forward(self, x):
        self._check_input_dim(x)
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats or not is_dist() or get_dist_info()[1] == 1:
            return super().forward(x)
        all_reduce = _autograd_all_reduce()
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = [1, c] + [1] * (x.dim() - 2)
        local_n = torch.tensor([x.numel() / max(c, 1)], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dims), local_n]))
        n = sums[c]
        mean = sums[:c] / n
        sq = all_reduce(((x - mean.view(shape)) ** 2).sum(dims))
        var = sq / n
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * (n / (n - 1).clamp(min=1))
                self.running_mean.mul_(1 - factor).add_(mean.detach() * factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach() * factor)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def bn_stats_synced(bn):
    """True when ``bn`` (a BatchNorm module) should all-reduce its batch statistics: it was converted by
    :func:`convert_sync_batchnorm`, is in training mode and a process group with > 1 rank is running. Modules that
    compute BN statistics by hand (e.g. fused adapters) use this with :func:`all_reduce_sum`."""
    return (isinstance(bn, (CPUSyncBatchNorm, nn.SyncBatchNorm)) and bn.training and is_dist()
            and get_dist_info()[1] > 1)


def all_reduce_sum(tensor):
    """Differentiable sum over all ranks (identity outside a process group); gradients are all-reduced too."""
    if not is_dist() or get_dist_info()[1] == 1:
        return tensor
    return _autograd_all_reduce()(tensor)


def _autograd_all_reduce():
    """torch's differentiable all_reduce (sum); its backward all-reduces the gradient, which is what makes the
    synchronised statistics' gradients exact. (torch 2.x marks it deprecated without a differentiable
    replacement, so the FutureWarning is silenced.)"""
    import warnings

    from torch.distributed.nn.functional import all_reduce

    def reduce(t):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', FutureWarning)
            return all_reduce(t)
    return reduce


def convert_sync_batchnorm(module, backend=None):
    """Replace every BatchNorm of ``module`` (its registered submodules only) with a synchronised one.

    nccl (CUDA) -> ``torch.nn.SyncBatchNorm``; gloo (CPU) -> :class:`CPUSyncBatchNorm`. A Distiller's frozen
    teacher is not a registered submodule and is therefore left untouched.
    """
    backend = backend or (torch.distributed.get_backend() if is_dist() else default_backend())
    if backend == 'nccl':
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module):
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        if module.track_running_stats:
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
