"""Point feature encoding and the per-sample data processor (range mask, shuffle, voxelisation, sampling)."""
from .data_processor import DataProcessor
from .point_feature_encoder import PointFeatureEncoder

__all__ = {'DataProcessor': DataProcessor, 'PointFeatureEncoder': PointFeatureEncoder}
