"""The tiled kNN op against the dense reference: exact indices and distances, ties by index, clear errors."""
import numpy as np
import pytest
import torch

from pcdet.ops.knn import knn, knn_dense_matmul, knn_dense_reference


def with_duplicates(gen, batch, num_query, num_ref, channels, dtype=torch.float32):
    """Random rows where some references repeat (exact distance ties) and some queries equal references."""
    ref = torch.randn(batch, num_ref, channels, generator=gen, dtype=dtype)
    ref[:, num_ref // 2: num_ref // 2 + 7] = ref[:, 3:10]          # duplicated rows -> equal distances
    ref[:, -1] = ref[:, 0]
    query = torch.randn(batch, num_query, channels, generator=gen, dtype=dtype)
    query[:, :5] = ref[:, 3:8]                                     # self-matches at distance 0, twice each
    return query, ref


@pytest.mark.parametrize('num_query,num_ref,channels,k', [(37, 101, 5, 1), (37, 101, 5, 16), (50, 700, 64, 33),
                                                          (23, 1100, 3, 128)])
def test_matches_dense_reference_batched(num_query, num_ref, channels, k):
    gen = torch.Generator().manual_seed(num_query * 1000 + k)
    query, ref = with_duplicates(gen, 2, num_query, num_ref, channels)
    idx, dist = knn(query, ref, k)
    ref_idx, ref_dist = knn_dense_reference(query, ref, k)
    assert idx.shape == (2, num_query, k) and idx.dtype == torch.int64 and dist.dtype == torch.float32
    assert torch.equal(idx, ref_idx)
    assert torch.equal(dist, ref_dist)
    # sorted by (distance, index)
    assert bool((dist[..., 1:] >= dist[..., :-1]).all())
    same = dist[..., 1:] == dist[..., :-1]
    assert bool((idx[..., 1:][same] > idx[..., :-1][same]).all())


@pytest.mark.parametrize('method', ['rows', 'stream', 'guided'])
@pytest.mark.parametrize('num_ref,k', [(300, 1), (300, 37), (300, 300), (1100, 128)])
def test_both_cpu_selections_match_dense_reference(method, num_ref, k):
    """The row-histogram selection, the streaming insertion and the guided collection give the reference's
    exact output, also with duplicated rows (distance ties), K = M, and all-equal rows (the histogram has no
    range; the guided threshold lets every row through)."""
    from pcdet.ops.knn.knn_cpu import knn_numpy

    gen = torch.Generator().manual_seed(num_ref + k)
    query, ref = with_duplicates(gen, 2, 45, num_ref, 6)
    ref[1, :] = 0.5                                         # sample 1: every reference identical
    ref_idx, ref_dist = knn_dense_reference(query, ref, k)
    idx, dist = knn_numpy(query.numpy(), ref.numpy(), k, sorted=True, method=method)
    np.testing.assert_array_equal(idx, ref_idx.numpy())
    np.testing.assert_array_equal(dist, ref_dist.numpy())
    idx_u, dist_u = knn_numpy(query.numpy(), ref.numpy(), k, sorted=False, method=method)
    order = np.argsort(idx_u, axis=-1)                      # unsorted: the same (index, distance) pairs
    np.testing.assert_array_equal(np.take_along_axis(idx_u, order, -1), np.sort(ref_idx.numpy(), axis=-1))
    ref_order = np.argsort(ref_idx.numpy(), axis=-1)
    np.testing.assert_array_equal(np.take_along_axis(dist_u, order, -1),
                                  np.take_along_axis(ref_dist.numpy(), ref_order, -1))


def test_guided_threshold_falls_back_when_the_sample_misleads():
    """knn_guided flags the rows its sampled threshold got wrong (fewer than k inside it, or more than its
    buffer) and knn_numpy redoes them: still exact."""
    from pcdet.ops.knn import knn_cpu

    gen = torch.Generator().manual_seed(21)
    num_ref, k = 4096, 64
    ref = 10 + torch.randn(1, num_ref, 8, generator=gen)
    ref[:, ::knn_cpu.SAMPLE_STRIDE] -= 10           # the sample rows sit near the queries, the rest far away
    ref[:, 1::2] = ref[:, 0:1]                      # sample 2 ... and half of all rows are one duplicate
    query = torch.randn(1, 30, 8, generator=gen)
    query[:, 15:] = ref[:, 0:1]
    ref_idx, ref_dist = knn_dense_reference(query, ref, k)
    idx, dist = knn_cpu.knn_numpy(query.numpy(), ref.numpy(), k, method='guided')
    np.testing.assert_array_equal(idx, ref_idx.numpy())
    np.testing.assert_array_equal(dist, ref_dist.numpy())
    ref_t = np.ascontiguousarray(ref.numpy().transpose(0, 2, 1))
    sample_t = np.ascontiguousarray(ref_t[:, :, ::knn_cpu.SAMPLE_STRIDE])
    out_idx = np.empty((1, 30, k), np.int64)
    out_dist = np.empty((1, 30, k), np.float32)
    _, sample_dist = knn_cpu.knn_numpy(query.numpy(), np.ascontiguousarray(sample_t.transpose(0, 2, 1)), 4,
                                       method='stream')
    threshold = np.ascontiguousarray(sample_dist[:, :, -1])      # each query's 4th nearest sample distance
    redo = np.zeros((1, 30), np.bool_)
    knn_cpu.knn_guided(query.numpy(), ref_t, threshold, k, 8 * k, True, out_idx, out_dist, redo)
    # rows 15.. sit on 2,049 identical references: all within the threshold (distance 0), more than the buffer
    assert redo[0, 15:].all()
    # rows 0..14 see ~4 sample rows within the threshold, fewer than k (unless row 0 and its copies are in)
    assert redo[0, :15].all()
    assert np.array_equal(out_idx[~redo], ref_idx.numpy()[~redo])


def test_unsorted_api_returns_the_same_neighbour_sets():
    gen = torch.Generator().manual_seed(9)
    query, ref = with_duplicates(gen, 1, 60, 900, 16)
    idx, _ = knn(query, ref, 100, sorted=False)
    ref_idx, _ = knn_dense_reference(query, ref, 100)
    assert torch.equal(idx.sort(dim=-1).values, ref_idx.sort(dim=-1).values)
    with pytest.raises(ValueError, match="method must be"):
        from pcdet.ops.knn.knn_cpu import knn_numpy
        knn_numpy(query.numpy(), ref.numpy(), 3, method='fast')


def test_k_equals_m_and_n_equals_m_unbatched():
    gen = torch.Generator().manual_seed(7)
    points = torch.randn(300, 8, generator=gen)
    points[150:160] = points[10:20]
    idx, dist = knn(points, points, 300)
    ref_idx, ref_dist = knn_dense_reference(points, points, 300)
    assert idx.shape == (300, 300)
    assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist)
    # every row is a permutation of all references and the self-distance is exactly zero
    assert torch.equal(idx.sort(dim=1).values, torch.arange(300).expand(300, 300))
    assert bool((dist[:, 0] == 0).all())
    # with a duplicate pair (10, 150) both at distance 0, the smaller index comes first for both rows
    assert idx[10, :2].tolist() == [10, 150] and idx[150, :2].tolist() == [10, 150]


