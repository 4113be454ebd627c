"""Fused edge kernels of the PointDistiller loss: the (N, K, C') edge tensors are never stored.

With the graph conv folded into node terms (``GraphConvAdapter.node_terms``), an edge embedding is
``y_ik = relu(a[nbr[i, k]] + b[i])`` with ``a`` (M, C') per candidate node and ``b`` (N, C') per selected node.
Two functions need all N*K edges:

- ``neighbour_sum(a, nbr)`` -> (N, C'): ``sum_k a[nbr[i, k]]`` (the BatchNorm variance of the edges needs it);
- ``edge_relu_mse(a_s, b_s, a_t, b_t, nbr, w)`` -> scalar:
  ``sum_i w_i sum_{k,c} (relu(a_s[j] + b_s[i]) - relu(a_t[j] + b_t[i]))^2 / (N K C')``, j = nbr[i, k].

On CPU tensors both run as serial numba kernels: one pass over the edges forward, one backward, nothing
edge-sized in memory (serial because the loop is memory-light, compiles in a fraction of a parallel kernel's
time and the 2-core CPU target gains little from threads). Elsewhere (CUDA) they run as the plain torch
expressions (``*_torch``), which the tests compare against.
"""
import numpy as np
import torch

_KERNELS = {}


def _numba_kernels():
    """Compile (once, cached on disk) and return the numba kernels; None when numba is unavailable."""
    if 'k' in _KERNELS:
        return _KERNELS['k']
    try:
        from numba import njit
    except ImportError:  # numba is a dependency; without it the torch path still works
        _KERNELS['k'] = None
        return None

    @njit(cache=True)
    def nsum_fwd(a, nbr):
        n, k = nbr.shape
        c = a.shape[1]
        out = np.zeros((n, c), np.float32)
        for i in range(n):
            for kk in range(k):
                j = nbr[i, kk]
                for ch in range(c):
                    out[i, ch] += a[j, ch]
        return out

    @njit(cache=True)
    def nsum_bwd(grad, nbr, m):
        n, k = nbr.shape
        c = grad.shape[1]
        out = np.zeros((m, c), np.float32)
        for i in range(n):
            for kk in range(k):
                j = nbr[i, kk]
                for ch in range(c):
                    out[j, ch] += grad[i, ch]
        return out

    @njit(cache=True)
    def mse_fwd(a_s, b_s, a_t, b_t, nbr, w):
        n, k = nbr.shape
        c = a_s.shape[1]
        total = 0.0
        for i in range(n):
            acc = 0.0
            for kk in range(k):
                j = nbr[i, kk]
                for ch in range(c):
                    ys = max(a_s[j, ch] + b_s[i, ch], np.float32(0.0))
                    yt = max(a_t[j, ch] + b_t[i, ch], np.float32(0.0))
                    d = ys - yt
                    acc += d * d
            total += acc * w[i]
        return total

    @njit(cache=True)
    def mse_bwd(a_s, b_s, a_t, b_t, nbr, w, coef):
        n, k = nbr.shape
        m, c = a_s.shape
        ga_s = np.zeros((m, c), np.float32)
        ga_t = np.zeros((m, c), np.float32)
        gb_s = np.zeros((n, c), np.float32)
        gb_t = np.zeros((n, c), np.float32)
        for i in range(n):
            f = np.float32(coef * w[i])
            for kk in range(k):
                j = nbr[i, kk]
                for ch in range(c):
                    ps = a_s[j, ch] + b_s[i, ch]
                    pt = a_t[j, ch] + b_t[i, ch]
                    g = f * (max(ps, np.float32(0.0)) - max(pt, np.float32(0.0)))
                    if ps > 0:
                        ga_s[j, ch] += g
                        gb_s[i, ch] += g
                    if pt > 0:
                        ga_t[j, ch] -= g
                        gb_t[i, ch] -= g
        return ga_s, gb_s, ga_t, gb_t

    _KERNELS['k'] = (nsum_fwd, nsum_bwd, mse_fwd, mse_bwd)
    return _KERNELS['k']


