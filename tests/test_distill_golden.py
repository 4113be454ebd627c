"""Golden values of the four distillation losses on fixed tiny tensors.

Every expected value is stated twice: computed by an independent numpy (float64) formula written here from the
loss's documented definition (module docstrings of ``pcdet/distill/losses`` and ``adapters.py``), and written
down as a literal, once, from that formula. The loss (float32) must match both, so a change in the loss or in the
reference is caught. Adapter weights are set to fixed values; BatchNorm (eps 1e-3, the adapters') is checked in
training mode (statistics of the batch, biased variance) and in eval mode (set running statistics).
"""
import math

import numpy as np
import pytest
import torch

from pcdet.distill.losses import FGMimicLoss, FitNetLoss, LogitKDLoss, PointDistillerLoss

BN_EPS = 1e-3


def fixed(shape, phase=0.0):
    """Deterministic values in [-1.5, 1.5] of mixed sign (no random generator involved)."""
    n = int(np.prod(shape))
    return 1.5 * np.sin(0.7 * np.arange(n) + phase).reshape(shape)


def t32(a):
    return torch.tensor(np.asarray(a), dtype=torch.float32)


def set_adapter(adapter, weight, gamma, beta, running_mean=None, running_var=None):
    """Load fixed values into an adapter's 1x1 conv (out, in) and BatchNorm."""
    weight = np.asarray(weight)
    with torch.no_grad():
        adapter.conv.weight.copy_(t32(weight).view(*weight.shape, 1, 1))
        adapter.bn.weight.copy_(t32(gamma))
        adapter.bn.bias.copy_(t32(beta))
        if running_mean is not None:
            adapter.bn.running_mean.copy_(t32(running_mean))
            adapter.bn.running_var.copy_(t32(running_var))


def batch_norm(z, gamma, beta, train, running_mean=None, running_var=None):
    """BatchNorm of rows ``z`` (n, C): batch statistics (biased variance) in training, else the running ones."""
    if train:
        mean, var = z.mean(axis=0), z.var(axis=0)
    else:
        mean, var = np.asarray(running_mean), np.asarray(running_var)
    return np.asarray(gamma) * (z - mean) / np.sqrt(var + BN_EPS) + np.asarray(beta)


def check(value, reference, literal, rel=1e-5):
    """The float32 loss equals the float64 reference, and the reference the literal written down from it."""
    assert reference == pytest.approx(literal, rel=1e-9, abs=1e-12)
    value = value.detach() if torch.is_tensor(value) else value
    assert float(value) == pytest.approx(reference, rel=rel)


# ---------------------------------------------------------------------------------------------------- FitNet
# 1x1 conv C_s=2 -> C_t=3 + BN2d; L = mean_{b,c,h,w} (A(F_S) - F_T)^2, student map resized bilinearly if needed.
FIT_W = [[0.5, -0.3], [0.2, 0.8], [-0.6, 0.4]]
FIT_GAMMA, FIT_BETA = [1.0, 0.5, 2.0], [0.1, -0.2, 0.0]
FIT_RUNNING = ([0.3, -0.1, 0.2], [0.5, 2.0, 1.5])


def fitnet_reference(s, t, train, upsample_w=False):
    """``s`` (C_s, H, W) student, ``t`` (C_t, H_t, W_t) teacher (batch of one)."""
    c_s, h, w = s.shape
    z = (np.asarray(FIT_W) @ s.reshape(c_s, -1)).T                        # (H*W, C_t)
    a = batch_norm(z, FIT_GAMMA, FIT_BETA, train, *FIT_RUNNING).T.reshape(-1, h, w)
    if upsample_w:  # bilinear W 2 -> 4 (align_corners=False): source x = (j + 0.5) / 2 - 0.5, clamped at 0
        x0, x1 = a[:, :, 0], a[:, :, 1]
        a = np.stack([x0, 0.75 * x0 + 0.25 * x1, 0.25 * x0 + 0.75 * x1, x1], axis=2)
    return float(((a - t) ** 2).mean())


