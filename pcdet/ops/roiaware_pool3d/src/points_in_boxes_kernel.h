// Launcher of the points-in-boxes CUDA kernel. Plain C++ interface (raw pointers + stream, no torch headers),
// so the .cu file compiles with nvcc alone; the torch binding is in roiaware_pool3d_api.cpp.
#pragma once

#include <cuda_runtime.h>

// boxes: (batch_size, boxes_num, 7) float32 LiDAR [x, y, z, dx, dy, dz, heading], geometric centre.
// pts: (batch_size, pts_num, 3) float32 LiDAR [x, y, z].
// box_idx_of_points: (batch_size, pts_num) int32, must be pre-filled with -1 by the caller; receives the
//     lowest index of a box containing the point (points not inside any box keep -1).
// Returns the launch status (cudaSuccess on success).
cudaError_t points_in_boxes_launcher(int batch_size, int boxes_num, int pts_num, const float *boxes,
                                     const float *pts, int *box_idx_of_points, cudaStream_t stream);
