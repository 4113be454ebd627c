// Launchers of the batched PointNet++ CUDA kernels. Plain C++ interface (raw pointers + stream, no torch headers)
// so that pointnet2_batch_kernel.cu compiles with nvcc alone; the torch binding is in pointnet2_batch_api.cpp.
// All arrays are C-contiguous device memory; indices are int32. Semantics are those of pointnet2_utils.py (and of
// the CPU kernels in pointnet2_cpu.py, which select the same indices). Each launcher returns the launch status.
#pragma once

#include <cuda_runtime.h>

// xyz: (b, n, 3) float32; temp: (b, n) float32 scratch, filled with 1e10 by the caller; idx: (b, m) output.
// Furthest point sampling from index 0; among equal maxima the smallest index. Needs n >= 1.
cudaError_t furthest_point_sampling_launcher(int b, int n, int m, const float *xyz, float *temp, int *idx,
                                             cudaStream_t stream);

// new_xyz: (b, m, 3) float32 centres; xyz: (b, n, 3) float32 points; idx: (b, m, nsample) output, zero-filled by
// the caller. The first nsample points with squared distance < radius * radius (float32); later slots repeat the
// first found index; a ball with no point keeps zeros.
cudaError_t ball_query_launcher(int b, int n, int m, float radius, int nsample, const float *new_xyz,
                                const float *xyz, int *idx, cudaStream_t stream);

// unknown: (b, n, 3), known: (b, m, 3) float32; dist2: (b, n, 3) squared distances (ascending), idx: (b, n, 3).
// Equal distances keep the smaller index first; with m < 3 the missing slots hold index 0 and distance inf.
cudaError_t three_nn_launcher(int b, int n, int m, const float *unknown, const float *known, float *dist2, int *idx,
                              cudaStream_t stream);

// features: (b, c, n); idx: (b, k) in [0, n); out: (b, c, k) = features[:, :, idx]. grouping_operation uses it with
// k = npoint * nsample.
cudaError_t gather_points_launcher(int b, int c, int n, int k, const float *features, const int *idx, float *out,
                                   cudaStream_t stream);
cudaError_t gather_points_launcher(int b, int c, int n, int k, const double *features, const int *idx, double *out,
                                   cudaStream_t stream);

// Backward of gather_points: grad_features (b, c, n), zero-filled by the caller, += grad_out (b, c, k) at idx.
cudaError_t gather_points_grad_launcher(int b, int c, int n, int k, const float *grad_out, const int *idx,
                                        float *grad_features, cudaStream_t stream);
cudaError_t gather_points_grad_launcher(int b, int c, int n, int k, const double *grad_out, const int *idx,
                                        double *grad_features, cudaStream_t stream);

// features: (b, c, m); idx, weight: (b, n, 3); out: (b, c, n) = sum_j weight[..., j] * features[:, :, idx[..., j]].
cudaError_t three_interpolate_launcher(int b, int c, int m, int n, const float *features, const int *idx,
                                       const float *weight, float *out, cudaStream_t stream);
cudaError_t three_interpolate_launcher(int b, int c, int m, int n, const double *features, const int *idx,
                                       const double *weight, double *out, cudaStream_t stream);

// Backward of three_interpolate for the features: grad_features (b, c, m), zero-filled by the caller.
cudaError_t three_interpolate_grad_launcher(int b, int c, int n, int m, const float *grad_out, const int *idx,
                                            const float *weight, float *grad_features, cudaStream_t stream);
cudaError_t three_interpolate_grad_launcher(int b, int c, int n, int m, const double *grad_out, const int *idx,
                                            const double *weight, double *grad_features, cudaStream_t stream);
