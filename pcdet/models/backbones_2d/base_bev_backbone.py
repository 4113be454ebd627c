"""BaseBEVBackbone: 2D CNN over the BEV map, multi-scale levels upsampled and concatenated (SECOND's RPN)."""
import torch
import torch.nn as nn


def _conv_bn_relu(c_in, c_out, stride, pad=1):
    return [nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=pad, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01), nn.ReLU()]


class BaseBEVBackbone(nn.Module):
    """Config keys: LAYER_NUMS, LAYER_STRIDES, NUM_FILTERS (per level), UPSAMPLE_STRIDES, NUM_UPSAMPLE_FILTERS.

    Level i = ZeroPad2d(1) + Conv3x3(stride LAYER_STRIDES[i]) + BN + ReLU, then LAYER_NUMS[i] x (Conv3x3 + BN +
    ReLU); deblock i = ConvTranspose2d(k = s, stride s) + BN + ReLU (a strided Conv2d when s < 1 or, with
    USE_CONV_FOR_NO_STRIDE, s == 1). Sequential indices match OpenPCDet's checkpoints.
    """

    def __init__(self, model_cfg, input_channels, **kwargs):
        super().__init__()
        self.model_cfg = model_cfg
        if self.model_cfg.get('LAYER_NUMS', None) is not None:
            layer_nums = list(self.model_cfg.LAYER_NUMS)
            layer_strides = list(self.model_cfg.LAYER_STRIDES)
            num_filters = list(self.model_cfg.NUM_FILTERS)
            if not len(layer_nums) == len(layer_strides) == len(num_filters):
                raise ValueError(f'base_bev_backbone.py: BACKBONE_2D.LAYER_NUMS {layer_nums}, LAYER_STRIDES '
                                 f'{layer_strides} and NUM_FILTERS {num_filters} must have the same length')
        else:
            layer_nums = layer_strides = num_filters = []
        if self.model_cfg.get('UPSAMPLE_STRIDES', None) is not None:
            upsample_strides = list(self.model_cfg.UPSAMPLE_STRIDES)
            num_upsample_filters = list(self.model_cfg.NUM_UPSAMPLE_FILTERS)
            if len(upsample_strides) != len(num_upsample_filters):
                raise ValueError('base_bev_backbone.py: BACKBONE_2D.UPSAMPLE_STRIDES and NUM_UPSAMPLE_FILTERS '
                                 'must have the same length')
        else:
            upsample_strides = num_upsample_filters = []

        num_levels = len(layer_nums)
        c_in_list = [input_channels, *num_filters[:-1]]
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        for idx in range(num_levels):
            # explicit ZeroPad2d + unpadded conv: index 0 is the pad, so conv weights sit at 1, 4, 7, ...
            cur_layers = [nn.ZeroPad2d(1), *_conv_bn_relu(c_in_list[idx], num_filters[idx], layer_strides[idx], pad=0)]
            for _ in range(layer_nums[idx]):
                cur_layers += _conv_bn_relu(num_filters[idx], num_filters[idx], 1, pad=1)
            self.blocks.append(nn.Sequential(*cur_layers))
            if len(upsample_strides) > 0:
                stride = upsample_strides[idx]
                if stride > 1 or (stride == 1 and not self.model_cfg.get('USE_CONV_FOR_NO_STRIDE', False)):
                    up = nn.ConvTranspose2d(num_filters[idx], num_upsample_filters[idx], int(stride),
                                            stride=int(stride), bias=False)
                else:
                    stride = int(round(1 / stride))
                    up = nn.Conv2d(num_filters[idx], num_upsample_filters[idx], stride, stride=stride, bias=False)
                self.deblocks.append(nn.Sequential(
                    up, nn.BatchNorm2d(num_upsample_filters[idx], eps=1e-3, momentum=0.01), nn.ReLU()))

        c_in = sum(num_upsample_filters) if num_upsample_filters else sum(num_filters)
        if len(upsample_strides) > num_levels:
            self.deblocks.append(nn.Sequential(
                nn.ConvTranspose2d(c_in, c_in, upsample_strides[-1], stride=upsample_strides[-1], bias=False),
                nn.BatchNorm2d(c_in, eps=1e-3, momentum=0.01), nn.ReLU()))
        self.num_bev_features = c_in

    def forward(self, data_dict):
        """
        Reads:
            spatial_features (B, C, H, W) float BEV map.
        Writes:
            spatial_features_2d (B, num_bev_features, H / s0, W / s0) float (levels upsampled and concatenated).
        """
        spatial_features = data_dict['spatial_features']
        ups = []
        x = spatial_features
        for i in range(len(self.blocks)):
            x = self.blocks[i](x)
            ups.append(self.deblocks[i](x) if len(self.deblocks) > 0 else x)
        if len(ups) > 1:
            x = torch.cat(ups, dim=1)
        elif len(ups) == 1:
            x = ups[0]
        if len(self.deblocks) > len(self.blocks):
            x = self.deblocks[-1](x)
        data_dict['spatial_features_2d'] = x
        return data_dict
