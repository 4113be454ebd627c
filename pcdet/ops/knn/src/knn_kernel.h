// Exact k-nearest-neighbour CUDA kernel launchers. Plain C++ interface (raw pointers + stream, no torch
// headers) so that knn_kernel.cu compiles with nvcc alone; the torch binding is in knn_api.cpp.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

// query: (batch, num_query, channels), ref: (batch, num_ref, channels), C-contiguous, device memory.
// idx: (batch, num_query, k) int64 output, dist: (batch, num_query, k) output (squared L2 distances).
// Each output row is sorted by (distance, reference index). Requires 1 <= k <= num_ref.
// Distances are summed channel by channel in the input precision without fused multiply-add, so they are
// bit-identical to the CPU kernel (pcdet/ops/knn/knn_cpu.py). Returns the launch status.
cudaError_t knn_launcher_f32(int batch, int num_query, int num_ref, int channels, int k, const float *query,
                             const float *ref, int64_t *idx, float *dist, cudaStream_t stream);
cudaError_t knn_launcher_f64(int batch, int num_query, int num_ref, int channels, int k, const double *query,
                             const double *ref, int64_t *idx, double *dist, cudaStream_t stream);
