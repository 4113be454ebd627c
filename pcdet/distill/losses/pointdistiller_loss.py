"""PointDistiller (Zhang et al., CVPR 2023): local graph distillation with importance reweighting.

Per training step, for one distilled feature recorded identically indexed on both sides:
1. cut it into sets: one per sample (``SCOPE: sample``, default) or one for the whole batch (``SCOPE: batch``,
   the released PointPillars code, which lets samples compete for the N slots and share neighbours);
2. score every node: points per voxel (``SCORE: num_points``, from ``voxel_num_points``) or the max teacher
   activation over channels (``SCORE: max_activation``); keep the top ``NUM_NODES`` per set (ties by index);
3. k-NN of each kept node among all nodes of its set, in teacher feature space (``GRAPH_SPACE:
   teacher_feature``) or in voxel-grid index space (``coords``), with ``pcdet.ops.knn`` (tiled, never the full
   distance matrix); the node is its own neighbour;
4. one ``GraphConvAdapter`` per side maps the edges (``EDGE: concat | diff``) to ``WIDTH`` channels; optional
   max-pool over the K neighbours (``POOL: max``);
5. weighted MSE, node weights ``w = n * softmax(score / TAU)`` per set (mean 1; ``REWEIGHT: False`` -> 1); with
   ``SCOPE: sample`` the loss is the mean over samples of each sample's weighted MSE.

Both graph convs are trained with the student (``TEACHER_GCN: trainable``, paper and released code), so the target
moves too: nothing but BN stops the two encoders from agreeing on projections that are easy for the student.
``TEACHER_GCN: frozen`` keeps the teacher-side conv at its random init (BN still normalises with batch
statistics), which rules that out. Measurements behind this: ``docs/INVESTIGATIONS.md``.

Feature layouts accepted (both sides must have the same layout and node count):
- (V, C) voxel/pillar features (``pillar_features``) with ``voxel_coords`` (V, 4) [b, z, y, x] in the batch;
- (B, C, H, W) BEV maps (``spatial_features_2d``, ``module:backbone_2d.blocks.0``); nodes are the H*W cells;
- sparse tensors with ``.features`` (V, C) and ``.indices`` (V, 4) [b, z, y, x] (``encoded_spconv_tensor``).

TAU and integer scores: with ``SCORE: num_points`` and TAU = 0.01 (paper / code) the softmax is a hard selection
(a pillar with one point fewer than the maximum gets weight ~e^-100). ``SCORE_NORM: max`` divides the scores of
each set by their maximum first, so TAU then acts on a [0, 1] scale; the default ``none`` keeps the paper's form.
"""
import logging

import torch

from .base import DistillLoss, check_choice
from ..adapters import EDGE_MODES, GraphConvAdapter
from ..graph_kernels import edge_relu_mse


def importance_weights(scores, tau, norm='none'):
    """Reweighting of the selected nodes of one set.

    Args:
        scores: (N,) float, importance of the selected nodes.
        tau: softmax temperature (> 0).
        norm: 'none' | 'max' (divide by the max |score| first).

    Returns:
        (N,) float, ``N * softmax(scores / tau)``: mean exactly 1, same order as ``scores``.
    """
    scores = scores.float()
    if norm == 'max':
        scores = scores / scores.abs().max().clamp(min=1e-12)
    return torch.softmax(scores / tau, dim=0) * scores.numel()


