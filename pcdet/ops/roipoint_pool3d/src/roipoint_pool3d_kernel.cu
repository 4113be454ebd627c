// RoI point selection CUDA kernel: one block per (box, batch element) compacts the box's membership row in index
// order (warp ballots and a block-wide prefix over the warps), keeps the first `sampled` inside points and
// repeats them cyclically to fill the slots, as OpenPCDet's get_pooled_idx.
#include "roipoint_pool3d_kernel.h"

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xffffffffu;

__global__ void roipoint_select_kernel(int boxes, int pts, int sampled, const unsigned char *__restrict__ mask,
                                       int *__restrict__ pts_idx, int *__restrict__ empty_flag) {
  __shared__ int warp_offset[kWarps + 1];
  const long long row = static_cast<long long>(blockIdx.y) * boxes + blockIdx.x;
  const unsigned char *flags = mask + row * pts;
  int *out = pts_idx + row * sampled;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int found = 0;  // the same in every thread
  for (int t0 = 0; t0 < pts && found < sampled; t0 += kThreads) {
    const int k = t0 + threadIdx.x;
    const bool inside = k < pts && flags[k] != 0;
    const unsigned ballot = __ballot_sync(kFullMask, inside);
    if (lane == 0) warp_offset[warp + 1] = __popc(ballot);
    __syncthreads();
    if (threadIdx.x == 0) {
      warp_offset[0] = 0;
      for (int w = 0; w < kWarps; ++w) warp_offset[w + 1] += warp_offset[w];
    }
    __syncthreads();
    const int pos = found + warp_offset[warp] + __popc(ballot & ((1u << lane) - 1u));
    if (inside && pos < sampled) out[pos] = k;
    found += warp_offset[kWarps];
    __syncthreads();  // warp_offset is rewritten by the next chunk
  }
  const int count = found < sampled ? found : sampled;
  if (count == 0) {
    if (threadIdx.x == 0) empty_flag[row] = 1;
    return;
  }
  for (int s = count + threadIdx.x; s < sampled; s += kThreads) out[s] = out[s % count];
}

}  // namespace

cudaError_t roipoint_select_launcher(int batch, int boxes, int pts, int sampled, const unsigned char *mask,
                                     int *pts_idx, int *empty_flag, cudaStream_t stream) {
  if (batch == 0 || boxes == 0) return cudaSuccess;
  roipoint_select_kernel<<<dim3(boxes, batch), kThreads, 0, stream>>>(boxes, pts, sampled, mask, pts_idx,
                                                                      empty_flag);
  return cudaGetLastError();
}
