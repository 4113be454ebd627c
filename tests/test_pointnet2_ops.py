"""Batched PointNet++ ops and modules (pcdet.ops.pointnet2.pointnet2_batch) against references written here.

The references are plain numpy in OpenPCDet's float32 arithmetic (squared distances ``dx*dx + dy*dy + dz*dz``), so
indices must match exactly: FPS from index 0 (first maximum), ball query (strict radius, fill with the first found
index, zeros when empty), three-NN (stable order on ties). Gathers and interpolation are checked by value and by
``torch.autograd.gradcheck`` in float64; the SA / FP modules by state_dict names and shapes against OpenPCDet's
PointRCNN and by forward / backward on a small cloud.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from pcdet.ops.pointnet2.pointnet2_batch import pointnet2_modules, pointnet2_utils as pu


# ----------------------------------------------------------------------------------------------- references
def sq_dist_f32(points, centre):
    """(N,) float32 squared distances, term by term as OpenPCDet's kernels."""
    diff = points.astype(np.float32) - centre.astype(np.float32)
    return diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1] + diff[:, 2] * diff[:, 2]


def fps_reference(xyz, npoint):
    out = np.zeros((xyz.shape[0], npoint), dtype=np.int32)
    for b, pts in enumerate(xyz):
        temp = np.full(len(pts), 1e10, dtype=np.float32)
        old = 0
        for j in range(1, npoint):
            temp = np.minimum(temp, sq_dist_f32(pts, pts[old]))
            old = int(np.argmax(temp))           # the first maximum
            out[b, j] = old
    return out


def ball_query_reference(radius, nsample, xyz, new_xyz):
    radius2 = np.float32(radius) * np.float32(radius)
    out = np.zeros((xyz.shape[0], new_xyz.shape[1], nsample), dtype=np.int32)
    for b in range(xyz.shape[0]):
        for q, centre in enumerate(new_xyz[b]):
            inside = np.flatnonzero(sq_dist_f32(xyz[b], centre) < radius2)[:nsample]
            if len(inside):
                out[b, q, :] = inside[0]
                out[b, q, :len(inside)] = inside
    return out


def three_nn_reference(unknown, known):
    batch, n, _ = unknown.shape
    dist = np.full((batch, n, 3), np.inf, dtype=np.float32)
    idx = np.zeros((batch, n, 3), dtype=np.int32)
    for b in range(batch):
        for i, u in enumerate(unknown[b]):
            d = sq_dist_f32(known[b], u)
            order = np.argsort(d, kind='stable')[:3]
            dist[b, i, :len(order)] = np.sqrt(d[order])
            idx[b, i, :len(order)] = order
    return dist, idx


def clustered_cloud(rng, batch, num_points, num_clusters=6, spread=0.3):
    """Points in a few tight clusters plus uniform background, float32, with some exact duplicates."""
    centres = rng.uniform(-5, 5, size=(batch, num_clusters, 3))
    which = rng.integers(0, num_clusters, size=(batch, num_points))
    pts = np.take_along_axis(centres, which[..., None], 1) + rng.normal(0, spread, size=(batch, num_points, 3))
    pts[:, ::7] = rng.uniform(-6, 6, size=pts[:, ::7].shape)
    pts[:, 10:15] = pts[:, 20:25]                # duplicated points
    return pts.astype(np.float32)


# ----------------------------------------------------------------------------------------------- index ops
def test_furthest_point_sample_matches_reference():
    rng = np.random.default_rng(0)
    xyz = clustered_cloud(rng, 2, 301)
    out = pu.furthest_point_sample(torch.from_numpy(xyz), 90)
    assert out.dtype == torch.int32 and out.shape == (2, 90)
    np.testing.assert_array_equal(out.numpy(), fps_reference(xyz, 90))
    assert (out[:, 0] == 0).all()


def test_furthest_point_sample_ties_take_the_smallest_index():
    """A 5x5x5 integer grid (many exactly equal distances) and every point duplicated: the first maximum wins,
    so a duplicate (a higher index at distance 0 once its twin is chosen) is never sampled before all grid
    points are."""
    grid = np.stack(np.meshgrid(*[np.arange(5)] * 3, indexing='ij'), -1).reshape(-1, 3).astype(np.float32)
    xyz = np.concatenate([grid, grid])[None]
    out = pu.furthest_point_sample(torch.from_numpy(xyz), 125).numpy()
    np.testing.assert_array_equal(out, fps_reference(xyz, 125))
    assert sorted(out[0].tolist()) == list(range(125))
    assert out[0, 1] == 124                       # the opposite corner (4, 4, 4)