@pytest.mark.parametrize('train, upsample_w, literal', [
    (True, False, 3.4356454892),
    (False, False, 3.8881130366),
    (True, True, 2.5308621138),
])
def test_fitnet_golden(train, upsample_w, literal):
    fit = FitNetLoss({'NAME': 'FitNetLoss'}, 'golden', lambda side, name: 2 if side == 'student' else 3)
    set_adapter(fit.adapter, FIT_W, FIT_GAMMA, FIT_BETA, *FIT_RUNNING)
    fit.train(train)
    s = fixed((2, 2, 2)) if not upsample_w else fixed((2, 1, 2))
    t = fixed((3, 2, 2), phase=1.0) if not upsample_w else fixed((3, 1, 4), phase=1.0)
    value, tb = fit({'spatial_features_2d': t32(s[None])}, {'spatial_features_2d': t32(t[None])}, {})
    assert tb == {}
    check(value, fitnet_reference(s, t, train, upsample_w), literal)


# ------------------------------------------------------------------------------------------------- logit KD
# A=2 anchors, C=2 classes on a 1 x 2 map: cls (1, A*C, 1, 2), box (1, A*7, 1, 2); channel of anchor a,
# class/code c is a*C + c / a*7 + c (OpenPCDet's anchor order).
KD_A, KD_C = 2, 2
KD_CLS_T = fixed((KD_A * KD_C, 1, 2), phase=0.3) * 2
KD_CLS_S = fixed((KD_A * KD_C, 1, 2), phase=2.0) * 2
KD_BOX_T = fixed((KD_A * 7, 1, 2), phase=0.9)
# residual differences mixing the two smooth-L1 branches (|d| < 1/9 and above) and heading offsets of 2.0 / 0.05
KD_DELTA = np.array([0.05, -0.8, 1.5, -0.02, 0.3, -0.1, 2.0, 0.6, 0.08, -1.2, 0.0, 0.5, -0.04, 0.05])
KD_BOX_S = KD_BOX_T + np.stack([KD_DELTA, KD_DELTA[::-1]], axis=1).reshape(KD_A * 7, 1, 2)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def smooth_l1(d, beta=1.0 / 9.0):
    return np.where(np.abs(d) < beta, 0.5 * d * d / beta, np.abs(d) - 0.5 * beta)


def logit_kd_reference(temp, mode, box_mask, cls_weight, box_weight):
    """(total, cls, box) from the LogitKDLoss docstring, anchor by anchor."""
    p_t = sigmoid(KD_CLS_T / temp)
    q = sigmoid(KD_CLS_S / temp)
    if mode == 'bce':
        cls = float((-(p_t * np.log(q) + (1 - p_t) * np.log(1 - q))).mean()) * temp ** 2
    else:
        cls = float(((q - p_t) ** 2).mean())
    per_anchor, score = [], []
    for w in range(2):
        for a in range(KD_A):
            d = KD_BOX_S[a * 7:(a + 1) * 7, 0, w] - KD_BOX_T[a * 7:(a + 1) * 7, 0, w]
            d[6] = math.sin(d[6])
            per_anchor.append(smooth_l1(d).sum())
            score.append(max(sigmoid(KD_CLS_T[a * KD_C + c, 0, w]) for c in range(KD_C)))   # at T = 1
    per_anchor, score = np.array(per_anchor), np.array(score)
    box = float((per_anchor * score).sum() / score.sum()) if box_mask == 'teacher_score' else float(per_anchor.mean())
    return cls_weight * cls + box_weight * box, cls, box


@pytest.mark.parametrize('opts, literals', [
    ({'TEMPERATURE': 2.0}, (6.0149907114, 3.2902150715, 2.7247756399)),
    ({'CLS_MODE': 'mse', 'BOX_MASK': 'all', 'CLS_WEIGHT': 0.5, 'BOX_WEIGHT': 2.0},
     (6.1860154708, 0.2652875629, 3.0266858447)),
])
def test_logit_kd_golden(opts, literals):
    kd = LogitKDLoss(dict({'NAME': 'LogitKDLoss'}, **opts), 'golden')
    names = ('module:dense_head.conv_cls', 'module:dense_head.conv_box')
    s = dict(zip(names, (t32(KD_CLS_S[None]), t32(KD_BOX_S[None]))))
    t = dict(zip(names, (t32(KD_CLS_T[None]), t32(KD_BOX_T[None]))))
    value, tb = kd(s, t, {})
    o = kd.opts
    reference = logit_kd_reference(o['TEMPERATURE'], o['CLS_MODE'], o['BOX_MASK'], o['CLS_WEIGHT'], o['BOX_WEIGHT'])
    for got, ref, lit in zip((value, tb['cls'], tb['box']), reference, literals):
        check(got, ref, lit)