def test_tie_break_by_index_hand_made():
    ref = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0], [0.0, 0.0]])
    query = torch.zeros(1, 2)
    idx, dist = knn(query, ref, 6)
    # distance 0 for ref 5, then four refs at distance 1 in index order, then ref 0 at distance 4
    assert idx[0].tolist() == [5, 1, 2, 3, 4, 0]
    assert dist[0].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 4.0]
    idx3, _ = knn(query, ref, 3)
    assert idx3[0].tolist() == [5, 1, 2]


def test_float64_numpy_and_mixed_dtypes():
    gen = torch.Generator().manual_seed(3)
    query, ref = with_duplicates(gen, 1, 40, 257, 6, dtype=torch.float64)
    idx, dist = knn(query, ref, 20)
    ref_idx, ref_dist = knn_dense_reference(query, ref, 20)
    assert dist.dtype == torch.float64 and torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist)
    idx_np, dist_np = knn(query[0].numpy(), ref[0].numpy(), 20)
    assert isinstance(idx_np, np.ndarray) and idx_np.dtype == np.int64
    np.testing.assert_array_equal(idx_np, ref_idx[0].numpy())
    np.testing.assert_array_equal(dist_np, ref_dist[0].numpy())
    idx_mixed, dist_mixed = knn(query.float(), ref, 5)    # float32 query, float64 ref -> float64
    assert dist_mixed.dtype == torch.float64
    idx_only, none = knn(query, ref, 5, return_dist=False)
    assert none is None and torch.equal(idx_only, ref_idx[..., :5])


def test_requires_grad_inputs_and_empty_queries():
    query = torch.randn(4, 3, requires_grad=True)
    ref = torch.randn(10, 3, requires_grad=True)
    idx, dist = knn(query, ref, 2)
    assert not dist.requires_grad and idx.shape == (4, 2)
    idx, dist = knn(torch.zeros(0, 3), ref.detach(), 2)
    assert idx.shape == (0, 2) and dist.shape == (0, 2)


def test_close_to_original_matmul_formulation():
    gen = torch.Generator().manual_seed(11)
    query, ref = torch.randn(1, 30, 16, generator=gen), torch.randn(1, 500, 16, generator=gen)
    _, dist = knn(query, ref, 8)
    _, dist_mm = knn_dense_matmul(query, ref, 8)
    assert torch.allclose(dist, dist_mm, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('args,exc,match', [
    ((torch.zeros(3, 2), torch.zeros(5, 2), 6), ValueError, r'1 <= k <= M'),
    ((torch.zeros(3, 2), torch.zeros(5, 2), 0), ValueError, r'1 <= k <= M'),
    ((torch.zeros(3, 2), torch.zeros(5, 2), 2.0), ValueError, r'k must be an integer'),
    ((torch.zeros(3, 2), torch.zeros(5, 3), 2), ValueError, r'channel counts differ'),
    ((torch.zeros(2, 3, 2), torch.zeros(1, 5, 2), 2), ValueError, r'batch sizes differ'),
    ((torch.zeros(3, 2), torch.zeros(1, 5, 2), 2), ValueError, r'must both be \(N, C\)'),
    ((torch.zeros(3, 2, dtype=torch.int32), torch.zeros(5, 2), 2), TypeError, r'float32 or float64'),
    ((torch.full((3, 2), float('nan')), torch.zeros(5, 2), 2), ValueError, r'finite'),
    (([[0.0]], torch.zeros(5, 1), 2), TypeError, r'torch tensors or both numpy'),
])
def test_bad_arguments_raise_clearly(args, exc, match):
    with pytest.raises(exc, match=match):
        knn(*args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device: CUDA kNN vs CPU kNN not run')
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(5)
    for dtype in (torch.float32, torch.float64):
        query, ref = with_duplicates(gen, 2, 300, 2000, 64, dtype=dtype)
        idx, dist = knn(query, ref, 128)
        idx_gpu, dist_gpu = knn(query.to('cuda'), ref.to('cuda'), 128)
        assert torch.equal(idx, idx_gpu.cpu()) and torch.equal(dist, dist_gpu.cpu())
