"""Trainable adapters of the distillation losses (owned by the Distiller, never by the student).

- ``GraphConvAdapter``: PointDistiller's per-side graph convolution, a 1x1 Conv2d + BatchNorm2d + ReLU applied to
  edge features ``e_ij = concat(x_j, x_i)`` ('concat', the released code) or ``concat(x_j - x_i, x_i)`` ('diff').
- ``ConvAdapter``: 1x1 Conv2d + BatchNorm2d mapping student BEV channels to teacher channels (FitNet / FG).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from pcdet.utils import dist_utils

EDGE_MODES = ('concat', 'diff')


class GraphConvAdapter(nn.Module):
    """1x1 Conv2d(2C -> C') + BN2d + ReLU over the edges of a k-NN graph.

    The convolution is linear, so ``W [x_j; x_i] = W_j x_j + W_i x_i``: ``forward`` projects every node once
    and gathers the projections, instead of materialising the (2C, N, K) edge tensor (``forward_dense`` is that
    literal form, kept as the reference the tests compare against). For 'diff', ``W_j (x_j - x_i) + W_i x_i
    = W_j x_j + (W_i - W_j) x_i``. Parameter names (``conv.weight``, ``bn.*``) are those of the literal module.
    """

    def __init__(self, in_channels, out_channels, edge='concat'):
        super().__init__()
        if edge not in EDGE_MODES:
            raise ValueError(f'GraphConvAdapter: edge={edge!r} is not one of {list(EDGE_MODES)}')
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.edge = edge
        self.conv = nn.Conv2d(2 * self.in_channels, self.out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(self.out_channels, eps=1e-3, momentum=0.01)

    def forward(self, feats, center, neighbours):
        """Graph embedding of the selected nodes.

        Args:
            feats: (M, C) float, node features of all candidate nodes.
            center: (N,) int64, row of each selected node in ``feats``.
            neighbours: (N, K) int64, rows in ``feats`` of the K neighbours of each selected node.

        Returns:
            (N, K, C') float: ReLU(BN(conv(e_ij))) for every edge, equal to ``forward_dense`` on the explicit
            edges (BN in training mode uses the statistics of all N*K edges and updates the running ones).
        """
        node_a, node_b = self.node_terms(feats, center, neighbours)
        n, k = neighbours.shape
        return F.relu(node_a.index_select(0, neighbours.reshape(-1)).view(n, k, -1) + node_b.unsqueeze(1))

    def node_terms(self, feats, center, neighbours):
        """Node terms (a (M, C'), b (N, C')) with ``forward(...)[i, k] = relu(a[neighbours[i, k]] + b[i])``.

        The edge pre-activation is x_ij = p_j + q_i (p = W_j feats, q = W_i feats[center]); its BN statistics
        follow from node sums (mean = sum_j cnt_j p_j / NK + mean_i q_i; the variance also needs
        sum_i q_i . sum_{j in N(i)} p_j), and BN's affine map folds into p and q. Updates the BN running
        statistics in training mode, as ``nn.BatchNorm2d`` does.
        """

        if feats.dim() != 2 or feats.shape[1] != self.in_channels:
            raise ValueError(f'GraphConvAdapter: expected feats (M, {self.in_channels}), got {tuple(feats.shape)}')
        weight = self.conv.weight[:, :, 0, 0]
        w_j, w_i = weight[:, :self.in_channels], weight[:, self.in_channels:]
        if self.edge == 'diff':
            w_i = w_i - w_j
        proj_j = feats @ w_j.t()                           # (M, C') every candidate projected once
        proj_i = feats.index_select(0, center) @ w_i.t()   # (N, C')
        bn = self.bn
        if bn.training or not bn.track_running_stats:
            # --sync_bn under DDP: the statistics of the edges of every rank (all-reduced sums)
            reduce = dist_utils.all_reduce_sum if dist_utils.bn_stats_synced(bn) else (lambda t: t)
            a_c, b_c, var = self._edge_stats(proj_j, proj_i, neighbours, reduce)
        else:
            var = bn.running_var
            a_c, b_c = proj_j, proj_i - bn.running_mean
        scale = torch.rsqrt(var + bn.eps)
        if bn.affine:
            scale = scale * bn.weight
        return a_c * scale, b_c * scale + (bn.bias if bn.affine else 0.0)

    def _edge_stats(self, proj_j, proj_i, neighbours, reduce):
        """Centred node terms (a_c (M, C'), b_c (N, C')) and the biased variance (C',) of the edge
        pre-activations x_ij = p_j + q_i, from node sums (x_ij - mean = a_c[j] + b_c[i]).

        ``reduce`` sums a tensor over the ranks (identity in one process); the mean comes first and the variance
        from centred terms, two rounds as in ``CPUSyncBatchNorm``, for float32 stability. The all-reduce is
        differentiable, so gradients through the statistics are exact. Updates the running statistics in training.
        """
        from .graph_kernels import neighbour_sum

        n, k = neighbours.shape
        c = self.out_channels
        cnt = torch.bincount(neighbours.reshape(-1), minlength=proj_j.shape[0]).to(proj_j.dtype)  # in-degree
        sums = reduce(torch.cat([cnt @ proj_j, proj_i.sum(dim=0), proj_j.new_tensor([float(n)])]))
        n_all = sums[-1]
        total = n_all * k
        mean_j, mean_i = sums[:c] / total, sums[c:2 * c] / n_all
        a_c, b_c = proj_j - mean_j, proj_i - mean_i
        cross = (b_c * neighbour_sum(a_c, neighbours)).sum(dim=0)
        var = reduce(cnt @ a_c.pow(2) + 2.0 * cross + k * b_c.pow(2).sum(dim=0)) / total
        if self.bn.training and self.bn.track_running_stats:
            self._update_running_stats((mean_j + mean_i).detach(), var.detach(), total.detach())
        return a_c, b_c, var

    @torch.no_grad()
    def _update_running_stats(self, mean, var, count):
        """BatchNorm's running-statistics update (unbiased variance), as ``nn.BatchNorm2d`` does it. ``count`` is a
        0-dim tensor (no host synchronisation on CUDA)."""
        bn = self.bn
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.mul_(1 - momentum).add_(momentum * mean)
        bn.running_var.mul_(1 - momentum).add_(momentum * var * count / (count - 1).clamp(min=1))

    def forward_dense(self, edges):
        """Literal form on an explicit edge tensor ``edges`` (B, 2C, N, K) -> (B, C', N, K)."""
        return F.relu(self.bn(self.conv(edges)))

    @staticmethod
    def edge_features(feats, center, neighbours, edge='concat'):
        """Explicit edge tensor (1, 2C, N, K) of ``feats`` (M, C) (reference / tests only: memory N*K*2C)."""
        x_j = feats[neighbours]                                   # (N, K, C)
        x_i = feats[center].unsqueeze(1).expand_as(x_j)           # (N, K, C)
        first = x_j - x_i if edge == 'diff' else x_j
        return torch.cat([first, x_i], dim=2).permute(2, 0, 1).unsqueeze(0)


class ConvAdapter(nn.Module):
    """1x1 Conv2d + BN2d: (B, C_in, H, W) -> (B, C_out, H, W), the FitNet regressor."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(int(out_channels), eps=1e-3, momentum=0.01)

    def forward(self, x):
        return self.bn(self.conv(x))