# ------------------------------------------------------------------------------------------------- FG mimic
# 4 x 4 BEV map over x, y in [0, 4] m: 1 m cells, centres 0.5 .. 3.5; rows are y, columns x.
FG_RANGE = [0.0, 0.0, -1.0, 4.0, 4.0, 1.0]
FG_GT = [[1.5, 2.0, 0.0, 2.4, 0.6, 1.0, 0.0, 1.0],           # x [0.3, 2.7], y [1.7, 2.3]: no cell centre inside
         [3.5, 0.5, 0.0, 1.6, 0.4, 1.0, math.pi / 2, 2.0],   # turned: x [3.3, 3.7], y [-0.3, 1.3]
         [0.0] * 8]                                           # padding (zero size): ignored
FG_TEACHER_BOXES = [[3.5, 3.5, 0.0, 0.8, 0.8, 1.0, 0.0],     # score sigmoid(2) = 0.88 > 0.3: kept
                    [0.5, 0.5, 0.0, 3.0, 3.0, 1.0, 0.0]]     # score sigmoid(-2) = 0.12: dropped
FG_TEACHER_LOGITS = [[2.0, -1.0], [-2.0, -3.0]]
# masks enumerated by hand, (row y, column x):
FG_MASK_GT = [(2, 1), (0, 3)]      # ENLARGE 0: only the cells under the box centres
# ENLARGE 0.3: box 1 x [0, 3], y [1.4, 2.6] -> rows 1-2, cols 0-2; box 2 x [3.0, 4.0], y [-0.6, 1.6] -> rows 0-1,
# col 3; teacher box x, y [2.8, 4.2] -> (3, 3)
FG_MASK_BOTH = [(r, c) for r in (1, 2) for c in (0, 1, 2)] + [(0, 3), (1, 3), (3, 3)]
FG_W = [[0.9, -0.4], [0.3, 0.7]]
FG_GAMMA, FG_BETA = [1.5, 0.8], [0.2, -0.1]
FG_RUNNING = ([0.1, -0.3], [0.7, 1.4])


def fg_reference(s, t, cells, train, bg_weight):
    """L = sum m * mean_c (A(F_S) - F_T)^2 / sum m (+ BG_WEIGHT * the same over the background)."""
    z = (np.asarray(FG_W) @ s.reshape(2, -1)).T
    a = batch_norm(z, FG_GAMMA, FG_BETA, train, *FG_RUNNING).T.reshape(2, 4, 4)
    per_cell = ((a - t) ** 2).mean(axis=0)
    m = np.zeros((4, 4))
    for r, c in cells:
        m[r, c] = 1.0
    loss = (per_cell * m).sum() / m.sum()
    if bg_weight:
        loss += bg_weight * (per_cell * (1 - m)).sum() / (1 - m).sum()
    return float(loss), m


@pytest.mark.parametrize('opts, cells, train, literal', [
    ({}, FG_MASK_GT, True, 0.1583495035),
    ({'MASK_SOURCE': 'both', 'ENLARGE': 0.3, 'BG_WEIGHT': 0.5}, FG_MASK_BOTH, False, 0.5057250965),
])
def test_fg_mimic_golden(opts, cells, train, literal):
    fg = FGMimicLoss(dict({'NAME': 'FGMimicLoss'}, **opts), 'golden', lambda side, name: 2,
                     {'point_cloud_range': FG_RANGE})
    set_adapter(fg.adapter, FG_W, FG_GAMMA, FG_BETA, *FG_RUNNING)
    fg.train(train)
    s, t = fixed((2, 4, 4)), fixed((2, 4, 4), phase=0.5)
    teacher = {'spatial_features_2d': t32(t[None]), 'batch_box_preds': t32([FG_TEACHER_BOXES]),
               'batch_cls_preds': t32([FG_TEACHER_LOGITS])}
    value, tb = fg({'spatial_features_2d': t32(s[None])}, teacher, {'gt_boxes': t32([FG_GT])})
    reference, mask = fg_reference(s, t, cells, train, opts.get('BG_WEIGHT', 0.0))
    assert tb == {'fg_cells': mask.sum()}
    check(value, reference, literal)


