"""benchmarks/pd_weight_focus.py: node geometry of voxel features and BEV maps, the foreground test and the
effective node count, on constructed inputs checked by hand."""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location('pd_weight_focus', ROOT / 'benchmarks' / 'pd_weight_focus.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


DATASET = SimpleNamespace(point_cloud_range=[0.0, -20.0, -3.0, 40.0, 20.0, 1.0], voxel_size=[0.5, 0.25, 4.0])


def test_node_centres_of_voxels_and_bev_cells():
    tool = load_tool()
    # voxel features (V, C): coords [z, y, x] in voxel units of the dataset grid (0.5 m x 0.25 m)
    centres, cell = tool.node_centres(torch.tensor([[0, 0, 0], [0, 3, 7]]), torch.zeros(2, 8), DATASET)
    assert np.allclose(cell, [0.5, 0.25])
    assert np.allclose(centres, [[0.25, -19.875], [3.75, -19.125]])
    # a (B, C, H, W) = (1, 4, 10, 20) BEV map over 40 m x 40 m: cells of 2 m (x) by 4 m (y); coords [y, x]
    centres, cell = tool.node_centres(torch.tensor([[0, 0], [9, 19]]), torch.zeros(1, 4, 10, 20), DATASET)
    assert np.allclose(cell, [2.0, 4.0])
    assert np.allclose(centres, [[1.0, -18.0], [39.0, 18.0]])


def test_bev_foreground_rotated_box_and_margin():
    tool = load_tool()
    box = np.array([[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, np.pi / 2]])   # 4 m long along y after the rotation
    pts = np.array([[10.0, 1.9], [10.0, -1.9], [10.9, 0.0], [11.2, 0.0], [12.5, 0.0]])
    assert tool.bev_foreground(pts, box, margin=0.0).tolist() == [True, True, True, False, False]
    assert tool.bev_foreground(pts, box, margin=0.25).tolist() == [True, True, True, True, False]


def test_effective_nodes():
    tool = load_tool()
    assert tool.effective_nodes(np.ones(7)) == 7.0
    assert tool.effective_nodes(np.array([5.0, 0.0, 0.0])) == 1.0
    assert abs(tool.effective_nodes(np.array([2.0, 1.0, 1.0])) - 16.0 / 6.0) < 1e-12
