"""Exact k-nearest-neighbour op (tiled numba CPU kernel, CUDA kernel, dense references): see knn_utils.py."""
from .knn_utils import knn, knn_dense_matmul, knn_dense_reference

__all__ = ['knn', 'knn_dense_reference', 'knn_dense_matmul']