def _np(t, dtype=np.float32):
    return np.ascontiguousarray(t.detach().cpu().numpy()).astype(dtype, copy=False)


class _NeighbourSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, nbr):
        nsum_fwd = _numba_kernels()[0]
        ctx.save_for_backward(nbr)
        ctx.m = a.shape[0]
        return torch.from_numpy(nsum_fwd(_np(a), _np(nbr, np.int64))).to(a.dtype)

    @staticmethod
    def backward(ctx, grad):
        (nbr,) = ctx.saved_tensors
        nsum_bwd = _numba_kernels()[1]
        return torch.from_numpy(nsum_bwd(_np(grad), _np(nbr, np.int64), ctx.m)).to(grad.dtype), None


class _EdgeReluMSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a_s, b_s, a_t, b_t, nbr, w):
        mse_fwd = _numba_kernels()[2]
        ctx.save_for_backward(a_s, b_s, a_t, b_t, nbr, w)
        n, k = nbr.shape
        ctx.denom = float(n * k * a_s.shape[1])
        total = mse_fwd(_np(a_s), _np(b_s), _np(a_t), _np(b_t), _np(nbr, np.int64), _np(w))
        return torch.tensor(total / ctx.denom, dtype=a_s.dtype)

    @staticmethod
    def backward(ctx, grad):
        a_s, b_s, a_t, b_t, nbr, w = ctx.saved_tensors
        mse_bwd = _numba_kernels()[3]
        coef = 2.0 * float(grad) / ctx.denom
        out = mse_bwd(_np(a_s), _np(b_s), _np(a_t), _np(b_t), _np(nbr, np.int64), _np(w), coef)
        return tuple(torch.from_numpy(g).to(a_s.dtype) for g in out) + (None, None)


def neighbour_sum_torch(a, nbr):
    """Reference: (M, C'), (N, K) -> (N, C') sum of the K neighbour rows."""
    n, k = nbr.shape
    return a.index_select(0, nbr.reshape(-1)).view(n, k, -1).sum(dim=1)


def edge_relu_mse_torch(a_s, b_s, a_t, b_t, nbr, w):
    """Reference of ``edge_relu_mse`` with explicit (N, K, C') edge tensors."""
    flat = nbr.reshape(-1)
    n, k = nbr.shape
    y_s = torch.relu(a_s.index_select(0, flat).view(n, k, -1) + b_s.unsqueeze(1))
    y_t = torch.relu(a_t.index_select(0, flat).view(n, k, -1) + b_t.unsqueeze(1))
    return (w.view(-1, 1, 1) * (y_s - y_t).pow(2)).mean()


def _use_numba(*tensors):
    return all(t.device.type == 'cpu' for t in tensors) and _numba_kernels() is not None


def neighbour_sum(a, nbr):
    """(M, C') float, (N, K) int64 -> (N, C'): ``sum_k a[nbr[i, k]]`` (differentiable in ``a``)."""
    return _NeighbourSum.apply(a, nbr) if _use_numba(a) else neighbour_sum_torch(a, nbr)


def edge_relu_mse(a_s, b_s, a_t, b_t, nbr, w):
    """Weighted MSE between the student and teacher edge embeddings (see module docstring); 0-dim tensor.

    Args:
        a_s, a_t: (M, C') float node terms of all candidate nodes; b_s, b_t: (N, C') of the selected nodes.
        nbr: (N, K) int64 rows of ``a_*``; w: (N,) float node weights (no gradient).
    """
    if _use_numba(a_s, a_t):
        return _EdgeReluMSE.apply(a_s, b_s, a_t, b_t, nbr, w.detach())
    return edge_relu_mse_torch(a_s, b_s, a_t, b_t, nbr, w.detach())