def top_nodes(scores, num):
    """Indices of the ``num`` largest scores, descending, ties broken by the lower index (stable sort)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:num]


class PointDistillerLoss(DistillLoss):
    DEFAULT_WEIGHT = 2.0
    DEFAULTS = {
        'STUDENT_FEATURE': 'pillar_features',
        'TEACHER_FEATURE': 'pillar_features',
        'NUM_NODES': 6000,
        'K': 128,
        'TAU': 0.01,
        'EDGE': 'concat',
        'GRAPH_SPACE': 'teacher_feature',
        'POOL': 'none',
        'WIDTH': None,            # None -> student channels
        'SCORE': None,            # None -> num_points for (V, C) features, else max_activation
        'SCORE_NORM': 'none',
        'SCOPE': 'sample',
        'REWEIGHT': True,
        'TEACHER_GCN': 'trainable',  # 'frozen': the teacher-side graph conv keeps its random init (see docstring)
        'COORDS_KEY': 'voxel_coords',
        'NUM_POINTS_KEY': 'voxel_num_points',
        'STUDENT_CHANNELS': None,  # None -> inferred from the model
        'TEACHER_CHANNELS': None,
    }

    def __init__(self, loss_cfg, where, channels_of, context=None):
        super().__init__(loss_cfg, where)
        o = self.opts
        check_choice(o, 'EDGE', EDGE_MODES, where)
        check_choice(o, 'GRAPH_SPACE', ('teacher_feature', 'coords'), where)
        check_choice(o, 'POOL', ('none', 'max'), where)
        check_choice(o, 'SCORE', (None, 'num_points', 'max_activation'), where)
        check_choice(o, 'SCORE_NORM', ('none', 'max'), where)
        check_choice(o, 'SCOPE', ('sample', 'batch'), where)
        check_choice(o, 'TEACHER_GCN', ('trainable', 'frozen'), where)
        for key in ('NUM_NODES', 'K'):
            if not isinstance(o[key], int) or o[key] < 1:
                raise ValueError(f'{where}: {key} must be a positive integer, got {o[key]!r}')
        if not float(o['TAU']) > 0:
            raise ValueError(f'{where}: TAU must be > 0, got {o["TAU"]!r}')
        self.student_features = [o['STUDENT_FEATURE']]
        self.teacher_features = [o['TEACHER_FEATURE']]
        c_s, c_t = self.resolve_channels(channels_of)
        o['WIDTH'] = int(o['WIDTH'] or c_s)
        self.student_gcn = GraphConvAdapter(c_s, o['WIDTH'], o['EDGE'])
        self.teacher_gcn = GraphConvAdapter(c_t, o['WIDTH'], o['EDGE'])
        if o['TEACHER_GCN'] == 'frozen':
            self.teacher_gcn.requires_grad_(False)   # left out of the optimiser (it takes requires_grad params)
        self._reported_caps = set()   # (key, value) caps already logged
        self.last_effective = {}      # {key: value used} where the last forward capped a configured value

    # ----------------------------------------------------------------------------------------------- layout
    def _flatten(self, feat, batch_dict, side):
        """Return (nodes (V, C), batch index (V,) int64, coords (V, D) float, is_voxel) for any layout."""
        if hasattr(feat, 'features') and hasattr(feat, 'indices'):       # spconv SparseConvTensor
            idx = feat.indices.long()
            return feat.features, idx[:, 0], idx[:, 1:].float(), False
        if torch.is_tensor(feat) and feat.dim() == 2:
            coords = self.batch_value(batch_dict, self.opts['COORDS_KEY'])
            if coords.shape[0] != feat.shape[0]:
                raise ValueError(f'{self.where}: {side} feature has {feat.shape[0]} rows but '
                                 f'{self.opts["COORDS_KEY"]} has {coords.shape[0]}')
            coords = coords.long()
            return feat, coords[:, 0], coords[:, 1:].float(), True
        if torch.is_tensor(feat) and feat.dim() == 4:
            b, c, h, w = feat.shape
            nodes = feat.permute(0, 2, 3, 1).reshape(b * h * w, c)
            ys, xs = torch.meshgrid(torch.arange(h, device=feat.device), torch.arange(w, device=feat.device),
                                    indexing='ij')
            grid = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1).float().repeat(b, 1)
            bidx = torch.arange(b, device=feat.device).repeat_interleave(h * w)
            return nodes, bidx, grid, False
        shape = tuple(feat.shape) if torch.is_tensor(feat) else type(feat).__name__
        raise ValueError(f'{self.where}: {side} feature must be (V, C), (B, C, H, W) or a sparse tensor, got {shape}')

    # ------------------------------------------------------------------------------------------------- graph
    def build_graph(self, t_nodes, bidx, coords, scores):
        """Select nodes and neighbours per set.

        Args:
            t_nodes: (V, C_t) teacher node features (detached).
            bidx: (V,) int64 sample index of each node.
            coords: (V, D) float node coordinates (grid index units).
            scores: (V,) float importance.

        Returns:
            center (N,) int64, neighbours (N, K) int64 (rows of the flattened nodes), weights (N,) float.
        """
        from pcdet.ops.knn.knn_utils import knn

        o = self.opts
        if o['SCOPE'] == 'batch':
            sets = [torch.arange(t_nodes.shape[0], device=t_nodes.device)]
        else:
            sets = [torch.nonzero(bidx == b, as_tuple=False).view(-1) for b in torch.unique(bidx).tolist()]
        sets = [s for s in sets if s.numel() > 0]
        k = min(o['K'], min(int(s.numel()) for s in sets))   # one K for all sets so edges stack
        if k < o['K']:
            self._report_cap('K', o['K'], k, 'nodes in the smallest graph')
        space = t_nodes if o['GRAPH_SPACE'] == 'teacher_feature' else coords
        centers, neighbours, weights = [], [], []
        for rows in sets:
            sel = top_nodes(scores[rows], min(o['NUM_NODES'], rows.numel()))
            ref = space.index_select(0, rows).float().contiguous()
            # neighbour order does not matter to the graph conv (sums / max over K): skip the sort
            nbr, _ = knn(ref[sel].unsqueeze(0), ref.unsqueeze(0), k, return_dist=False, sorted=False)
            nbr = nbr[0]
            # The query must be one of its own neighbours; exact duplicates of lower index can push it out (then
            # all K neighbours are at distance 0 and replacing any of them keeps the set a valid K nearest).
            missing = ~(nbr == sel.unsqueeze(1)).any(dim=1)
            if bool(missing.any()):
                nbr[missing, -1] = sel[missing]
            centers.append(rows[sel])
            neighbours.append(rows[nbr])
            if o['REWEIGHT']:
                weights.append(importance_weights(scores[rows][sel], float(o['TAU']), o['SCORE_NORM']))
            else:
                weights.append(torch.ones(sel.numel(), device=t_nodes.device))
        return torch.cat(centers), torch.cat(neighbours), torch.cat(weights)

    def score_mode(self, is_voxel):
        """The importance rule in use: ``SCORE``, else ``num_points`` for voxel features, ``max_activation``
        otherwise."""
        return self.opts['SCORE'] or ('num_points' if is_voxel else 'max_activation')

    def node_scores(self, t_nodes, is_voxel, batch_dict):
        """(V,) float importance of every flattened teacher node (``score_mode``): points per voxel or the
        teacher's max activation over channels."""
        o = self.opts
        if self.score_mode(is_voxel) == 'num_points':
            scores = self.batch_value(batch_dict, o['NUM_POINTS_KEY']).float()
            if not is_voxel or scores.shape[0] != t_nodes.shape[0]:
                raise ValueError(f'{self.where}: SCORE num_points needs (V, C) voxel features with one '
                                 f'{o["NUM_POINTS_KEY"]} entry per voxel; use SCORE max_activation for this feature')
            return scores
        return t_nodes.max(dim=1).values

    def _report_cap(self, key, configured, used, reason):
        """Log (once per key and value) that the configured ``key`` was capped to ``used``."""
        if (key, used) not in self._reported_caps:
            self._reported_caps.add((key, used))
            logging.getLogger('pcdet').warning('%s: %s = %d capped to %d (%s) in this batch; the loss uses %d',
                                               self.where, key, configured, used, reason, used)
        self.last_effective[key] = used

    def forward(self, student_feats, teacher_feats, batch_dict):
        o = self.opts
        self.last_effective = {}
        s_nodes, s_bidx, _, _ = self._flatten(self.feature(student_feats, o['STUDENT_FEATURE'], 'student'),
                                              batch_dict, 'student')
        t_nodes, bidx, coords, is_voxel = self._flatten(
            self.feature(teacher_feats, o['TEACHER_FEATURE'], 'teacher'), batch_dict, 'teacher')
        if s_nodes.shape[0] != t_nodes.shape[0] or not torch.equal(s_bidx, bidx):
            raise ValueError(f'{self.where}: student and teacher features are not indexed alike '
                             f'({s_nodes.shape[0]} vs {t_nodes.shape[0]} nodes); PointDistiller needs the same '
                             'voxelisation / BEV grid on both sides')
        t_nodes = t_nodes.detach()
        scores = self.node_scores(t_nodes, is_voxel, batch_dict)
        with torch.no_grad():
            center, neighbours, weights = self.build_graph(t_nodes, bidx, coords, scores)
            if o['SCOPE'] == 'sample':
                # every sample weighs the same whatever its node count: the loss is a mean over samples, so
                # DDP's average over ranks equals one process on the whole batch
                _, inv, counts = torch.unique(bidx.index_select(0, center), return_inverse=True, return_counts=True)
                weights = weights * (center.numel() / (counts.numel() * counts.index_select(0, inv).to(weights.dtype)))
        if o['POOL'] == 'max':
            g_t = self.teacher_gcn(t_nodes, center, neighbours).amax(dim=1)   # (N, C')
            g_s = self.student_gcn(s_nodes, center, neighbours).amax(dim=1)
            loss = (weights * (g_s - g_t).pow(2).mean(dim=1)).mean()
        else:
            # weighted MSE over all N x K edge embeddings without storing them (graph_kernels)
            a_t, b_t = self.teacher_gcn.node_terms(t_nodes, center, neighbours)
            a_s, b_s = self.student_gcn.node_terms(s_nodes, center, neighbours)
            loss = edge_relu_mse(a_s, b_s, a_t, b_t, neighbours, weights)
        # the values actually used where the config asked for more (K capped to a graph's node count)
        return loss, {f'effective_{key}': value for key, value in self.last_effective.items()}