def test_furthest_point_sample_edge_cases():
    xyz = torch.rand(2, 5, 3, dtype=torch.float64)
    assert pu.furthest_point_sample(xyz, 0).shape == (2, 0)
    assert pu.furthest_point_sample(xyz, 1).tolist() == [[0], [0]]
    # more samples than points: after all points, every distance is 0 and index 0 repeats
    out = pu.furthest_point_sample(xyz, 7)
    assert sorted(out[0, :5].tolist()) == list(range(5)) and out[:, 5:].eq(0).all()
    with pytest.raises(ValueError, match='pointnet2_utils.py: .*at least one point'):
        pu.furthest_point_sample(torch.zeros(1, 0, 3), 4)


def test_ball_query_hand_example():
    """Strict radius (a point at exactly the radius is out), the first found index fills the remaining slots,
    an empty ball is all zeros."""
    xyz = torch.tensor([[[0, 0, 0], [1, 0, 0], [0.25, 0, 0], [5, 5, 5], [0, 0.5, 0]]], dtype=torch.float32)
    centres = torch.tensor([[[0, 0, 0], [10, 10, 10], [5, 5, 5], [0.6, 0, 0]]], dtype=torch.float32)
    idx = pu.ball_query(0.5, 4, xyz, centres)
    assert idx.dtype == torch.int32
    assert idx[0].tolist() == [[0, 2, 0, 0], [0, 0, 0, 0], [3, 3, 3, 3], [1, 2, 1, 1]]


@pytest.mark.parametrize('radius,nsample', [(0.2, 4), (0.6, 16), (2.0, 32)])
def test_ball_query_matches_reference(radius, nsample):
    """Clustered points: balls with fewer points than nsample, full balls, and empty balls (far centres); 45
    centres (not a multiple of the CPU kernel's 32 query lanes)."""
    rng = np.random.default_rng(int(radius * 10) + nsample)
    xyz = clustered_cloud(rng, 2, 400)
    centres = np.concatenate([xyz[:, rng.choice(400, 35, replace=False)],
                              rng.uniform(-30, 30, size=(2, 10, 3)).astype(np.float32)], axis=1)
    idx = pu.ball_query(radius, nsample, torch.from_numpy(xyz), torch.from_numpy(centres))
    ref = ball_query_reference(radius, nsample, xyz, centres)
    np.testing.assert_array_equal(idx.numpy(), ref)
    distinct = np.array([len(set(row)) for row in ref.reshape(-1, nsample)])
    assert (distinct == 1).any() and (distinct < nsample).any()


def test_three_nn_matches_reference_with_duplicates():
    rng = np.random.default_rng(3)
    known = clustered_cloud(rng, 2, 70)
    known[:, 40:45] = known[:, 5:10]                       # exact duplicates: equal distances
    unknown = np.concatenate([known[:, :20], clustered_cloud(rng, 2, 50)], axis=1)   # 20 at distance 0
    dist, idx = pu.three_nn(torch.from_numpy(unknown), torch.from_numpy(known))
    ref_dist, ref_idx = three_nn_reference(unknown, known)
    assert dist.dtype == torch.float32 and idx.dtype == torch.int32
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    # the squared distances are exact; torch's float32 sqrt on CPU may differ from numpy's by one ulp
    np.testing.assert_allclose(dist.numpy(), ref_dist, rtol=2e-7, atol=0)
    assert idx[0, 5].tolist() == [5, 40, ref_idx[0, 5, 2]]       # the duplicate follows its twin


def test_three_nn_with_fewer_than_three_known_points():
    known = torch.tensor([[[0., 0, 0], [3, 0, 0]]])
    dist, idx = pu.three_nn(torch.tensor([[[1., 0, 0]]]), known)
    assert idx.tolist() == [[[0, 1, 0]]]
    assert dist[0, 0, :2].tolist() == [1.0, 2.0] and torch.isinf(dist[0, 0, 2])


