"""Select and order point features (OpenPCDet's ``PointFeatureEncoder``).

``POINT_FEATURE_ENCODING``: ``encoding_type`` (only ``absolute_coordinates_encoding``), ``src_feature_list``
(columns of the raw points, must start with x, y, z) and ``used_feature_list`` (columns fed to the model).
"""
import numpy as np

ENCODING_TYPES = ('absolute_coordinates_encoding',)


class PointFeatureEncoder:
    def __init__(self, config, point_cloud_range=None):
        self.point_encoding_config = config
        self.point_cloud_range = point_cloud_range
        self.src_feature_list = list(config.src_feature_list)
        self.used_feature_list = list(config.used_feature_list)
        if self.src_feature_list[0:3] != ['x', 'y', 'z']:
            raise ValueError(f'POINT_FEATURE_ENCODING.src_feature_list must start with x, y, z, '
                             f'got {self.src_feature_list}')
        missing = [x for x in self.used_feature_list if x not in self.src_feature_list]
        if missing:
            raise ValueError(f'POINT_FEATURE_ENCODING.used_feature_list: {missing} not in src_feature_list '
                             f'{self.src_feature_list}')
        if config.encoding_type not in ENCODING_TYPES:
            raise KeyError(f'POINT_FEATURE_ENCODING.encoding_type: unknown {config.encoding_type!r} '
                           f'(valid: {", ".join(ENCODING_TYPES)})')

    @property
    def num_point_features(self):
        """Number of columns of the encoded points (``len(used_feature_list)``)."""
        return getattr(self, self.point_encoding_config.encoding_type)(points=None)

    def forward(self, data_dict):
        """Encode ``data_dict['points']`` (N, len(src_feature_list)) -> (N, num_point_features) float32.

        Also sets ``use_lead_xyz`` (True: the first three columns are x, y, z).
        """
        data_dict['points'], use_lead_xyz = getattr(self, self.point_encoding_config.encoding_type)(
            data_dict['points'])
        data_dict['use_lead_xyz'] = use_lead_xyz
        return data_dict

    def absolute_coordinates_encoding(self, points=None):
        """x, y, z followed by the other used features, in ``used_feature_list`` order."""
        if points is None:
            return len(self.used_feature_list)
        if points.ndim != 2 or points.shape[-1] != len(self.src_feature_list):
            raise ValueError(f'points have shape {points.shape}, expected (N, {len(self.src_feature_list)}) for '
                             f'POINT_FEATURE_ENCODING.src_feature_list {self.src_feature_list}')
        columns = [points[:, 0:3]]
        for name in self.used_feature_list:
            if name in ('x', 'y', 'z'):
                continue
            idx = self.src_feature_list.index(name)
            columns.append(points[:, idx:idx + 1])
        return np.concatenate(columns, axis=1).astype(np.float32, copy=False), True