# ------------------------------------------------------------------------------------------- PointDistiller
# Two samples of pillars: 4 in sample 0, 2 in sample 1. Teacher features are 1-D so the k-NN (squared distance
# in teacher feature space, within the sample) can be read off; scores are the points per pillar.
PD_T = np.array([[0.0], [1.0], [3.0], [7.0], [2.0], [-1.0]])
PD_S = np.array([[0.5, -1.0], [1.5, 0.2], [-0.3, 0.8], [2.0, 2.0], [0.1, -0.4], [-1.2, 0.6]])
PD_COORDS = [[0, 0, 1, 1], [0, 0, 1, 2], [0, 0, 2, 1], [0, 0, 3, 3], [1, 0, 0, 0], [1, 0, 2, 2]]
PD_NPTS = [5, 3, 4, 1, 2, 6]
PD_TAU = 2.0
# NUM_NODES 3, K 2, by hand. Sample 0 keeps scores 5, 4, 3 = nodes 0, 2, 1 (node 3, one point, is dropped):
#   node 0 (t 0): distances 0, 1, 9, 49 -> {0, 1}; node 2 (t 3): 9, 4, 0, 16 -> {2, 1}; node 1 (t 1): -> {1, 0}.
# Sample 1 (2 nodes) keeps both: node 5 (score 6) -> {5, 4}, node 4 (score 2) -> {4, 5}.
PD_GRAPH = [({0: [0, 1], 2: [2, 1], 1: [1, 0]}, [5, 4, 3]), ({5: [5, 4], 4: [4, 5]}, [6, 2])]
# weights N * softmax(score / TAU) per sample, written out
PD_WEIGHTS = {0: 3 * math.exp(2.5) / (math.exp(2.5) + math.exp(2.0) + math.exp(1.5)),
              2: 3 * math.exp(2.0) / (math.exp(2.5) + math.exp(2.0) + math.exp(1.5)),
              1: 3 * math.exp(1.5) / (math.exp(2.5) + math.exp(2.0) + math.exp(1.5)),
              5: 2 * math.exp(3.0) / (math.exp(3.0) + math.exp(1.0)),
              4: 2 * math.exp(1.0) / (math.exp(3.0) + math.exp(1.0))}
# graph convs: student 2C = 4 -> WIDTH 2, teacher 2C = 2 -> 2
PD_SIDES = {
    'student': dict(feats=PD_S, weight=[[0.2, -0.5, 0.3, 0.1], [-0.4, 0.6, 0.2, -0.3]], gamma=[1.0, 0.8],
                    beta=[0.1, -0.2], running=([0.1, -0.2], [0.5, 2.0])),
    'teacher': dict(feats=PD_T, weight=[[0.7, -0.2], [0.3, 0.5]], gamma=[1.2, 0.9], beta=[0.0, 0.3],
                    running=([0.4, 0.1], [1.5, 0.6])),
}


def pd_edges(feats, edge, graphs=PD_GRAPH):
    """Edge features of every (centre, neighbour) pair, (sample, centre, k) order: concat(x_j or x_j - x_i, x_i)."""
    rows = []
    for graph, _ in graphs:
        for i, nbrs in graph.items():
            for j in nbrs:
                first = feats[j] - feats[i] if edge == 'diff' else feats[j]
                rows.append(np.concatenate([first, feats[i]]))
    return np.array(rows)


def pd_reference(pool, edge, train, graphs=PD_GRAPH, weights=PD_WEIGHTS):
    """Graph conv (1x1 conv + BN over all N*K edges + ReLU) per side, then per sample the importance-weighted MSE
    (``POOL max``: of the max over the K neighbours), averaged over the samples. Returns (loss, edge pre-activations
    per side) for the running-statistics check."""
    y, z = {}, {}
    for side, p in PD_SIDES.items():
        z[side] = pd_edges(p['feats'], edge, graphs) @ np.asarray(p['weight']).T    # (N*K, 2)
        y[side] = np.maximum(batch_norm(z[side], p['gamma'], p['beta'], train, *p['running']), 0.0).reshape(-1, 2, 2)
    per_sample, node = [], 0
    for graph, _ in graphs:
        terms = []
        for i in graph:
            ys, yt = y['student'][node], y['teacher'][node]                              # (K, C')
            diff = (ys.max(axis=0) - yt.max(axis=0)) ** 2 if pool == 'max' else (ys - yt) ** 2
            terms.append(weights[i] * diff.mean())
            node += 1
        per_sample.append(np.mean(terms))
    return float(np.mean(per_sample)), z


def make_pointdistiller(pool, edge, **extra):
    loss = PointDistillerLoss({'NAME': 'PointDistillerLoss', 'NUM_NODES': 3, 'K': 2, 'TAU': PD_TAU, 'WIDTH': 2,
                               'POOL': pool, 'EDGE': edge, **extra}, 'golden',
                              lambda side, name: 2 if side == 'student' else 1)
    for side, p in PD_SIDES.items():
        set_adapter(getattr(loss, f'{side}_gcn'), p['weight'], p['gamma'], p['beta'], *p['running'])
    return loss