# ----------------------------------------------------------------------------------------------- gathers
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_gather_grouping_interpolate_values(dtype):
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, 13, generator=gen, dtype=dtype)
    idx = torch.randint(0, 13, (2, 9), generator=gen, dtype=torch.int32)
    out = pu.gather_operation(features, idx)
    assert torch.equal(out, torch.stack([features[b][:, idx[b].long()] for b in range(2)]))
    gidx = torch.randint(0, 13, (2, 4, 6), generator=gen, dtype=torch.int32)
    grouped = pu.grouping_operation(features, gidx)
    assert grouped.shape == (2, 5, 4, 6)
    assert torch.equal(grouped, torch.stack([features[b][:, gidx[b].long()] for b in range(2)]))
    iidx = torch.randint(0, 13, (2, 8, 3), generator=gen, dtype=torch.int32)
    weight = torch.rand(2, 8, 3, generator=gen, dtype=dtype)
    interp = pu.three_interpolate(features, iidx, weight)
    ref = torch.zeros(2, 5, 8, dtype=dtype)
    for j in range(3):   # left to right, as the kernels
        ref = ref + weight[:, None, :, j] * torch.stack([features[b][:, iidx[b, :, j].long()] for b in range(2)])
    assert torch.equal(interp, ref)


@pytest.mark.parametrize('op', ['gather', 'grouping', 'interpolate'])
def test_gradcheck(op):
    """float64 gradients by finite differences; repeated indices exercise the scatter-add."""
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    if op == 'gather':
        idx = torch.tensor([[0, 3, 3, 6, 1], [2, 2, 2, 5, 0]], dtype=torch.int32)
        assert torch.autograd.gradcheck(lambda f: pu.gather_operation(f, idx), (features,))
    elif op == 'grouping':
        idx = torch.randint(0, 7, (2, 4, 5), generator=gen, dtype=torch.int32)
        assert torch.autograd.gradcheck(lambda f: pu.grouping_operation(f, idx), (features,))
    else:
        idx = torch.randint(0, 7, (2, 6, 3), generator=gen, dtype=torch.int32)
        weight = torch.rand(2, 6, 3, generator=gen, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda f: pu.three_interpolate(f, idx, weight), (features,))


def test_index_ops_have_no_gradient():
    xyz = torch.rand(1, 20, 3, dtype=torch.float64, requires_grad=True)
    assert not pu.furthest_point_sample(xyz, 4).requires_grad
    assert not pu.ball_query(0.5, 4, xyz, xyz[:, :3]).requires_grad
    dist, idx = pu.three_nn(xyz, xyz[:, :5])
    assert not dist.requires_grad and not idx.requires_grad


