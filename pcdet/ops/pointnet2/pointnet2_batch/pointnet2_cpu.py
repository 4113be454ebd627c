"""CPU kernels (numba) of the batched PointNet++ ops; ``pointnet2_utils`` validates inputs and dispatches here.

Coordinates are float32 and channel-major, ``xyz_t (B, 3, N)`` (``channel_major``). Loops are laid out so that
LLVM vectorises them (measured on 2 AVX-512 cores at PointRCNN sizes; the loop shapes, not the arithmetic, decide):
- FPS walks the points in groups of ``LANES`` with a constant trip count, each lane keeping its own maximum
  (``pad_points`` rounds N up by repeating point 0; a copy never wins, ties going to the smaller index);
- ball query and three-NN compare each point with ``QUERY_LANES`` queries at once and look at the lanes one by one
  only when some lane may change (a point inside a ball, closer than a third neighbour): about 0.15 ns per
  point-query pair against 1.2 ns for one query scanning the points in chunks.

Squared distances follow OpenPCDet's kernels term for term, ``d = dx * dx + dy * dy + dz * dz`` with
``dx = x_point - x_centre``, in float32 and without fused multiply-add (numba does not contract without fastmath),
which is also how ``src/pointnet2_batch_kernel.cu`` computes them: both devices select the same indices.
"""
import numba
import numpy as np

LANES = 16          # FPS: points per vectorised group
QUERY_LANES = 32    # ball query / three-NN: queries compared with each point at once (16 ran 6x slower)
FPS_INIT = np.float32(1e10)  # OpenPCDet's initial "distance to the sampled set"


def channel_major(xyz):
    """(B, N, 3) float32 array -> (B, 3, N) contiguous."""
    return np.ascontiguousarray(xyz.transpose(0, 2, 1))


