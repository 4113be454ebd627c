"""Distillation losses and adapters on small random tensors (no detector needed)."""
import math

import pytest
import torch
import torch.nn.functional as F

from pcdet.distill import graph_kernels
from pcdet.distill.adapters import GraphConvAdapter
from pcdet.distill.losses import FGMimicLoss, FitNetLoss, LogitKDLoss, PointDistillerLoss, get_loss_class
from pcdet.distill.losses.fg_mimic_loss import bev_box_mask
from pcdet.distill.losses.pointdistiller_loss import importance_weights, top_nodes


def const_channels(cs, ct):
    return lambda side, name: cs if side == 'student' else ct


def pillar_batch(counts=(50, 70), c=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords, npts = [], []
    for b, n in enumerate(counts):
        yx = torch.randperm(400, generator=g)[:n]
        coords.append(torch.stack([torch.full((n,), b), torch.zeros(n, dtype=torch.long), yx // 20, yx % 20], 1))
        npts.append(torch.randint(1, 33, (n,), generator=g))
    v = sum(counts)
    return {'voxel_coords': torch.cat(coords).int(), 'voxel_num_points': torch.cat(npts).int(),
            'feat': torch.randn(v, c, generator=g)}


def test_importance_weights_mean_one_and_order():
    scores = torch.tensor([3.0, 10.0, 1.0, 7.0, 7.0, 2.0])
    for tau, norm in [(1.0, 'none'), (5.0, 'none'), (0.5, 'max'), (0.01, 'none')]:
        w = importance_weights(scores, tau, norm)
        assert w.mean().item() == pytest.approx(1.0, abs=1e-5)
        # weights are monotone in the score: sorting by score sorts the weights
        order = torch.argsort(scores)
        assert torch.all(w[order][1:] >= w[order][:-1])
    # tau = 0.01 on integer counts is a hard selection (spec section 5): the max gets ~all the mass
    w = importance_weights(torch.tensor([32.0, 31.0, 20.0, 32.0]), 0.01)
    assert w[0].item() == pytest.approx(2.0, rel=1e-6) and w[1].item() < 1e-30


def test_top_nodes_ties_by_index():
    scores = torch.tensor([1.0, 5.0, 5.0, 3.0, 5.0])
    assert top_nodes(scores, 4).tolist() == [1, 2, 4, 3]


@pytest.mark.parametrize('edge', ['concat', 'diff'])
def test_graph_conv_factorised_equals_literal_edges(edge):
    """The node-projection form (BN statistics from node sums) equals Conv2d + BN2d + ReLU on explicit edges:
    outputs, gradients and running statistics, in training and in eval mode."""
    torch.manual_seed(0)
    fast = GraphConvAdapter(6, 5, edge)
    with torch.no_grad():
        fast.bn.weight.uniform_(0.5, 1.5)
        fast.bn.bias.uniform_(-0.5, 0.5)
    ref = GraphConvAdapter(6, 5, edge)
    ref.load_state_dict(fast.state_dict())
    feats = torch.randn(40, 6) * 3 + 1
    center = torch.tensor([3, 7, 11, 7])
    nbr = torch.randint(0, 40, (4, 9))
    for train in (True, False, True):
        fast.train(train)
        ref.train(train)
        f1, f2 = feats.clone().requires_grad_(True), feats.clone().requires_grad_(True)
        out = fast(f1, center, nbr)                                              # (4, 9, 5)
        dense = ref.forward_dense(GraphConvAdapter.edge_features(f2, center, nbr, edge))[0].permute(1, 2, 0)
        assert torch.allclose(out, dense, atol=1e-5)
        grad = torch.randn_like(out)
        out.backward(grad)
        dense.backward(grad)
        assert torch.allclose(f1.grad, f2.grad, atol=1e-4)
        for (name, p1), p2 in zip(fast.named_parameters(), ref.parameters()):
            assert torch.allclose(p1.grad, p2.grad, atol=1e-4), name
        for key, val in ref.bn.state_dict().items():
            assert torch.allclose(fast.bn.state_dict()[key].float(), val.float(), atol=1e-6), key
        fast.zero_grad()
        ref.zero_grad()


def make_pd(cs=8, ct=8, **kw):
    cfg = dict(dict(NAME='PointDistillerLoss', NUM_NODES=20, K=6, TAU=1.0), **kw)
    return PointDistillerLoss(cfg, 'test', const_channels(cs, ct))


def dense_pd_reference(loss, s_nodes, t_nodes, bidx, scores):
    """PointDistiller's loss (training-mode BN) written out on explicit (N, K) edges, differentiable: the graph
    from ``build_graph``, per side ReLU(BN(W e_ij)) with the statistics of all N*K edges, optional max over K,
    weighted MSE. For samples with equally many selected nodes (the per-sample mean is then the mean over nodes)."""
    center, nbr, weights = loss.build_graph(t_nodes.detach(), bidx, torch.zeros(len(bidx), 1), scores)
    assert len(set(torch.bincount(bidx[center]).tolist())) == 1

    def embed(gcn, feats):
        x_j = feats[nbr]                                                        # (N, K, C)
        x_i = feats[center].unsqueeze(1).expand_as(x_j)
        z = torch.cat([x_j - x_i if gcn.edge == 'diff' else x_j, x_i], dim=2) @ gcn.conv.weight[:, :, 0, 0].t()
        mean, var = z.mean(dim=(0, 1)), z.var(dim=(0, 1), unbiased=False)
        return torch.relu((z - mean) / torch.sqrt(var + gcn.bn.eps) * gcn.bn.weight + gcn.bn.bias)
    y_s, y_t = embed(loss.student_gcn, s_nodes), embed(loss.teacher_gcn, t_nodes.detach())
    if loss.opts['POOL'] == 'max':
        return (weights * (y_s.amax(dim=1) - y_t.amax(dim=1)).pow(2).mean(dim=1)).mean()
    return (weights.view(-1, 1, 1) * (y_s - y_t).pow(2)).mean()


def assert_matches_reference(loss, value, s, reference, rel=1e-5):
    """``value`` and the gradients it left on ``s`` and on the trainable adapters equal those of ``reference``."""
    params = [p for p in loss.parameters() if p.requires_grad]
    expected = torch.autograd.grad(reference, [s] + params)
    assert value.item() == pytest.approx(reference.item(), rel=rel)
    assert expected[0].abs().sum() > 0                                       # the comparison is not vacuous
    for got, want in zip([s.grad] + [p.grad for p in params], expected):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_pointdistiller_zero_for_identical_features_and_shared_adapters():
    batch = pillar_batch()
    loss = make_pd()
    loss.student_gcn.load_state_dict(loss.teacher_gcn.state_dict())
    feat = batch['feat']
    value, _ = loss({'pillar_features': feat.clone()}, {'pillar_features': feat.clone()}, batch)
    assert value.item() == 0.0
    loss.teacher_gcn = loss.student_gcn  # literally shared
    value, _ = loss({'pillar_features': feat}, {'pillar_features': feat}, batch)
    assert value.item() == 0.0


def test_pointdistiller_graph_per_sample_topn_and_self_neighbour():
    batch = pillar_batch(counts=(30, 12))
    loss = make_pd(NUM_NODES=15, K=5)
    coords = batch['voxel_coords'].long()
    scores = batch['voxel_num_points'].float()
    center, nbr, weights = loss.build_graph(batch['feat'], coords[:, 0], coords[:, 1:].float(), scores)
    assert center.numel() == 15 + 12                       # min(N, V_b) per sample
    assert torch.all(coords[center, 0].unsqueeze(1) == coords[nbr, 0])   # neighbours from the same sample
    assert torch.all((nbr == center.unsqueeze(1)).any(1))                 # the node is its own neighbour
    first = center[:15]
    chosen = scores[:30][first - 0]
    assert chosen.min() >= torch.sort(scores[:30], descending=True).values[14]  # the top-N by score
    assert weights[:15].mean().item() == pytest.approx(1.0, abs=1e-5)
    assert weights[15:].mean().item() == pytest.approx(1.0, abs=1e-5)
    # exact kNN in teacher feature space: the K nearest of node 0 by brute force
    f = batch['feat'][:30]
    d = ((f[center[0]] - f) ** 2).sum(1)
    assert set(nbr[0].tolist()) == set(torch.sort(d, stable=True).indices[:5].tolist())
    # batch scope (the released code) mixes samples
    loss_b = make_pd(NUM_NODES=15, K=5, SCOPE='batch')
    center_b, _, w_b = loss_b.build_graph(batch['feat'], coords[:, 0], coords[:, 1:].float(), scores)
    assert center_b.numel() == 15 and w_b.mean().item() == pytest.approx(1.0, abs=1e-5)


def test_pointdistiller_grads_reach_student_and_adapters_only():
    batch = pillar_batch()
    loss = make_pd(cs=4, ct=8, WIDTH=3, POOL='max', EDGE='diff')
    s = torch.randn(batch['feat'].shape[0], 4, requires_grad=True)
    t = batch['feat'].clone().requires_grad_(True)
    value, _ = loss({'pillar_features': s}, {'pillar_features': t}, batch)
    value.backward()
    assert t.grad is None                                  # teacher features are detached
    # value and gradients (student features, both graph convs) are those of the literal edge formulation
    reference = dense_pd_reference(loss, s, t, batch['voxel_coords'][:, 0].long(),
                                   batch['voxel_num_points'].float())
    assert_matches_reference(loss, value, s, reference)


@pytest.mark.parametrize('pool', ['none', 'max'])
def test_pointdistiller_frozen_teacher_gcn_gets_no_update(pool):
    """TEACHER_GCN frozen: the teacher-side graph conv is left out of training (no grads, not in the params an
    optimiser is built from); the student side still learns, and its loss equals the trainable one's."""
    batch = pillar_batch()
    torch.manual_seed(3)
    frozen = make_pd(cs=4, ct=8, POOL=pool, TEACHER_GCN='frozen')
    trainable = make_pd(cs=4, ct=8, POOL=pool)
    trainable.load_state_dict(frozen.state_dict())
    s = torch.randn(batch['feat'].shape[0], 4)
    values, grads = [], []
    for loss in (frozen, trainable):
        s_in = s.clone().requires_grad_(True)
        value, _ = loss({'pillar_features': s_in}, {'pillar_features': batch['feat']}, batch)
        value.backward()
        values.append(value.item())
        grads.append([s_in.grad] + [p.grad for p in loss.student_gcn.parameters()])
        assert s_in.grad.abs().sum() > 0 and all(p.grad.abs().sum() > 0 for p in loss.student_gcn.parameters())
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(*grads))   # the student side alike
    assert all(p.grad is None and not p.requires_grad for p in frozen.teacher_gcn.parameters())
    assert all(p.grad is not None for p in trainable.teacher_gcn.parameters())
    assert {id(p) for p in frozen.parameters() if p.requires_grad} == {id(p) for p in frozen.student_gcn.parameters()}
    with pytest.raises(ValueError, match='TEACHER_GCN'):
        make_pd(TEACHER_GCN='fixed')


def test_pointdistiller_bev_and_sparse_layouts():
    torch.manual_seed(1)
    loss = make_pd(cs=4, ct=6, STUDENT_FEATURE='module:backbone_2d.blocks.0',
                   TEACHER_FEATURE='module:backbone_2d.blocks.0')
    s, t = torch.randn(2, 4, 5, 7, requires_grad=True), torch.randn(2, 6, 5, 7)
    name = 'module:backbone_2d.blocks.0'
    value, _ = loss({name: s}, {name: t}, {})
    value.backward()
    # nodes are the H*W cells of each sample (channels last), scored by the max teacher activation
    t_nodes = t.permute(0, 2, 3, 1).reshape(70, 6)
    bidx = torch.arange(2).repeat_interleave(35)
    reference = dense_pd_reference(loss, s.permute(0, 2, 3, 1).reshape(70, 4), t_nodes, bidx,
                                   t_nodes.max(dim=1).values)
    assert_matches_reference(loss, value, s, reference)

    class Sparse:  # the two attributes of an spconv SparseConvTensor the loss reads
        def __init__(self, features, indices):
            self.features, self.indices = features, indices
    batch = pillar_batch(counts=(25, 25), c=6)
    loss = make_pd(cs=4, ct=6, STUDENT_FEATURE='encoded_spconv_tensor', TEACHER_FEATURE='encoded_spconv_tensor')
    st = Sparse(torch.randn(50, 4, requires_grad=True), batch['voxel_coords'])
    tt = Sparse(batch['feat'], batch['voxel_coords'])
    value, _ = loss({'encoded_spconv_tensor': st}, {'encoded_spconv_tensor': tt}, {})
    value.backward()
    assert torch.isfinite(value)
    reference = dense_pd_reference(loss, st.features, tt.features, batch['voxel_coords'][:, 0].long(),
                                   tt.features.max(dim=1).values)
    assert_matches_reference(loss, value, st.features, reference)


def test_pointdistiller_bad_config_and_mismatched_features():
    with pytest.raises(KeyError, match='NUM_NODE'):
        make_pd(NUM_NODE=5)
    with pytest.raises(ValueError, match='EDGE'):
        make_pd(EDGE='sub')
    with pytest.raises(KeyError, match='valid names'):
        get_loss_class('PointDistiler', 'DISTILL.LOSSES[0]')
    batch = pillar_batch()
    loss = make_pd()
    with pytest.raises(ValueError, match='student feature has 119 rows but voxel_coords has 120'):
        loss({'pillar_features': batch['feat'][:-1]}, {'pillar_features': batch['feat']}, batch)
    bev = make_pd(cs=4, ct=6, STUDENT_FEATURE='x', TEACHER_FEATURE='x')
    with pytest.raises(ValueError, match='indexed alike'):
        bev({'x': torch.randn(1, 4, 5, 7)}, {'x': torch.randn(1, 6, 5, 8)}, {})


def test_fitnet_and_fg_mimic_zero_when_adapter_reproduces_teacher():
    torch.manual_seed(2)
    fit = FitNetLoss({'NAME': 'FitNetLoss'}, 'test', const_channels(3, 5))
    s = torch.randn(2, 3, 8, 10)
    fit.eval()                                        # BN uses running stats (identity at init)
    t = fit.adapter(s).detach()
    assert fit({'spatial_features_2d': s}, {'spatial_features_2d': t}, {})[0].item() == pytest.approx(0, abs=1e-10)
    assert fit({'spatial_features_2d': s}, {'spatial_features_2d': t + 1}, {})[0].item() == pytest.approx(1, 1e-4)
    # student map at half resolution is resized to the teacher's
    t_big = torch.randn(2, 5, 16, 20)
    resized = F.interpolate(t, size=(16, 20), mode='bilinear', align_corners=False)
    assert fit({'spatial_features_2d': s}, {'spatial_features_2d': t_big}, {})[0].item() == pytest.approx(
        (resized - t_big).pow(2).mean().item(), rel=1e-5)


def test_bev_box_mask_geometry():
    # range x [0, 10], y [-5, 5] on a 10 x 10 grid: cells of 1 m, centres at 0.5, 1.5, ...
    pc_range = [0, -5, -3, 10, 5, 1]
    box = torch.tensor([[4.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0]])    # x in [2, 6], y in [-1, 1]
    m = bev_box_mask([box], 1, 10, 10, pc_range)[0]
    expected = torch.zeros(10, 10, dtype=torch.bool)
    expected[4:6, 2:6] = True                                   # rows y centres -0.5, 0.5; cols x 2.5..5.5
    assert torch.equal(m, expected)
    rot = box.clone()
    rot[0, 6] = math.pi / 2                                     # now 2 m along x, 4 m along y
    m = bev_box_mask([rot], 1, 10, 10, pc_range)[0]
    expected = torch.zeros(10, 10, dtype=torch.bool)
    expected[3:7, 3:5] = True
    assert torch.equal(m, expected)
    tiny = torch.tensor([[7.3, 2.2, 0, 0.2, 0.2, 1, 0], [0, 0, 0, 0, 0, 0, 0]])   # second row is padding
    m = bev_box_mask([tiny], 1, 10, 10, pc_range)[0]
    assert m.sum() == 1 and m[7, 7]


def test_fg_mimic_masks_background():
    fg = FGMimicLoss({'NAME': 'FGMimicLoss'}, 'test', const_channels(3, 3), {'point_cloud_range': [0, -5, -3,
                                                                                                    10, 5, 1]})
    fg.eval()
    s = torch.randn(1, 3, 10, 10)
    t = fg.adapter(s).detach().clone()
    gt = torch.tensor([[[4.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 1.0]]])
    t_bg = t.clone()
    t_bg[:, :, 0, :] += 3.0                                      # differences only outside the box
    value, tb = fg({'spatial_features_2d': s}, {'spatial_features_2d': t_bg}, {'gt_boxes': gt})
    assert value.item() == pytest.approx(0, abs=1e-10) and tb['fg_cells'] == 8
    t_fg = t.clone()
    t_fg[:, :, 4, 2] += 2.0                                      # one foreground cell off by 2 in every channel
    value, _ = fg({'spatial_features_2d': s}, {'spatial_features_2d': t_fg}, {'gt_boxes': gt})
    assert value.item() == pytest.approx(4.0 / 8, rel=1e-4)


def test_logit_kd_minimum_at_teacher_logits():
    torch.manual_seed(3)
    kd = LogitKDLoss({'NAME': 'LogitKDLoss', 'TEMPERATURE': 2.0}, 'test')
    zc = torch.randn(2, 6 * 3, 4, 5)
    zb = torch.randn(2, 6 * 7, 4, 5)
    names = ('module:dense_head.conv_cls', 'module:dense_head.conv_box')
    t = dict(zip(names, (zc, zb)))
    s = {n: v.clone().requires_grad_(True) for n, v in t.items()}
    value, tb = kd(s, t, {})
    value.backward()
    assert tb['box'] == 0.0
    assert all(v.grad.abs().max() < 1e-6 for v in s.values())   # stationary point at the teacher's outputs
    s2 = {n: (v + 0.5).requires_grad_(True) for n, v in t.items()}
    value2, tb2 = kd(s2, t, {})
    assert value2.item() > value.item()
    # every residual off by 0.5 (heading: sin 0.5), all past smooth-L1's beta 1/9: the same cost at every anchor,
    # so the score-weighted mean is that cost
    assert tb2['box'] == pytest.approx(6 * (0.5 - 0.5 / 9) + math.sin(0.5) - 0.5 / 9, rel=1e-5)
    p_t, q = torch.sigmoid(zc / 2), torch.sigmoid((zc + 0.5) / 2)
    bce = -(p_t * torch.log(q) + (1 - p_t) * torch.log(1 - q)).mean() * 4          # T^2 = 4
    assert tb2['cls'] == pytest.approx(bce.item(), rel=1e-5)
    assert value2.item() == pytest.approx(tb2['cls'] + tb2['box'], rel=1e-5)
    # heading difference of 2*pi costs nothing (sin-difference)
    zb_rot = zb.clone().view(2, 6, 7, 4, 5)
    zb_rot[:, :, 6] += 2 * math.pi
    _, tb3 = kd({names[0]: zc, names[1]: zb_rot.view(2, 42, 4, 5)}, t, {})
    assert tb3['box'] < 1e-9


def test_fused_edge_kernels_match_torch_reference():
    gk = graph_kernels
    assert gk._numba_kernels() is not None                       # numba is a dependency: the CPU path is fused
    torch.manual_seed(4)
    m, n, k, c = 50, 20, 7, 5
    nbr = torch.randint(0, m, (n, k))
    nbr[0] = 3                                                    # repeated neighbour rows
    w = torch.rand(n) * 2
    tensors = [torch.randn(m, c), torch.randn(n, c), torch.randn(m, c), torch.randn(n, c)]
    fused_in = [t.clone().requires_grad_(True) for t in tensors]
    ref_in = [t.clone().requires_grad_(True) for t in tensors]
    fused = gk.edge_relu_mse(*fused_in, nbr, w)
    ref = gk.edge_relu_mse_torch(*ref_in, nbr, w)
    assert fused.item() == pytest.approx(ref.item(), rel=1e-5)
    (3 * fused).backward()
    (3 * ref).backward()
    for a, b in zip(fused_in, ref_in):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)
    a1, a2 = tensors[0].clone().requires_grad_(True), tensors[0].clone().requires_grad_(True)
    s1, s2 = gk.neighbour_sum(a1, nbr), gk.neighbour_sum_torch(a2, nbr)
    assert torch.allclose(s1, s2, atol=1e-5)
    g = torch.randn(n, c)
    s1.backward(g)
    s2.backward(g)
    assert torch.allclose(a1.grad, a2.grad, atol=1e-5)