def pd_batch():
    return {'voxel_coords': torch.tensor(PD_COORDS, dtype=torch.int32),
            'voxel_num_points': torch.tensor(PD_NPTS, dtype=torch.int32)}


def test_pointdistiller_graph_and_weights_by_hand():
    loss = make_pointdistiller('none', 'concat')
    batch = pd_batch()
    coords = batch['voxel_coords'].long()
    center, nbr, weights = loss.build_graph(t32(PD_T), coords[:, 0], coords[:, 1:].float(),
                                            batch['voxel_num_points'].float())
    assert center.tolist() == [0, 2, 1, 5, 4]                 # top NUM_NODES per sample, by score
    expected = {i: nbrs for graph, _ in PD_GRAPH for i, nbrs in graph.items()}
    assert {i: sorted(row) for i, row in zip(center.tolist(), nbr.tolist())} == {i: sorted(v)
                                                                               for i, v in expected.items()}
    assert weights.tolist() == pytest.approx([PD_WEIGHTS[i] for i in center.tolist()], rel=1e-6)
    assert [PD_WEIGHTS[i] for i in (0, 2, 1, 5, 4)] == pytest.approx(
        [1.5194411732, 0.9215876572, 0.5589711697, 1.7615941560, 0.2384058440], rel=1e-9)


@pytest.mark.parametrize('pool, edge, train, literal', [
    ('none', 'concat', True, 0.8814900888),
    ('max', 'concat', True, 1.3103606139),
    ('none', 'diff', False, 0.5436793589),
    ('max', 'diff', False, 0.9011954431),
])
def test_pointdistiller_golden(pool, edge, train, literal):
    loss = make_pointdistiller(pool, edge)
    loss.train(train)
    value, tb = loss({'pillar_features': t32(PD_S)}, {'pillar_features': t32(PD_T)}, pd_batch())
    assert tb == {}
    reference, z = pd_reference(pool, edge, train)
    check(value, reference, literal)
    for side in PD_SIDES:  # BN running statistics: updated from the N*K = 10 edges in training (unbiased var)
        bn = getattr(loss, f'{side}_gcn').bn
        mean, var = PD_SIDES[side]['running']
        if train:
            mean = 0.99 * np.asarray(mean) + 0.01 * z[side].mean(axis=0)
            var = 0.99 * np.asarray(var) + 0.01 * z[side].var(axis=0, ddof=1)
        assert bn.running_mean.tolist() == pytest.approx(list(mean), rel=1e-5)
        assert bn.running_var.tolist() == pytest.approx(list(var), rel=1e-5)
        assert int(bn.num_batches_tracked) == int(train)


# PointRCNN's point features: the same six nodes as points (``point_coords`` (N, 4) [b, x, y, z] in metres),
# importance = the teacher's max activation over channels, i.e. its one feature here. By hand, NUM_NODES 3, K 2:
# sample 0 scores 0, 1, 3, 7 -> nodes 3, 2, 1; node 3 (t 7): distances 49, 36, 16, 0 -> {3, 2}; node 2 (t 3): -> {2, 1};
# node 1 (t 1): 1, 0, 4, 36 -> {1, 0}. Sample 1 scores 2, -1 -> nodes 4, 5: {4, 5} and {5, 4}.
PT_GRAPH = [({3: [3, 2], 2: [2, 1], 1: [1, 0]}, [7, 3, 1]), ({4: [4, 5], 5: [5, 4]}, [2, -1])]
PT_WEIGHTS = {3: 3 * math.exp(3.5) / (math.exp(3.5) + math.exp(1.5) + math.exp(0.5)),
              2: 3 * math.exp(1.5) / (math.exp(3.5) + math.exp(1.5) + math.exp(0.5)),
              1: 3 * math.exp(0.5) / (math.exp(3.5) + math.exp(1.5) + math.exp(0.5)),
              4: 2 * math.exp(1.0) / (math.exp(1.0) + math.exp(-0.5)),
              5: 2 * math.exp(-0.5) / (math.exp(1.0) + math.exp(-0.5))}
PT_COORDS = [[0, 10.2, -3.1, -0.5], [0, 11.7, -2.9, -0.4], [0, 4.05, 6.6, 0.3], [0, 30.5, 1.25, -1.2],
             [1, 8.0, 0.5, -0.7], [1, 9.9, -0.75, 0.1]]