def test_bad_inputs_are_reported():
    features = torch.zeros(1, 2, 5)
    with pytest.raises(ValueError, match=r'pointnet2_utils.py: idx holds indices in \[0, 5\] but there are 5'):
        pu.gather_operation(features, torch.tensor([[0, 5]], dtype=torch.int32))
    with pytest.raises(ValueError, match='pointnet2_utils.py: idx holds indices in'):
        pu.grouping_operation(features, torch.tensor([[[-1, 0]]], dtype=torch.int32))
    with pytest.raises(ValueError, match=r'xyz must be a \(B, N, 3\) tensor'):
        pu.ball_query(0.5, 4, torch.zeros(1, 5, 2), torch.zeros(1, 2, 3))
    with pytest.raises(TypeError, match='features must be float32 or float64'):
        pu.gather_operation(features.half(), torch.zeros(1, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match='nsample must be a positive int'):
        pu.ball_query(0.5, 0, torch.zeros(1, 5, 3), torch.zeros(1, 2, 3))


def test_cuda_extension_is_loaded_lazily_with_a_clear_error():
    """Importing the ops loads no compiled extension and no spconv; asking for the CUDA extension where it is not
    built names the module and how to build it."""
    code = ('import sys\n'
            'from pcdet.ops.pointnet2.pointnet2_batch import pointnet2_modules, pointnet2_utils\n'
            "bad = [m for m in sys.modules if m.endswith('_cuda') or m.startswith('spconv')]\n"
            'assert not bad, bad\n')
    subprocess.run([sys.executable, '-c', code], check=True, timeout=120)
    try:
        pu._cuda_ext()
    except ImportError as exc:
        assert 'pcdet.ops.pointnet2.pointnet2_batch.pointnet2_batch_cuda is not built' in str(exc)
        assert 'PCDET_BUILD_CUDA=1' in str(exc)
    else:
        pytest.skip('the CUDA extension is built here')


# ----------------------------------------------------------------------------------------------- modules
# OpenPCDet's tools/cfgs/kitti_models/pointrcnn.yaml
BACKBONE_SA = dict(NPOINTS=[4096, 1024, 256, 64], RADIUS=[[0.1, 0.5], [0.5, 1.0], [1.0, 2.0], [2.0, 4.0]],
                   NSAMPLE=[[16, 32]] * 4,
                   MLPS=[[[16, 16, 32], [32, 32, 64]], [[64, 64, 128], [64, 96, 128]],
                         [[128, 196, 256], [128, 196, 256]], [[256, 256, 512], [256, 384, 512]]])
BACKBONE_FP_MLPS = [[128, 128], [256, 256], [512, 512], [512, 512]]
ROI_SA = dict(NPOINTS=[128, 32, -1], RADIUS=[0.2, 0.4, 100], NSAMPLE=[16, 16, 16],
              MLPS=[[128, 128, 128], [128, 128, 256], [256, 256, 512]])


def pointrcnn_backbone_modules(input_channels=4):
    """SA_modules / FP_modules as OpenPCDet's PointNet2MSG builds them from the config."""
    holder = nn.Module()
    holder.SA_modules, holder.FP_modules = nn.ModuleList(), nn.ModuleList()
    channel_in = input_channels - 3
    skip_channels = [channel_in]
    for k, npoint in enumerate(BACKBONE_SA['NPOINTS']):
        mlps = [[channel_in] + spec for spec in BACKBONE_SA['MLPS'][k]]
        holder.SA_modules.append(pointnet2_modules.PointnetSAModuleMSG(
            npoint=npoint, radii=BACKBONE_SA['RADIUS'][k], nsamples=BACKBONE_SA['NSAMPLE'][k], mlps=mlps,
            use_xyz=True))
        channel_in = sum(spec[-1] for spec in mlps)
        skip_channels.append(channel_in)
    for k, fp_mlp in enumerate(BACKBONE_FP_MLPS):
        pre_channel = BACKBONE_FP_MLPS[k + 1][-1] if k + 1 < len(BACKBONE_FP_MLPS) else channel_in
        holder.FP_modules.append(pointnet2_modules.PointnetFPModule(mlp=[pre_channel + skip_channels[k]] + fp_mlp))
    return holder


def pointrcnn_roi_sa_modules(channel_in=128):
    """PointRCNNHead's SA_modules (USE_BN False is passed as bn and ignored, as OpenPCDet)."""
    holder = nn.Module()
    holder.SA_modules = nn.ModuleList()
    for k, npoint in enumerate(ROI_SA['NPOINTS']):
        mlp = [channel_in] + ROI_SA['MLPS'][k]
        holder.SA_modules.append(pointnet2_modules.PointnetSAModule(
            npoint=npoint if npoint != -1 else None, radius=ROI_SA['RADIUS'][k], nsample=ROI_SA['NSAMPLE'][k],
            mlp=mlp, use_xyz=True, bn=False))
        channel_in = mlp[-1]
    return holder


@pytest.mark.parametrize('prefix,build', [('backbone_3d.', pointrcnn_backbone_modules),
                                          ('roi_head.', pointrcnn_roi_sa_modules)])
def test_state_dict_matches_openpcdet_pointrcnn(openpcdet_state_dicts, prefix, build):
    ref = [(name, list(shape)) for name, shape in openpcdet_state_dicts['pointrcnn']
           if name.startswith((prefix + 'SA_modules.', prefix + 'FP_modules.'))]
    ours = [(prefix + name, list(t.shape)) for name, t in build().state_dict().items()]
    assert ref, f'no {prefix}SA_modules entries in the reference'
    assert ours == ref


def test_module_constructors_leave_the_callers_lists_alone():
    mlps = [[1, 8, 16], [1, 8, 32]]
    pointnet2_modules.PointnetSAModuleMSG(npoint=8, radii=[0.5, 1.0], nsamples=[4, 8], mlps=mlps)
    assert mlps == [[1, 8, 16], [1, 8, 32]]
    with pytest.raises(ValueError, match='one entry per scale'):
        pointnet2_modules.PointnetSAModuleMSG(npoint=8, radii=[0.5], nsamples=[4, 8], mlps=mlps)


def test_sa_msg_and_fp_forward_backward_on_a_small_cloud():
    torch.manual_seed(0)
    xyz = torch.from_numpy(clustered_cloud(np.random.default_rng(5), 2, 200, spread=0.5)).double()
    xyz.requires_grad_(True)
    features = torch.randn(2, 1, 200, dtype=torch.float64, requires_grad=True)
    sa1 = pointnet2_modules.PointnetSAModuleMSG(npoint=64, radii=[0.3, 0.8], nsamples=[8, 16],
                                                mlps=[[1, 8, 16], [1, 8, 32]]).double()
    sa_all = pointnet2_modules.PointnetSAModule(mlp=[48, 32], pool_method='avg_pool').double()
    fp1 = pointnet2_modules.PointnetFPModule(mlp=[48 + 1, 16]).double()
    fp_all = pointnet2_modules.PointnetFPModule(mlp=[32 + 48, 8]).double()
    new_xyz, feats1 = sa1(xyz, features)
    assert new_xyz.shape == (2, 64, 3) and feats1.shape == (2, 48, 64)
    sample_idx = pu.furthest_point_sample(xyz, 64).long()
    assert torch.equal(new_xyz, torch.stack([xyz[b, sample_idx[b]] for b in range(2)]))
    none_xyz, feats_all = sa_all(new_xyz, feats1)
    assert none_xyz is None and feats_all.shape == (2, 32, 1)
    up = fp1(xyz, new_xyz, features, feats1)
    assert up.shape == (2, 16, 200)
    broadcast = fp_all(new_xyz, None, feats1, feats_all)
    assert broadcast.shape == (2, 8, 64)
    (up.sum() + broadcast.sum()).backward()
    for t in (xyz, features):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_query_and_group_and_group_all_values():
    rng = np.random.default_rng(7)
    xyz_np = clustered_cloud(rng, 1, 60)
    xyz = torch.from_numpy(xyz_np).double()
    features = torch.randn(1, 2, 60, dtype=torch.float64)
    centres = xyz[:, :5].contiguous()
    grouped = pu.QueryAndGroup(0.5, 6)(xyz, centres, features)
    idx = torch.from_numpy(ball_query_reference(0.5, 6, xyz_np, xyz_np[:, :5])).long()[0]
    expected = torch.cat([(xyz[0][idx] - centres[0][:, None]).permute(2, 0, 1), features[0][:, idx]], dim=0)
    assert grouped.shape == (1, 5, 5, 6) and torch.equal(grouped[0], expected)
    assert torch.equal(pu.QueryAndGroup(0.5, 6, use_xyz=False)(xyz, centres, features)[0], features[0][:, idx])
    everything = pu.GroupAll()(xyz, None, features)
    assert everything.shape == (1, 5, 1, 60)
    assert torch.equal(everything[0, :, 0], torch.cat([xyz[0].T, features[0]]))


# ----------------------------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device: CUDA PointNet++ ops vs CPU not run')
def test_cuda_ops_match_cpu():
    rng = np.random.default_rng(11)
    xyz = torch.from_numpy(clustered_cloud(rng, 2, 3000))
    cuda = xyz.cuda()
    assert torch.equal(pu.furthest_point_sample(cuda, 500).cpu(), pu.furthest_point_sample(xyz, 500))
    centres = xyz[:, :700].contiguous()
    for radius, nsample in ((0.2, 16), (1.0, 32)):
        assert torch.equal(pu.ball_query(radius, nsample, cuda, centres.cuda()).cpu(),
                           pu.ball_query(radius, nsample, xyz, centres))
    dist, idx = pu.three_nn(cuda, centres.cuda())
    ref_dist, ref_idx = pu.three_nn(xyz, centres)
    assert torch.equal(idx.cpu(), ref_idx)
    torch.testing.assert_close(dist.cpu(), ref_dist, rtol=2e-7, atol=0)
    for dtype in (torch.float32, torch.float64):
        features = torch.randn(2, 4, 3000, dtype=dtype, requires_grad=True)
        feats_cuda = features.detach().cuda().requires_grad_(True)
        gidx = torch.randint(0, 3000, (2, 50, 8), dtype=torch.int32)
        weight = torch.rand(2, 700, 3, dtype=dtype)
        cpu_out = [pu.gather_operation(features, gidx[:, :, 0].contiguous()), pu.grouping_operation(features, gidx),
                   pu.three_interpolate(features, ref_idx, weight)]
        gpu_out = [pu.gather_operation(feats_cuda, gidx[:, :, 0].contiguous().cuda()),
                   pu.grouping_operation(feats_cuda, gidx.cuda()),
                   pu.three_interpolate(feats_cuda, idx, weight.cuda())]
        for a, b in zip(cpu_out, gpu_out):
            torch.testing.assert_close(b.cpu(), a)
        sum(o.sum() for o in cpu_out).backward()
        sum(o.sum() for o in gpu_out).backward()
        torch.testing.assert_close(feats_cuda.grad.cpu(), features.grad)
