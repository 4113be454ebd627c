"""Exact k-nearest-neighbour kernels for CPU (numba, parallel over query blocks of ``QUERY_BLOCK``).

None materialises the N x M distance matrix. All compute distances in tiles of ``QUERY_BLOCK x REF_TILE``
(``_tile_distances``) and differ in how each query selects its k nearest, ``knn_numpy`` picking by size:
- ``knn_rows`` (M up to ``ROW_SELECT_MAX`` and large K, e.g. PointDistiller's graph over one sample's ~2,000
  pillars with K = 128): keeps each query's whole row, a histogram finds a cut, an exact selection the k;
- ``knn_guided`` (large M, K >= 64): a threshold guessed from a strided sample, one pass collects every
  reference within it, an exact selection the k; rows where the guess fails are redone by ``knn_tiled``;
- ``knn_tiled`` (otherwise): streams the references through a sorted insertion buffer per query.
Scratch per task: the tile, plus k-sized buffers (tiled), an M-sized row (rows) or a few k (guided).

Exactness contract (shared with the CUDA kernel and ``knn_utils.knn_dense_reference``): the squared distance
is accumulated channel by channel, ``d = 0; for c in 0..C-1: d = d + (q[c] - r[c]) * (q[c] - r[c])``, in the
input dtype, each operation rounded separately (no fast-math reassociation, no fused multiply-add). Every
implementation that follows this order produces bit-identical distances, hence identical neighbour lists.
The channel loop is the outer loop and the reference loop the inner one, which lets the compiler vectorise
across references without changing the per-distance summation order; that is why the references are passed
transposed, ``(B, C, M)``. The selections compare (distance, index) keys (``cpu_select``), so the k nearest
are the same set in all kernels, ties going to the smaller index.

No BLAS: a GEMM between numba kernels leaves OpenBLAS threads spinning on the cores numba needs, and GEMM
distances round differently from the contract above. The alternatives measured and rejected are in
``docs/INVESTIGATIONS.md``.
"""
import numba
import numpy as np

from .cpu_select import _insert, _keep_k, _sort_keys

QUERY_BLOCK = 64   # queries per parallel task (multiple of 4); tuned on 2 Zen4 cores, C=64
REF_TILE = 512     # references per tile: a C x 512 slice of ref_t stays in L2 (512: 10% faster than 256)
SCAN_GROUP = 16    # tile entries whose minimum is tested against the k-th distance at once
ROW_SELECT_MAX = 8192  # up to this many references whole distance rows may be kept and selected (knn_rows)
HIST_BINS = 64     # histogram bins of the row selection
SAMPLE_STRIDE = 16  # knn_guided: every 16th reference is in the sample that sets the threshold


