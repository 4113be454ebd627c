// Launcher of the RoI point selection CUDA kernel. Plain C++ interface (raw pointers + stream, no torch headers),
// so the .cu file compiles with nvcc alone; the torch binding is in roipoint_pool3d_api.cpp.
#pragma once

#include <cuda_runtime.h>

// mask: (batch, boxes, pts) bytes, nonzero where the point lies in the (enlarged) box (roipoint_pool3d_utils.py
//     computes it with the project's points-in-box test).
// pts_idx: (batch, boxes, sampled) int32 output: the first `sampled` inside points in index order, repeated
//     cyclically (slot s = inside point s % count) when there are fewer; untouched for an empty box.
// empty_flag: (batch, boxes) int32, zero-filled by the caller; set to 1 for a box without points.
// Returns the launch status.
cudaError_t roipoint_select_launcher(int batch, int boxes, int pts, int sampled, const unsigned char *mask,
                                     int *pts_idx, int *empty_flag, cudaStream_t stream);
