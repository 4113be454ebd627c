"""Batched PointNet++ ops and modules: ``pointnet2_utils`` (ops), ``pointnet2_modules`` (SA / FP modules),
``pointnet2_cpu`` (numba kernels). The CUDA extension ``pointnet2_batch_cuda`` is imported lazily, never here."""
