"""Fused edge kernels of the PointDistiller loss: the (N, K, C') edge tensors are never stored.

With the graph conv folded into node terms (``GraphConvAdapter.node_terms``), an edge embedding is
``y_ik = relu(a[nbr[i, k]] + b[i])`` with ``a`` (M, C') per candidate node and ``b`` (N, C') per selected node.
Two functions need all N*K edges:

- ``neighbour_sum(a, nbr)`` -> (N, C'): ``sum_k a[nbr[i, k]]`` (the BatchNorm variance of the edges needs it);
- ``edge_relu_mse(a_s, b_s, a_t, b_t, nbr, w)`` -> scalar:
  ``sum_i w_i sum_{k,c} (relu(a_s[j] + b_s[i]) - relu(a_t[j] + b_t[i]))^2 / (N K C')``, j = nbr[i, k].

On CPU tensors both run as parallel numba kernels: one pass over the edges forward, one backward, nothing
edge-sized in memory. The backward scatters into per-node rows shared by many edges, so each thread scatters
into its own (M, C') copy and the copies are summed (M is a few thousand pillars: small). Elsewhere (CUDA) they
run as the plain torch expressions (``*_torch``), which the tests compare against.
"""
import numpy as np
import torch

_KERNELS = {}


def _numba_kernels():
    """Compile (once, cached on disk) and return the numba kernels (numba is imported here, not at module import,
    so that importing the distillation package stays cheap)."""
    if 'k' in _KERNELS:
        return _KERNELS['k']
    from numba import njit, prange

    @njit(cache=True)
    def _partition(n, threads):
        """(parts, bounds): rows 0..n-1 cut into one contiguous range per thread, bounds (parts + 1,).
        ``threads`` comes from the caller (numba.get_num_threads() inside a kernel stops on-disk caching)."""
        parts = max(1, min(threads, n))
        bounds = np.empty(parts + 1, np.int64)
        for p in range(parts + 1):
            bounds[p] = p * n // parts
        return parts, bounds

    @njit(cache=True, parallel=True)
    def nsum_fwd(a, nbr):
        n, k = nbr.shape
        c = a.shape[1]
        out = np.zeros((n, c), np.float32)
        for i in prange(n):                      # each task owns its output rows
            row = out[i]
            for kk in range(k):
                src = a[nbr[i, kk]]
                for ch in range(c):
                    row[ch] += src[ch]
        return out

    @njit(cache=True, parallel=True)
    def nsum_bwd(grad, nbr, m, threads):
        n, k = nbr.shape
        c = grad.shape[1]
        parts, bounds = _partition(n, threads)
        out = np.zeros((parts, m, c), np.float32)  # one scatter target per task: no write races
        for p in prange(parts):
            dst = out[p]
            for i in range(bounds[p], bounds[p + 1]):
                g = grad[i]
                for kk in range(k):
                    row = dst[nbr[i, kk]]
                    for ch in range(c):
                        row[ch] += g[ch]
        return out.sum(axis=0)

    @njit(cache=True, parallel=True)
    def mse_fwd(a_s, b_s, a_t, b_t, nbr, w):
        n, k = nbr.shape
        c = a_s.shape[1]
        per_node = np.zeros(n, np.float64)
        zero = np.float32(0.0)
        for i in prange(n):
            acc = 0.0
            bs = b_s[i]
            bt = b_t[i]
            for kk in range(k):
                j = nbr[i, kk]
                rs = a_s[j]
                rt = a_t[j]
                for ch in range(c):
                    d = max(rs[ch] + bs[ch], zero) - max(rt[ch] + bt[ch], zero)
                    acc += d * d
            per_node[i] = acc * w[i]
        return per_node.sum()

    @njit(cache=True, parallel=True)
    def mse_bwd(a_s, b_s, a_t, b_t, nbr, w, coef, threads):
        n, k = nbr.shape
        m, c = a_s.shape
        parts, bounds = _partition(n, threads)
        ga_s = np.zeros((parts, m, c), np.float32)  # one scatter target per task: no write races
        ga_t = np.zeros((parts, m, c), np.float32)
        gb_s = np.zeros((n, c), np.float32)
        gb_t = np.zeros((n, c), np.float32)
        zero = np.float32(0.0)
        for p in prange(parts):
            dst_s = ga_s[p]
            dst_t = ga_t[p]
            for i in range(bounds[p], bounds[p + 1]):
                f = np.float32(coef * w[i])
                bs = b_s[i]
                bt = b_t[i]
                acc_s = gb_s[i]
                acc_t = gb_t[i]
                for kk in range(k):
                    j = nbr[i, kk]
                    rs = a_s[j]
                    rt = a_t[j]
                    out_s = dst_s[j]
                    out_t = dst_t[j]
                    for ch in range(c):         # branch-free: vectorises over the channels
                        ps = rs[ch] + bs[ch]
                        pt = rt[ch] + bt[ch]
                        g = f * (max(ps, zero) - max(pt, zero))
                        g_s = g if ps > zero else zero
                        g_t = g if pt > zero else zero
                        out_s[ch] += g_s
                        acc_s[ch] += g_s
                        out_t[ch] -= g_t
                        acc_t[ch] -= g_t
        return ga_s.sum(axis=0), gb_s, ga_t.sum(axis=0), gb_t

    _KERNELS['k'] = (nsum_fwd, nsum_bwd, mse_fwd, mse_bwd)
    return _KERNELS['k']


def _threads():
    import numba
    return numba.get_num_threads()


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
        return torch.from_numpy(nsum_bwd(_np(grad), _np(nbr, np.int64), ctx.m, _threads())).to(grad.dtype), None


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
        out = mse_bwd(_np(a_s), _np(b_s), _np(a_t), _np(b_t), _np(nbr, np.int64), _np(w), coef, _threads())
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
    return all(t.device.type == 'cpu' for t in tensors)


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
