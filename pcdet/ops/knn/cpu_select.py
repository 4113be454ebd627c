"""Ordering and selection of (distance, index) keys for the CPU kNN kernels (numba, no allocation).

A key is a squared distance and a reference index; keys are ordered by distance, then index, which is the
output order of ``pcdet.ops.knn`` and its tie-break. Indices are unique, so keys are too.
"""
import numba
import numpy as np

@numba.njit(cache=True, nogil=True)
def _insert(dist_buf, idx_buf, filled, d, j):
    """Insert candidate (d, j) into the ascending buffers holding ``filled`` entries, after the entries with
    distance <= d (ties by index); the last entry drops out when the buffer is full. Returns the new fill."""
    k = dist_buf.shape[0]
    pos = min(filled, k - 1)
    while pos > 0 and dist_buf[pos - 1] > d:
        dist_buf[pos] = dist_buf[pos - 1]
        idx_buf[pos] = idx_buf[pos - 1]
        pos -= 1
    dist_buf[pos] = d
    idx_buf[pos] = j
    return min(filled + 1, k)


@numba.njit(cache=True, nogil=True, inline='always')
def _key_less(d_a, i_a, d_b, i_b):
    """(d_a, i_a) < (d_b, i_b) in the (distance, index) order of the output."""
    return d_a < d_b or (d_a == d_b and i_a < i_b)


@numba.njit(cache=True, nogil=True)
def _select_key(sel_d, sel_i, count, rank):
    """The entry of 0-based ``rank`` in (distance, index) order among sel_d/sel_i[:count] (quickselect; the
    scratch arrays are reordered). Keys are unique (indices are), so every partition shrinks the range."""
    lo = 0
    hi = count - 1
    while lo < hi:
        mid = (lo + hi) // 2
        sel_d[mid], sel_d[hi] = sel_d[hi], sel_d[mid]
        sel_i[mid], sel_i[hi] = sel_i[hi], sel_i[mid]
        pivot_d = sel_d[hi]
        pivot_i = sel_i[hi]
        store = lo
        for t in range(lo, hi):
            if _key_less(sel_d[t], sel_i[t], pivot_d, pivot_i):
                sel_d[t], sel_d[store] = sel_d[store], sel_d[t]
                sel_i[t], sel_i[store] = sel_i[store], sel_i[t]
                store += 1
        sel_d[store], sel_d[hi] = sel_d[hi], sel_d[store]
        sel_i[store], sel_i[hi] = sel_i[hi], sel_i[store]
        if store == rank:
            break
        if store < rank:
            lo = store + 1
        else:
            hi = store - 1
    return sel_d[rank], sel_i[rank]


@numba.njit(cache=True, nogil=True)
def _sort_keys(dist, idx, count):
    """Sort dist/idx[:count] in place by (distance, index): quicksort (middle pivot) with insertion sort
    below 16 entries. The larger part of each partition waits on the stack while the smaller one is sorted, so at
    most log2(count) ranges wait (64 slots suffice for any count)."""
    stack = np.empty(128, dtype=np.int64)
    top = 0
    stack[0] = 0
    stack[1] = count - 1
    top = 2
    while top > 0:
        hi = stack[top - 1]
        lo = stack[top - 2]
        top -= 2
        while hi - lo >= 16:
            mid = (lo + hi) // 2
            pivot_d = dist[mid]
            pivot_i = idx[mid]
            left = lo
            right = hi
            while left <= right:
                while _key_less(dist[left], idx[left], pivot_d, pivot_i):
                    left += 1
                while _key_less(pivot_d, pivot_i, dist[right], idx[right]):
                    right -= 1
                if left <= right:
                    dist[left], dist[right] = dist[right], dist[left]
                    idx[left], idx[right] = idx[right], idx[left]
                    left += 1
                    right -= 1
            # the larger part waits on the stack, the loop goes on with the smaller (depth <= log2 n)
            if right - lo < hi - left:
                stack[top] = left
                stack[top + 1] = hi
                top += 2
                hi = right
            else:
                stack[top] = lo
                stack[top + 1] = right
                top += 2
                lo = left
        for t in range(lo + 1, hi + 1):
            d = dist[t]
            j = idx[t]
            pos = t
            while pos > lo and _key_less(d, j, dist[pos - 1], idx[pos - 1]):
                dist[pos] = dist[pos - 1]
                idx[pos] = idx[pos - 1]
                pos -= 1
            dist[pos] = d
            idx[pos] = j


@numba.njit(cache=True, nogil=True)
def _keep_k(buf_d, buf_i, count, k, sel_d, sel_i):
    """Keep, in place and in their order, the k smallest (distance, index) entries of buf_d/buf_i[:count]
    (count > k; keys are unique). Returns the k-th smallest distance. sel_d/sel_i: scratch of >= count."""
    sel_d[:count] = buf_d[:count]
    sel_i[:count] = buf_i[:count]
    kth_d, kth_i = _select_key(sel_d, sel_i, count, k - 1)
    kept = 0
    for t in range(count):            # branch-free: write always, advance when key <= the k-th key
        buf_d[kept] = buf_d[t]
        buf_i[kept] = buf_i[t]
        kept += not _key_less(kth_d, kth_i, buf_d[t], buf_i[t])
        if kept == k:
            break
    return kth_d