@numba.njit(cache=True, nogil=True)
def _tile_distances(query, ref_t, b, q_start, q_count, t_start, t_count, tile_dist):
    """tile_dist[qi, j] = squared distance of query q_start+qi to reference t_start+j (channel order).

    Register blocking for throughput without changing any rounding: queries go in groups of 4 that share each
    loaded reference value, and channels in groups of 4 whose four terms are added to the running sum one
    after the other before it is stored back (about 4x one query and one channel at a time). Rows of a group
    beyond q_count repeat the last query and are ignored by the caller.
    """
    channels = query.shape[2]
    c_main = channels - channels % 4
    for g in range(0, q_count, 4):
        q0 = q_start + g
        q1 = q_start + min(g + 1, q_count - 1)
        q2 = q_start + min(g + 2, q_count - 1)
        q3 = q_start + min(g + 3, q_count - 1)
        r0 = tile_dist[g]
        r1 = tile_dist[g + 1]
        r2 = tile_dist[g + 2]
        r3 = tile_dist[g + 3]
        for j in range(t_count):
            r0[j] = 0
            r1[j] = 0
            r2[j] = 0
            r3[j] = 0
        for c in range(0, c_main, 4):
            ra = ref_t[b, c, t_start:t_start + t_count]
            rb = ref_t[b, c + 1, t_start:t_start + t_count]
            rc = ref_t[b, c + 2, t_start:t_start + t_count]
            rd = ref_t[b, c + 3, t_start:t_start + t_count]
            a0, b0, c0, e0 = query[b, q0, c], query[b, q0, c + 1], query[b, q0, c + 2], query[b, q0, c + 3]
            a1, b1, c1, e1 = query[b, q1, c], query[b, q1, c + 1], query[b, q1, c + 2], query[b, q1, c + 3]
            a2, b2, c2, e2 = query[b, q2, c], query[b, q2, c + 1], query[b, q2, c + 2], query[b, q2, c + 3]
            a3, b3, c3, e3 = query[b, q3, c], query[b, q3, c + 1], query[b, q3, c + 2], query[b, q3, c + 3]
            for j in range(t_count):
                xa = ra[j]
                xb = rb[j]
                xc = rc[j]
                xd = rd[j]
                r0[j] = _acc4(r0[j], a0 - xa, b0 - xb, c0 - xc, e0 - xd)
                r1[j] = _acc4(r1[j], a1 - xa, b1 - xb, c1 - xc, e1 - xd)
                r2[j] = _acc4(r2[j], a2 - xa, b2 - xb, c2 - xc, e2 - xd)
                r3[j] = _acc4(r3[j], a3 - xa, b3 - xb, c3 - xc, e3 - xd)
        for c in range(c_main, channels):
            v0 = query[b, q0, c]
            v1 = query[b, q1, c]
            v2 = query[b, q2, c]
            v3 = query[b, q3, c]
            ref_row = ref_t[b, c, t_start:t_start + t_count]
            for j in range(t_count):
                x = ref_row[j]
                d0 = v0 - x
                d1 = v1 - x
                d2 = v2 - x
                d3 = v3 - x
                r0[j] = r0[j] + d0 * d0
                r1[j] = r1[j] + d1 * d1
                r2[j] = r2[j] + d2 * d2
                r3[j] = r3[j] + d3 * d3


@numba.njit(cache=True, nogil=True, inline='always')
def _acc4(s, d0, d1, d2, d3):
    """((((s + d0^2) + d1^2) + d2^2) + d3^2): four channel terms in order, each operation rounded."""
    s = s + d0 * d0
    s = s + d1 * d1
    s = s + d2 * d2
    return s + d3 * d3


@numba.njit(cache=True, nogil=True, inline='always')
def _task_block(task, num_blocks, num_query):
    """Parallel task -> (batch element, first query, query count) of its block of ``QUERY_BLOCK`` queries."""
    q_start = (task % num_blocks) * QUERY_BLOCK
    return task // num_blocks, q_start, min(QUERY_BLOCK, num_query - q_start)


@numba.njit(cache=True, nogil=True, inline='always')
def _group_min(row, g0):
    """Minimum of row[g0:g0 + SCAN_GROUP]: a constant trip count, so branch-free and vectorised."""
    low = row[g0]
    for j in range(g0 + 1, g0 + SCAN_GROUP):
        low = row[j] if row[j] < low else low
    return low


@numba.njit(parallel=True, cache=True, nogil=True)
def knn_tiled(query, ref_t, k, out_idx, out_dist):
    """Exact kNN by reference tiles.

    Args:
        query: (B, N, C) float32/float64 C-contiguous array.
        ref_t: (B, C, M) same dtype, the references transposed (channel-major).
        k: neighbours per query, 1 <= k <= M.
        out_idx: (B, N, k) int64 output, neighbour indices into M sorted by (distance, index).
        out_dist: (B, N, k) output in the input dtype, the squared L2 distances.
    """
    batch, num_query, channels = query.shape
    num_ref = ref_t.shape[2]
    num_blocks = (num_query + QUERY_BLOCK - 1) // QUERY_BLOCK
    for task in numba.prange(batch * num_blocks):
        b, q_start, q_count = _task_block(task, num_blocks, num_query)
        tile_dist = np.empty((QUERY_BLOCK, REF_TILE), dtype=query.dtype)
        filled = np.zeros(QUERY_BLOCK, dtype=np.int64)
        for qi in range(q_count):
            out_dist[b, q_start + qi, :] = np.inf
            out_idx[b, q_start + qi, :] = -1
        for t_start in range(0, num_ref, REF_TILE):
            t_count = min(REF_TILE, num_ref - t_start)
            _tile_distances(query, ref_t, b, q_start, q_count, t_start, t_count, tile_dist)
            for qi in range(q_count):
                dist_buf = out_dist[b, q_start + qi]
                idx_buf = out_idx[b, q_start + qi]
                worst = dist_buf[k - 1]
                row = tile_dist[qi]
                n_filled = filled[qi]
                for g0 in range(0, t_count, SCAN_GROUP):
                    g1 = min(g0 + SCAN_GROUP, t_count)
                    # once the buffer is full most groups hold nothing closer than the k-th: test the
                    # group's minimum first
                    if n_filled == k and g1 - g0 == SCAN_GROUP and not _group_min(row, g0) < worst:
                        continue
                    for j in range(g0, g1):
                        # strict: an equal distance at a larger index never displaces; until the buffer is
                        # full everything enters (so even overflowed inf distances get valid indices)
                        if n_filled < k or row[j] < worst:
                            n_filled = _insert(dist_buf, idx_buf, n_filled, row[j], t_start + j)
                            worst = dist_buf[k - 1]
                filled[qi] = n_filled


