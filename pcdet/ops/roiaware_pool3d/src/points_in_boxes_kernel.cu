// Points-in-boxes CUDA kernel: one thread per point, scanning the boxes of its sample in index order.
// Boundary semantics are OpenPCDet's CUDA check_pt_in_box3d: |z - cz| <= dz / 2 and, in the box frame,
// |local_x| < dx / 2 + 1e-5 and |local_y| < dy / 2 + 1e-5 (see roiaware_pool3d_utils.py).
#include "points_in_boxes_kernel.h"

namespace {

constexpr int kThreadsPerBlock = 256;
constexpr float kMargin = 1e-5f;

__device__ __forceinline__ bool point_in_box(float x, float y, float z, const float *box) {
  const float cx = box[0], cy = box[1], cz = box[2];
  const float dx = box[3], dy = box[4], dz = box[5], heading = box[6];
  if (fabsf(z - cz) > dz * 0.5f) return false;
  // Rotate the offset by -heading into the box frame.
  const float cosa = cosf(heading), sina = sinf(heading);
  const float sx = x - cx, sy = y - cy;
  const float local_x = sx * cosa + sy * sina;
  const float local_y = -sx * sina + sy * cosa;
  return fabsf(local_x) < dx * 0.5f + kMargin && fabsf(local_y) < dy * 0.5f + kMargin;
}

__global__ void points_in_boxes_kernel(int batch_size, int boxes_num, int pts_num, const float *__restrict__ boxes,
                                       const float *__restrict__ pts, int *__restrict__ box_idx_of_points) {
  const int b = blockIdx.y;
  const int pt_idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= batch_size || pt_idx >= pts_num) return;
  const long long point_offset = static_cast<long long>(b) * pts_num + pt_idx;
  const float *pt = pts + point_offset * 3;
  const float *sample_boxes = boxes + static_cast<long long>(b) * boxes_num * 7;
  for (int k = 0; k < boxes_num; ++k) {
    if (point_in_box(pt[0], pt[1], pt[2], sample_boxes + k * 7)) {
      box_idx_of_points[point_offset] = k;  // lowest index wins, as the CPU path
      return;
    }
  }
}

}  // namespace

cudaError_t points_in_boxes_launcher(int batch_size, int boxes_num, int pts_num, const float *boxes,
                                     const float *pts, int *box_idx_of_points, cudaStream_t stream) {
  if (batch_size == 0 || pts_num == 0 || boxes_num == 0) return cudaSuccess;
  dim3 blocks((pts_num + kThreadsPerBlock - 1) / kThreadsPerBlock, batch_size);
  dim3 threads(kThreadsPerBlock);
  points_in_boxes_kernel<<<blocks, threads, 0, stream>>>(batch_size, boxes_num, pts_num, boxes, pts,
                                                         box_idx_of_points);
  return cudaGetLastError();
}
