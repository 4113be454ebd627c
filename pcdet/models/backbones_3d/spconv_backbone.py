"""VoxelBackBone8x (SECOND's sparse 3D encoder), spconv 2.x.

spconv is imported inside ``__init__``/``forward`` through ``pcdet.utils.spconv_utils.import_spconv`` (which
applies the CPU shim), so importing this module, the registry or PointPillars never imports spconv.

Widths: optional ``NUM_FILTERS`` = [conv_input, conv1, conv2, conv3, conv4, conv_out] channels, default
OpenPCDet's [16, 16, 32, 64, 64, 128] (state_dict identical to OpenPCDet's ``VoxelBackBone8x``). Students use
e.g. [8, 8, 16, 32, 32, 64] (SECOND 4x) or [4, 4, 8, 16, 16, 32] (16x).
"""
from functools import partial

import numpy as np
import torch.nn as nn

from pcdet.utils.spconv_utils import import_spconv

DEFAULT_NUM_FILTERS = (16, 16, 32, 64, 64, 128)


def post_act_block(spconv, in_channels, out_channels, kernel_size, indice_key=None, stride=1, padding=0,
                   conv_type='subm', norm_fn=None):
    """SparseSequential(conv, norm, ReLU); ``conv_type`` is ``subm`` (submanifold) or ``spconv`` (strided)."""
    if conv_type == 'subm':
        conv = spconv.SubMConv3d(in_channels, out_channels, kernel_size, bias=False, indice_key=indice_key)
    elif conv_type == 'spconv':
        conv = spconv.SparseConv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                   bias=False, indice_key=indice_key)
    elif conv_type == 'inverseconv':
        conv = spconv.SparseInverseConv3d(in_channels, out_channels, kernel_size, indice_key=indice_key,
                                          bias=False)
    else:
        raise ValueError(f'spconv_backbone.py: unknown conv_type {conv_type!r} (subm | spconv | inverseconv)')
    return spconv.SparseSequential(conv, norm_fn(out_channels), nn.ReLU())


class VoxelBackBone8x(nn.Module):
    """Sparse 3D CNN with total stride 8 in x/y (and z 41 -> 2 for a 40-voxel-high grid)."""

    def __init__(self, model_cfg, input_channels, grid_size, **kwargs):
        super().__init__()
        spconv = import_spconv()
        self.model_cfg = model_cfg
        num_filters = list(model_cfg.get('NUM_FILTERS', DEFAULT_NUM_FILTERS))
        if len(num_filters) != 6:
            raise ValueError(f'spconv_backbone.py: BACKBONE_3D.NUM_FILTERS must have 6 widths '
                             f'[input, conv1, conv2, conv3, conv4, out], got {num_filters}')
        c_in, c1, c2, c3, c4, c_out = num_filters
        norm_fn = partial(nn.BatchNorm1d, eps=1e-3, momentum=0.01)
        # one extra z plane so that the z strides end at 2 planes (41 -> 21 -> 11 -> 5 -> 2)
        self.sparse_shape = np.array(grid_size[::-1]) + [1, 0, 0]
        block = partial(post_act_block, spconv)

        self.conv_input = spconv.SparseSequential(
            spconv.SubMConv3d(input_channels, c_in, 3, padding=1, bias=False, indice_key='subm1'),
            norm_fn(c_in), nn.ReLU())
        self.conv1 = spconv.SparseSequential(
            block(c_in, c1, 3, norm_fn=norm_fn, padding=1, indice_key='subm1'))
        self.conv2 = spconv.SparseSequential(
            block(c1, c2, 3, norm_fn=norm_fn, stride=2, padding=1, indice_key='spconv2', conv_type='spconv'),
            block(c2, c2, 3, norm_fn=norm_fn, padding=1, indice_key='subm2'),
            block(c2, c2, 3, norm_fn=norm_fn, padding=1, indice_key='subm2'))
        self.conv3 = spconv.SparseSequential(
            block(c2, c3, 3, norm_fn=norm_fn, stride=2, padding=1, indice_key='spconv3', conv_type='spconv'),
            block(c3, c3, 3, norm_fn=norm_fn, padding=1, indice_key='subm3'),
            block(c3, c3, 3, norm_fn=norm_fn, padding=1, indice_key='subm3'))
        self.conv4 = spconv.SparseSequential(
            block(c3, c4, 3, norm_fn=norm_fn, stride=2, padding=(0, 1, 1), indice_key='spconv4', conv_type='spconv'),
            block(c4, c4, 3, norm_fn=norm_fn, padding=1, indice_key='subm4'),
            block(c4, c4, 3, norm_fn=norm_fn, padding=1, indice_key='subm4'))
        last_pad = self.model_cfg.get('last_pad', 0)
        self.conv_out = spconv.SparseSequential(
            spconv.SparseConv3d(c4, c_out, (3, 1, 1), stride=(2, 1, 1), padding=last_pad, bias=False,
                                indice_key='spconv_down2'),
            norm_fn(c_out), nn.ReLU())
        self.num_point_features = c_out
        self.backbone_channels = {'x_conv1': c1, 'x_conv2': c2, 'x_conv3': c3, 'x_conv4': c4}

    def forward(self, batch_dict):
        """
        Reads:
            voxel_features (V, C) float, voxel_coords (V, 4) [b, z, y, x] (any numeric dtype), batch_size int.
        Writes:
            encoded_spconv_tensor (SparseConvTensor, stride 8), encoded_spconv_tensor_stride 8,
            multi_scale_3d_features {x_conv1..x_conv4}, multi_scale_3d_strides {x_conv1: 1, ..., x_conv4: 8}.
        """
        spconv = import_spconv()
        voxel_features, voxel_coords = batch_dict['voxel_features'], batch_dict['voxel_coords']
        input_sp_tensor = spconv.SparseConvTensor(
            features=voxel_features, indices=voxel_coords.int(), spatial_shape=self.sparse_shape.tolist(),
            batch_size=int(batch_dict['batch_size']))
        x = self.conv_input(input_sp_tensor)
        x_conv1 = self.conv1(x)
        x_conv2 = self.conv2(x_conv1)
        x_conv3 = self.conv3(x_conv2)
        x_conv4 = self.conv4(x_conv3)
        out = self.conv_out(x_conv4)
        batch_dict.update({
            'encoded_spconv_tensor': out,
            'encoded_spconv_tensor_stride': 8,
            'multi_scale_3d_features': {'x_conv1': x_conv1, 'x_conv2': x_conv2, 'x_conv3': x_conv3,
                                        'x_conv4': x_conv4},
            'multi_scale_3d_strides': {'x_conv1': 1, 'x_conv2': 2, 'x_conv3': 4, 'x_conv4': 8},
        })
        return batch_dict