@pytest.mark.parametrize('train, literal', [(True, 1.9101899992), (False, 11.3460274273)])
def test_pointdistiller_on_point_features_golden(train, literal):
    """The PointRCNN configs' settings (point_features / point_coords, max-activation importance, max-pool over
    the K neighbours, reweighting applied) on constructed points, against the hand-built graph and weights."""
    loss = make_pointdistiller('max', 'concat', STUDENT_FEATURE='point_features', TEACHER_FEATURE='point_features',
                               COORDS_KEY='point_coords', SCORE='max_activation')
    loss.train(train)
    batch = {'point_coords': torch.tensor(PT_COORDS, dtype=torch.float32)}
    coords = batch['point_coords']
    center, nbr, weights = loss.build_graph(t32(PD_T), coords[:, 0].long(), coords[:, 1:], t32(PD_T).max(dim=1).values)
    expected = {i: sorted(v) for graph, _ in PT_GRAPH for i, v in graph.items()}
    assert center.tolist() == [3, 2, 1, 4, 5]
    assert {i: sorted(row) for i, row in zip(center.tolist(), nbr.tolist())} == expected
    assert weights.tolist() == pytest.approx([PT_WEIGHTS[i] for i in center.tolist()], rel=1e-6)
    value, tb = loss({'point_features': t32(PD_S)}, {'point_features': t32(PD_T)}, batch)
    assert tb == {}
    reference, _ = pd_reference('max', 'concat', train, PT_GRAPH, PT_WEIGHTS)
    check(value, reference, literal)


# ----------------------------------------------------------------------- baselines on a point detector's rows
# PointRCNN: point features (V, C) and point-head outputs (V, C_cls) / (V, 8), rows = the same sampled points.
PT_FS, PT_FT = fixed((4, 2), phase=0.4), fixed((4, 3), phase=1.3)


@pytest.mark.parametrize('train, literal', [(True, 2.9477757085), (False, 1.8170448960)])
def test_fitnet_on_point_features_golden(train, literal):
    fit = FitNetLoss({'NAME': 'FitNetLoss', 'STUDENT_FEATURE': 'point_features', 'TEACHER_FEATURE': 'point_features'},
                     'golden', lambda side, name: 2 if side == 'student' else 3)
    set_adapter(fit.adapter, FIT_W, FIT_GAMMA, FIT_BETA, *FIT_RUNNING)
    fit.train(train)
    value, tb = fit({'point_features': t32(PT_FS)}, {'point_features': t32(PT_FT)}, {})
    reference = float(((batch_norm(PT_FS @ np.asarray(FIT_W).T, FIT_GAMMA, FIT_BETA, train, *FIT_RUNNING)
                        - PT_FT) ** 2).mean())
    assert tb == {}
    check(value, reference, literal)


PH_CLS_T, PH_CLS_S = fixed((3, 2), phase=0.2) * 2, fixed((3, 2), phase=1.7) * 2
PH_BOX_T = fixed((3, 8), phase=0.5)
PH_BOX_S = PH_BOX_T + np.array([[0.05, -0.8, 1.5, -0.02, 0.3, -0.1, 0.6, 0.08]] * 3) * np.array([[1], [-0.5], [2]])


def test_logit_kd_on_a_point_head_golden():
    """BCE soft targets over (V, C) and smooth-L1 of the (V, 8) residual difference (no angle channel:
    HEADING_INDEX -1), each point weighted by the teacher's max class probability."""
    names = ('module:point_head.cls_layers', 'module:point_head.box_layers')
    kd = LogitKDLoss({'NAME': 'LogitKDLoss', 'CLS_FEATURE': names[0], 'BOX_FEATURE': names[1], 'CODE_SIZE': 8,
                      'HEADING_INDEX': -1}, 'golden')
    value, tb = kd(dict(zip(names, (t32(PH_CLS_S), t32(PH_BOX_S)))),
                   dict(zip(names, (t32(PH_CLS_T), t32(PH_BOX_T)))), {})
    p_t, q = sigmoid(PH_CLS_T), sigmoid(PH_CLS_S)
    cls = float((-(p_t * np.log(q) + (1 - p_t) * np.log(1 - q))).mean())
    per_point = smooth_l1(PH_BOX_S - PH_BOX_T).sum(axis=1)
    score = p_t.max(axis=1)
    box = float((per_point * score).sum() / score.sum())
    check(value, cls + box, 4.2900520601)
    assert tb['cls'] == pytest.approx(cls, rel=1e-5) and tb['box'] == pytest.approx(box, rel=1e-5)