@numba.njit(cache=True, nogil=True)
def _select_row(row, num_ref, k, want_sorted, bins, hist, cand_d, cand_i, sel_d, sel_i, out_d, out_i):
    """The k smallest (distance, index) entries of one full distance row ``row[:num_ref]``.

    A histogram of the row over ``HIST_BINS`` equal bins between its min and max finds the first bin by which
    k entries have been seen; every entry of that bin or a lower one is a candidate (a few more than k), and
    an exact quickselect on (distance, index) keys among the candidates picks the k. Bins are monotone in the
    distance, so no entry of a higher bin can be among the k (at least k entries are strictly closer). The
    passes over the row are branch-free (a quickselect over the whole row mispredicts about every other
    comparison, which cost 5x more than computing the distances). Output in reference-index order, or sorted
    by (distance, index) when ``want_sorted``.
    """
    lo = row[0]
    hi = row[0]
    for j in range(1, num_ref):
        v = row[j]
        lo = v if v < lo else lo
        hi = v if v > hi else hi
    count = 0
    span = hi - lo
    if span > 0 and span < np.inf:
        scale = HIST_BINS / span
        hist[:] = 0
        for j in range(num_ref):
            b = min(np.int64((row[j] - lo) * scale), HIST_BINS - 1)
            bins[j] = b
            hist[b] += 1
        cut = HIST_BINS - 1
        seen = 0
        for b in range(HIST_BINS):
            seen += hist[b]
            if seen >= k:
                cut = b
                break
        for j in range(num_ref):      # branch-free compaction in index order
            cand_d[count] = row[j]
            cand_i[count] = j
            count += bins[j] <= cut
    else:                             # all distances equal (or overflowed to inf): every entry is a candidate
        for j in range(num_ref):
            cand_d[j] = row[j]
            cand_i[j] = j
        count = num_ref
    if count > k:
        _keep_k(cand_d, cand_i, count, k, sel_d, sel_i)
    out_d[:k] = cand_d[:k]
    out_i[:k] = cand_i[:k]
    if want_sorted:
        _sort_keys(out_d, out_i, k)


@numba.njit(parallel=True, cache=True, nogil=True)
def knn_rows(query, ref_t, k, want_sorted, out_idx, out_dist):
    """Exact kNN keeping each query's whole distance row (for M up to ``ROW_SELECT_MAX``).

    Same arguments and exactness as ``knn_tiled``; per task the scratch is ``QUERY_BLOCK x M`` distances.
    Output rows are in reference-index order, or sorted by (distance, index) when ``want_sorted``.
    """
    batch, num_query, channels = query.shape
    num_ref = ref_t.shape[2]
    num_blocks = (num_query + QUERY_BLOCK - 1) // QUERY_BLOCK
    for task in numba.prange(batch * num_blocks):
        b, q_start, q_count = _task_block(task, num_blocks, num_query)
        rows = np.empty((QUERY_BLOCK, num_ref), dtype=query.dtype)
        tile_dist = np.empty((QUERY_BLOCK, REF_TILE), dtype=query.dtype)
        for t_start in range(0, num_ref, REF_TILE):
            t_count = min(REF_TILE, num_ref - t_start)
            _tile_distances(query, ref_t, b, q_start, q_count, t_start, t_count, tile_dist)
            for qi in range(q_count):
                rows[qi, t_start:t_start + t_count] = tile_dist[qi, :t_count]
        bins = np.empty(num_ref, dtype=np.int64)
        hist = np.empty(HIST_BINS, dtype=np.int64)
        cand_d = np.empty(num_ref, dtype=query.dtype)
        cand_i = np.empty(num_ref, dtype=np.int64)
        sel_d = np.empty(num_ref, dtype=query.dtype)
        sel_i = np.empty(num_ref, dtype=np.int64)
        for qi in range(q_count):
            _select_row(rows[qi], num_ref, k, want_sorted, bins, hist, cand_d, cand_i, sel_d, sel_i,
                        out_dist[b, q_start + qi], out_idx[b, q_start + qi])


