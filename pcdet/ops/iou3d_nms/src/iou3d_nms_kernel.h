// Launchers of the rotated IoU / NMS CUDA kernels. Raw device pointers and a stream; no torch headers, so the
// .cu file compiles with plain `nvcc -c`. The torch binding is iou3d_nms_api.cpp.
//
// Boxes: LiDAR (N, 7) float32 [x, y, z, dx, dy, dz, heading], row-major, contiguous, on the device.
// The geometry (Sutherland-Hodgman clipping of one rectangle by the other's edges, in double) is the same as
// the CPU reference pcdet/ops/iou3d_nms/rotated_geometry.py, so both paths agree to float32 rounding.
#pragma once
#include <cuda_runtime.h>
#include <cstdint>

#define IOU3D_NMS_THREADS 64  // boxes per NMS tile: one bit of a 64-bit mask word each

// out (N, M) float32: rotated BEV intersection area.
cudaError_t boxes_overlap_bev_launcher(int n, int m, const float *boxes_a, const float *boxes_b, float *out,
                                       cudaStream_t stream);
// out (N, M) float32: rotated BEV IoU.
cudaError_t boxes_iou_bev_launcher(int n, int m, const float *boxes_a, const float *boxes_b, float *out,
                                   cudaStream_t stream);
// out (N, M) float32: rotated 3D IoU (BEV intersection x vertical overlap / union volume).
cudaError_t boxes_iou3d_launcher(int n, int m, const float *boxes_a, const float *boxes_b, float *out,
                                 cudaStream_t stream);
// mask (N, ceil(N / 64)) uint64: bit k of mask[i, b] set when box b*64+k (> i) has IoU > thresh with box i.
// Boxes must be sorted by descending score. rotated = false: axis-aligned BEV IoU (heading ignored).
cudaError_t nms_mask_launcher(int n, const float *boxes, double thresh, bool rotated, unsigned long long *mask,
                              cudaStream_t stream);