def pad_points(xyz):
    """(B, N, 3) float32 array -> (B, 3, Np) contiguous, ``Np = ceil(N / LANES) * LANES``, padded with point 0."""
    batch, num_points, _ = xyz.shape
    padded = -(-num_points // LANES) * LANES
    xyz_t = np.empty((batch, 3, padded), dtype=np.float32)
    xyz_t[:, :, :num_points] = xyz.transpose(0, 2, 1)
    xyz_t[:, :, num_points:] = xyz[:, :1, :].transpose(0, 2, 1)
    return xyz_t


@numba.njit(cache=True, nogil=True, inline='always')
def _sq_dist(px, py, pz, cx, cy, cz):
    dx = px - cx
    dy = py - cy
    dz = pz - cz
    return dx * dx + dy * dy + dz * dz


@numba.njit(cache=True, nogil=True)
def _fps_step(x, y, z, cx, cy, cz, temp, lane_best, lane_group):
    """One FPS step: ``temp = min(temp, d(centre))`` and the first index of the maximum of ``temp``.

    Each lane keeps its maximum and the first group where it was reached (strict ``>``); the lanes are then
    merged by (value, index), so the result is the smallest index among the maxima.
    """
    lane_best[:] = -1.0
    lane_group[:] = 0
    num_padded = x.shape[0] - x.shape[0] % LANES    # == x.shape[0]; written so that the loop vectorises (5x)
    for g0 in range(0, num_padded, LANES):
        for lane in range(LANES):
            k = g0 + lane
            d = _sq_dist(x[k], y[k], z[k], cx, cy, cz)
            t = temp[k]
            d2 = d if d < t else t
            temp[k] = d2
            better = d2 > lane_best[lane]
            lane_best[lane] = d2 if better else lane_best[lane]
            lane_group[lane] = np.int32(g0) if better else lane_group[lane]
    best = np.float32(-1.0)
    best_idx = 0
    for lane in range(LANES):
        v = lane_best[lane]
        k = lane_group[lane] + lane
        if v > best or (v == best and k < best_idx):
            best = v
            best_idx = k
    return best_idx


@numba.njit(parallel=True, cache=True, nogil=True)
def furthest_point_sample_kernel(xyz_t, npoint, out):
    """Iterative furthest point sampling from index 0, one batch element per parallel task.

    Args:
        xyz_t: (B, 3, Np) float32, padded (``pad_points``).
        npoint: samples per batch element.
        out: (B, npoint) int32 output.
    """
    for b in numba.prange(xyz_t.shape[0]):
        x = xyz_t[b, 0]
        y = xyz_t[b, 1]
        z = xyz_t[b, 2]
        temp = np.full(x.shape[0], FPS_INIT, dtype=np.float32)
        lane_best = np.empty(LANES, dtype=np.float32)
        lane_group = np.empty(LANES, dtype=np.int32)
        old = 0
        if npoint > 0:
            out[b, 0] = 0
        for j in range(1, npoint):
            old = _fps_step(x, y, z, x[old], y[old], z[old], temp, lane_best, lane_group)
            out[b, j] = old


@numba.njit(cache=True, nogil=True)
def _lane_buffers():
    """Scratch of one query block: the lanes' x, y, z and their distances to the current point."""
    return (np.empty(QUERY_LANES, dtype=np.float32), np.empty(QUERY_LANES, dtype=np.float32),
            np.empty(QUERY_LANES, dtype=np.float32), np.empty(QUERY_LANES, dtype=np.float32))


@numba.njit(cache=True, nogil=True)
def _load_queries(queries, q0, qx, qy, qz):
    """Copy queries q0 .. q0 + QUERY_LANES - 1 into the lane arrays (repeating the last one past the end);
    returns the number of real queries in the block."""
    count = min(QUERY_LANES, queries.shape[0] - q0)
    for lane in range(QUERY_LANES):
        q = q0 + min(lane, count - 1)
        qx[lane] = queries[q, 0]
        qy[lane] = queries[q, 1]
        qz[lane] = queries[q, 2]
    return count


@numba.njit(cache=True, nogil=True, inline='always')
def _lane_hits(x, y, z, k, qx, qy, qz, bound, dist):
    """dist[lane] = squared distance of point k to query lane; whether any lane has dist < bound[lane]."""
    px, py, pz = x[k], y[k], z[k]
    hit = False
    for lane in range(QUERY_LANES):
        d = _sq_dist(px, py, pz, qx[lane], qy[lane], qz[lane])
        dist[lane] = d
        hit |= d < bound[lane]
    return hit


@numba.njit(cache=True, nogil=True)
def _ball_query_block(x, y, z, centres, q0, radius2, nsample, idx, qx, qy, qz, dist, bound, cnt):
    """Ball query of the centres q0 .. q0 + QUERY_LANES - 1 against all points, in one pass over the points.

    ``bound`` is radius^2 for a ball still filling and -inf for a full one (or a lane past the last centre)."""
    count = _load_queries(centres, q0, qx, qy, qz)
    for lane in range(QUERY_LANES):
        cnt[lane] = 0
        bound[lane] = radius2 if lane < count else -np.inf
    open_balls = count
    for k in range(x.shape[0]):
        if not _lane_hits(x, y, z, k, qx, qy, qz, bound, dist):
            continue
        for lane in range(count):
            if dist[lane] < bound[lane]:
                c = cnt[lane]
                row = idx[q0 + lane]
                if c == 0:
                    row[:] = k
                row[c] = k
                cnt[lane] = c + 1
                if c + 1 == nsample:
                    bound[lane] = -np.inf
                    open_balls -= 1
        if open_balls == 0:
            break


@numba.njit(parallel=True, cache=True, nogil=True)
def ball_query_kernel(xyz_t, new_xyz, radius, nsample, idx):
    """OpenPCDet's ball query: the first ``nsample`` points (index order) with squared distance < radius^2.

    Args:
        xyz_t: (B, 3, N) float32 points (channel-major).
        new_xyz: (B, M, 3) float32 ball centres.
        radius: float32 (squared in float32, as the CUDA kernel); nsample: slots per ball.
        idx: (B, M, nsample) int32 output, zero-filled by the caller: slots after the last point found repeat the
            first one found; a ball with no point keeps zeros.
    """
    batch, num_query = new_xyz.shape[0], new_xyz.shape[1]
    radius2 = radius * radius
    num_blocks = (num_query + QUERY_LANES - 1) // QUERY_LANES
    for task in numba.prange(batch * num_blocks):
        b = task // num_blocks
        qx, qy, qz, dist = _lane_buffers()
        bound = np.empty(QUERY_LANES, dtype=np.float32)
        cnt = np.empty(QUERY_LANES, dtype=np.int64)
        _ball_query_block(xyz_t[b, 0], xyz_t[b, 1], xyz_t[b, 2], new_xyz[b], (task % num_blocks) * QUERY_LANES,
                          radius2, nsample, idx[b], qx, qy, qz, dist, bound, cnt)


@numba.njit(cache=True, nogil=True)
def _three_nn_block(x, y, z, unknown, q0, dist2, idx, qx, qy, qz, dist, best, best_idx):
    """Three-NN of the unknown points q0 .. q0 + QUERY_LANES - 1, in one pass over the known points."""
    count = _load_queries(unknown, q0, qx, qy, qz)
    best[:] = np.inf
    best_idx[:] = 0
    b1, b2, b3 = best[0], best[1], best[2]
    i1, i2, i3 = best_idx[0], best_idx[1], best_idx[2]
    for k in range(x.shape[0]):
        if not _lane_hits(x, y, z, k, qx, qy, qz, b3, dist):
            continue
        for lane in range(QUERY_LANES):
            d = dist[lane]
            if not d < b3[lane]:
                continue
            if d < b1[lane]:
                b3[lane], i3[lane] = b2[lane], i2[lane]
                b2[lane], i2[lane] = b1[lane], i1[lane]
                b1[lane], i1[lane] = d, k
            elif d < b2[lane]:
                b3[lane], i3[lane] = b2[lane], i2[lane]
                b2[lane], i2[lane] = d, k
            else:
                b3[lane], i3[lane] = d, k
    for lane in range(count):
        for j in range(3):
            dist2[q0 + lane, j] = best[j, lane]
            idx[q0 + lane, j] = best_idx[j, lane]


@numba.njit(parallel=True, cache=True, nogil=True)
def three_nn_kernel(unknown, known_t, dist2, idx):
    """The three nearest known points of every unknown point (OpenPCDet's ``three_nn``, squared distances).

    Candidates are visited in index order and enter only when strictly closer, so equal distances keep the
    smaller index first. With fewer than three known points the missing slots hold index 0 and distance inf.

    Args:
        unknown: (B, n, 3) float32; known_t: (B, 3, m) float32 (channel-major).
        dist2: (B, n, 3) float32 output, ascending; idx: (B, n, 3) int32 output.
    """
    batch, num_query = unknown.shape[0], unknown.shape[1]
    num_blocks = (num_query + QUERY_LANES - 1) // QUERY_LANES
    for task in numba.prange(batch * num_blocks):
        b = task // num_blocks
        qx, qy, qz, dist = _lane_buffers()
        best = np.empty((3, QUERY_LANES), dtype=np.float32)
        best_idx = np.empty((3, QUERY_LANES), dtype=np.int32)
        _three_nn_block(known_t[b, 0], known_t[b, 1], known_t[b, 2], unknown[b], (task % num_blocks) * QUERY_LANES,
                        dist2[b], idx[b], qx, qy, qz, dist, best, best_idx)


@numba.njit(parallel=True, cache=True, nogil=True)
def gather_points_kernel(src, idx, dst, scatter):
    """Gather, or its backward (scatter-add); one (b, c) row per task.

    scatter False: ``dst[b, c, k] = src[b, c, idx[b, k]]``, src (B, C, N), dst (B, C, K);
    scatter True: ``dst[b, c, idx[b, k]] += src[b, c, k]``, src (B, C, K), dst (B, C, N) zero-filled (tasks own
    disjoint rows, so no two write one element; within a row the additions follow k).
    idx (B, K) int32; ``grouping_operation`` uses it with K = npoint * nsample.
    """
    channels = src.shape[1]
    for task in numba.prange(src.shape[0] * channels):
        b = task // channels
        s = src[b, task % channels]
        d = dst[b, task % channels]
        rows = idx[b]
        if scatter:
            for k in range(rows.shape[0]):
                d[rows[k]] += s[k]
        else:
            for k in range(rows.shape[0]):
                d[k] = s[rows[k]]


@numba.njit(parallel=True, cache=True, nogil=True)
def three_interpolate_kernel(src, idx, weight, dst, backward):
    """Three-point interpolation, or its backward for the features; one (b, c) row per task.

    backward False: ``dst[b, c, i] = sum_j weight[b, i, j] * src[b, c, idx[b, i, j]]`` (j = 0, 1, 2 in that
    order), src (B, C, m), dst (B, C, n); backward True: ``dst[b, c, idx[b, i, j]] += src[b, c, i] * weight[b, i, j]``,
    src (B, C, n), dst (B, C, m) zero-filled. idx (B, n, 3) int32, weight (B, n, 3) in the features' dtype.
    """
    channels = src.shape[1]
    for task in numba.prange(src.shape[0] * channels):
        b = task // channels
        s = src[b, task % channels]
        d = dst[b, task % channels]
        ids = idx[b]
        w = weight[b]
        if backward:
            for i in range(ids.shape[0]):
                g = s[i]
                d[ids[i, 0]] += g * w[i, 0]
                d[ids[i, 1]] += g * w[i, 1]
                d[ids[i, 2]] += g * w[i, 2]
        else:
            for i in range(ids.shape[0]):
                d[i] = w[i, 0] * s[ids[i, 0]] + w[i, 1] * s[ids[i, 1]] + w[i, 2] * s[ids[i, 2]]