@numba.njit(parallel=True, cache=True, nogil=True)
def knn_guided(query, ref_t, threshold, k, cap, want_sorted, out_idx, out_dist, redo):
    """Exact kNN with a guessed threshold: collect every reference within it, select the k among those.

    A sorted insertion buffer over all M references accepts about k (1 + ln(M / k)) candidates per query
    while its threshold tightens; here each query has a threshold T (``threshold`` (B, N): ``knn_numpy`` takes
    a low order statistic of its distances to a strided sample of the references), one pass over all
    references collects those with distance <= T (branch-free) into a buffer of ``cap``, and an exact selection
    of (distance, index) keys picks the k. Whenever at least k are collected the
    result is exact: every reference left out is strictly farther than T, hence than the k collected. Rows
    where fewer than k were collected, or more than the buffer holds, are flagged in ``redo`` (B, N) for
    ``knn_tiled``.

    Same arguments and exactness as ``knn_tiled``; rows are in index order or sorted (``want_sorted``).
    """
    batch, num_query, channels = query.shape
    num_ref = ref_t.shape[2]
    num_blocks = (num_query + QUERY_BLOCK - 1) // QUERY_BLOCK
    for task in numba.prange(batch * num_blocks):
        b, q_start, q_count = _task_block(task, num_blocks, num_query)
        tile_dist = np.empty((QUERY_BLOCK, REF_TILE), dtype=query.dtype)
        # collect every reference with distance <= threshold, in index order
        cand_d = np.empty((QUERY_BLOCK, cap), dtype=query.dtype)
        cand_i = np.empty((QUERY_BLOCK, cap), dtype=np.int64)
        count = np.zeros(QUERY_BLOCK, dtype=np.int64)
        overflow = np.zeros(QUERY_BLOCK, dtype=np.bool_)
        for t_start in range(0, num_ref, REF_TILE):
            t_count = min(REF_TILE, num_ref - t_start)
            _tile_distances(query, ref_t, b, q_start, q_count, t_start, t_count, tile_dist)
            for qi in range(q_count):
                if overflow[qi]:
                    continue
                row = tile_dist[qi]
                thr = threshold[b, q_start + qi]
                n = count[qi]
                cd = cand_d[qi]
                ci = cand_i[qi]
                for g0 in range(0, t_count, SCAN_GROUP):
                    g1 = min(g0 + SCAN_GROUP, t_count)
                    if g1 - g0 == SCAN_GROUP and not _group_min(row, g0) <= thr:
                        continue
                    if n > cap - SCAN_GROUP:
                        overflow[qi] = True
                        break
                    for j in range(g0, g1):                          # branch-free append
                        cd[n] = row[j]
                        ci[n] = t_start + j
                        n += row[j] <= thr
                count[qi] = n
        # the k smallest (distance, index) keys among the collected
        sel_d = np.empty(cap, dtype=query.dtype)
        sel_i = np.empty(cap, dtype=np.int64)
        for qi in range(q_count):
            n = count[qi]
            if overflow[qi] or n < k:
                redo[b, q_start + qi] = True
                continue
            if n > k:
                _keep_k(cand_d[qi], cand_i[qi], n, k, sel_d, sel_i)
            if want_sorted:
                _sort_keys(cand_d[qi], cand_i[qi], k)
            out_dist[b, q_start + qi] = cand_d[qi, :k]
            out_idx[b, q_start + qi] = cand_i[qi, :k]


