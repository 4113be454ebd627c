"""Exact k-nearest neighbours (squared L2) of query rows among reference rows, batched, any channel count.

``knn`` never materialises the N x M distance matrix: CPU tensors / numpy arrays go to the tiled numba kernel
(``knn_cpu.py``), CUDA tensors to the compiled ``knn_cuda`` extension (``src/knn_kernel.cu``, loaded lazily).
``knn_dense_reference`` is the dense torch formulation used by the tests, ``knn_dense_matmul`` the original
PointDistiller formulation (``-2 Q X^T + |Q|^2 + |X|^2`` then ``topk``), kept for benchmarks.

Results are identical across the three exact paths (CPU kernel, CUDA kernel, dense reference):
- distance of query q to reference r: ``d = 0; for c in range(C): d = d + (q[c] - r[c]) ** 2`` evaluated in
  the input dtype in that channel order, so a row's distance to itself is exactly 0;
- each query's neighbours are sorted by (distance, reference index): equal distances -> smaller index first.
Gradients are not tracked: the op returns indices for the caller to gather with (distances are detached).
"""
import numpy as np
import torch

_FLOAT_DTYPES = (torch.float32, torch.float64)


def _prepare(query, ref, k):
    """Validate and bring inputs to (B, N, C) / (B, M, C) contiguous tensors of one float dtype.

    Returns (query, ref, squeeze_batch, was_numpy).
    """
    was_numpy = isinstance(query, np.ndarray) and isinstance(ref, np.ndarray)
    if was_numpy:
        query, ref = torch.from_numpy(query), torch.from_numpy(ref)
    if not (isinstance(query, torch.Tensor) and isinstance(ref, torch.Tensor)):
        raise TypeError(f'knn_utils.py: query and ref must both be torch tensors or both numpy arrays, '
                        f'got {type(query).__name__} and {type(ref).__name__}')
    if query.dim() != ref.dim() or query.dim() not in (2, 3):
        raise ValueError(f'knn_utils.py: query and ref must both be (N, C)/(M, C) or both (B, N, C)/(B, M, C), '
                         f'got shapes {tuple(query.shape)} and {tuple(ref.shape)}')
    squeeze = query.dim() == 2
    if squeeze:
        query, ref = query.unsqueeze(0), ref.unsqueeze(0)
    if query.shape[0] != ref.shape[0]:
        raise ValueError(f'knn_utils.py: batch sizes differ: query {tuple(query.shape)}, ref {tuple(ref.shape)}')
    if query.shape[2] != ref.shape[2]:
        raise ValueError(f'knn_utils.py: channel counts differ: query has C={query.shape[2]}, '
                         f'ref has C={ref.shape[2]}')
    if query.dtype not in _FLOAT_DTYPES or ref.dtype not in _FLOAT_DTYPES:
        raise TypeError(f'knn_utils.py: query and ref must be float32 or float64, got {query.dtype} and {ref.dtype}')
    if query.device != ref.device:
        raise ValueError(f'knn_utils.py: query on {query.device} but ref on {ref.device}')
    num_ref = ref.shape[1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_ref:
        raise ValueError(f'knn_utils.py: k must be an integer with 1 <= k <= M (number of reference rows '
                         f'= {num_ref}), got k={k!r}')
    dtype = torch.promote_types(query.dtype, ref.dtype)
    query = query.detach().to(dtype).contiguous()
    ref = ref.detach().to(dtype).contiguous()
    if not (torch.isfinite(query).all() and torch.isfinite(ref).all()):
        raise ValueError('knn_utils.py: query and ref must be finite (found NaN or inf)')
    return query, ref, squeeze, was_numpy


def _finish(idx, dist, squeeze, was_numpy, return_dist):
    if squeeze:
        idx, dist = idx[0], dist[0]
    if was_numpy:
        idx, dist = idx.numpy(), dist.numpy()
    return (idx, dist) if return_dist else (idx, None)


def knn(query, ref, k, return_dist=True, sorted=True):
    """k nearest reference rows of every query row, exact, ties broken by reference index.

    Args:
        query: (B, N, C) or (N, C) float32/float64 tensor (or numpy array) of query rows.
        ref: (B, M, C) or (M, C), same layout, of reference rows; the two may have different float dtypes (the
            wider one is used). Any device; CPU and CUDA are implemented.
        k: number of neighbours, 1 <= k <= M.
        return_dist: when False the second returned value is None.
        sorted: when False each row holds the same k neighbours in an unspecified order (as ``torch.topk``);
            cheaper on CPU, where the final sort is a sizeable part of the selection.
    Returns:
        (idx, dist): idx (B, N, k) or (N, k) int64 indices into the M reference rows, dist the matching squared
        L2 distances in the input dtype; each row sorted by (distance, index) unless ``sorted=False``. The k
        neighbours are the k smallest (distance, index) keys either way. Same kind/device as the input.
    """
    query, ref, squeeze, was_numpy = _prepare(query, ref, k)
    if query.is_cuda:
        idx, dist = _knn_cuda(query, ref, int(k))
    else:
        from pcdet.ops.knn.knn_cpu import knn_numpy
        idx_np, dist_np = knn_numpy(query.numpy(), ref.numpy(), int(k), sorted=bool(sorted))
        idx, dist = torch.from_numpy(idx_np), torch.from_numpy(dist_np)
    return _finish(idx, dist, squeeze, was_numpy, return_dist)


def _knn_cuda(query, ref, k):
    """CUDA path: ``knn_cuda.knn(query (B,N,C), ref (B,M,C), idx (B,N,k) int64, dist (B,N,k))`` fills the outputs."""
    from pcdet.ops.build_utils import load_cuda_ext
    ext = load_cuda_ext('knn')
    batch, num_query, _ = query.shape
    idx = torch.empty((batch, num_query, k), dtype=torch.int64, device=query.device)
    dist = torch.empty((batch, num_query, k), dtype=query.dtype, device=query.device)
    if batch * num_query > 0:
        ext.knn(query, ref, idx, dist)
    return idx, dist


def channel_ordered_sq_dist(query, ref):
    """Dense (B, N, M) squared distances summed channel by channel (the exact order of the kernels).

    Written as C separate elementwise torch ops so that nothing is fused or reassociated: bit-identical to the
    CPU and CUDA kernels. Uses O(B * N * M) memory: tests and small inputs only.
    """
    dist = torch.zeros((query.shape[0], query.shape[1], ref.shape[1]), dtype=query.dtype, device=query.device)
    for c in range(query.shape[2]):
        diff = query[:, :, None, c] - ref[:, None, :, c]
        dist = dist + diff * diff
    return dist


def knn_dense_reference(query, ref, k, return_dist=True):
    """Dense reference for ``knn``: full distance matrix, then a stable sort (ties by index), first k.

    Same arguments and returns as ``knn``; memory O(B * N * M), so for tests and small inputs.
    """
    query, ref, squeeze, was_numpy = _prepare(query, ref, k)
    dist_full = channel_ordered_sq_dist(query, ref)
    # stable sort keeps equal distances in index order: the deterministic tie-break of the kernels
    dist, idx = torch.sort(dist_full, dim=-1, stable=True)
    return _finish(idx[..., :k].contiguous(), dist[..., :k].contiguous(), squeeze, was_numpy, return_dist)


def knn_dense_matmul(query, ref, k):
    """The original PointDistiller kNN: ``d = -2 Q X^T + |Q|^2 + |X|^2`` (B, N, M) then ``topk(largest=False)``.

    Materialises the full distance matrix; distances are numerically loose (a row's distance to itself is not
    exactly 0) and ties are not ordered. Kept for ``benchmarks/bench_knn.py``. Tensors (B, N, C), (B, M, C).
    Returns (idx (B, N, k) int64, dist (B, N, k)).
    """
    dist = torch.matmul(query, ref.transpose(1, 2)).mul_(-2)
    dist += (query * query).sum(-1, keepdim=True)
    dist += (ref * ref).sum(-1).unsqueeze(1)
    values, idx = dist.topk(k, dim=-1, largest=False, sorted=True)
    return idx, values