def rows_pay_off(num_ref, k):
    """Whether ``knn_rows`` beats ``knn_tiled`` for M = num_ref: the insertion buffer costs about
    k^2 (1 + ln(M / k)) / 2 shifts per query, the row selection about 2 M, and rows beyond ~8k references
    no longer stay in cache (measured on 2 EPYC cores: M=1700 K=128 rows 2x faster, K=16 stream 1.2x
    faster; M=16384 K=128 even)."""
    return num_ref <= ROW_SELECT_MAX and k * k * (1.0 + np.log(num_ref / k)) > 4.0 * num_ref


def guided_pays_off(num_ref, k):
    """Whether ``knn_guided`` beats ``knn_tiled``: its sample pass costs 1/SAMPLE_STRIDE of the distances and
    needs a sample of a few times k references; it saves the k (1 + ln(M / k)) insertions, which matter from
    K of about 64 (measured at M = 65,536, C = 64 on 2 EPYC cores: K = 128 0.82 s vs 0.93 s; K = 16 0.77 s
    vs 0.74 s)."""
    return k >= 64 and num_ref >= 8 * SAMPLE_STRIDE * k


def knn_numpy(query, ref, k, sorted=True, method='auto'):
    """numpy wrapper: ``query (B, N, C)``, ``ref (B, M, C)`` (same float dtype) -> (idx int64, dist) (B, N, k).

    ``sorted=False`` allows any order of each row's k neighbours (``rows`` returns them in index order).
    ``method``: 'rows' keeps whole distance rows and selects by histogram (``knn_rows``), 'stream' walks the
    references with a sorted insertion buffer (``knn_tiled``), 'guided' collects the references within a
    threshold guessed from a sample (``knn_guided``); 'auto' picks by ``rows_pay_off`` / ``guided_pays_off``.
    """
    if method not in ('auto', 'rows', 'stream', 'guided'):
        raise ValueError(f"knn_cpu.py: method must be 'auto', 'rows', 'stream' or 'guided', got {method!r}")
    query = np.ascontiguousarray(query)
    ref_t = np.ascontiguousarray(np.transpose(ref, (0, 2, 1)))
    batch, num_query, _ = query.shape
    out_idx = np.empty((batch, num_query, k), dtype=np.int64)
    out_dist = np.empty((batch, num_query, k), dtype=query.dtype)
    if batch * num_query > 0:
        num_ref = ref.shape[1]
        if method == 'auto':
            method = 'rows' if rows_pay_off(num_ref, k) else ('guided' if guided_pays_off(num_ref, k) else 'stream')
        if method == 'rows':
            knn_rows(query, ref_t, k, sorted, out_idx, out_dist)
        elif method == 'stream':
            knn_tiled(query, ref_t, k, out_idx, out_dist)
        else:
            sample_t = np.ascontiguousarray(ref_t[:, :, ::SAMPLE_STRIDE])
            # the count of references within the rank-th smallest sample distance is about STRIDE * Gamma(rank):
            # a margin of 3 standard deviations (+2) makes "fewer than k" rare, the buffer holds 6 above the mean
            expect = k / SAMPLE_STRIDE
            rank = int(min(sample_t.shape[2], np.ceil(expect + 3.0 * np.sqrt(expect) + 2.0)))
            cap = int(SAMPLE_STRIDE * (rank + 6.0 * np.sqrt(rank))) + SCAN_GROUP
            # the threshold: each query's rank-th smallest distance to the sample
            sample_idx = np.empty((batch, num_query, rank), dtype=np.int64)
            sample_dist = np.empty((batch, num_query, rank), dtype=query.dtype)
            knn_tiled(query, sample_t, rank, sample_idx, sample_dist)
            redo = np.zeros((batch, num_query), dtype=np.bool_)
            knn_guided(query, ref_t, np.ascontiguousarray(sample_dist[:, :, -1]), k, cap, sorted, out_idx, out_dist,
                       redo)
            for b, rows in enumerate(redo):
                num_redo = int(rows.sum())
                if num_redo:                         # rare: the guess let fewer than k, or too many, through
                    sub_idx = np.empty((1, num_redo, k), dtype=np.int64)
                    sub_dist = np.empty((1, num_redo, k), dtype=query.dtype)
                    knn_tiled(np.ascontiguousarray(query[b:b + 1, rows]), ref_t[b:b + 1], k, sub_idx, sub_dist)
                    out_idx[b, rows] = sub_idx[0]
                    out_dist[b, rows] = sub_dist[0]
    return out_idx, out_dist
