// Batched PointNet++ CUDA kernels: furthest point sampling, ball query, three-NN, gather / scatter-add and
// three-point interpolation. Squared distances are ((dx * dx + dy * dy) + dz * dz) with dx = point - centre, each
// operation rounded on its own (no fused multiply-add), as the numba CPU kernels compute them, so both devices
// select the same indices.
#include "pointnet2_batch_kernel.h"

#include <climits>
#include <cmath>

namespace {

constexpr int kThreads = 256;     // threads per block of the per-element and per-query kernels
constexpr int kFpsThreads = 512;  // threads of the one block per batch element of FPS
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float sq_dist(float px, float py, float pz, float cx, float cy, float cz) {
  const float dx = __fsub_rn(px, cx), dy = __fsub_rn(py, cy), dz = __fsub_rn(pz, cz);
  return __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
}

__device__ __forceinline__ void atomic_add(float *address, float value) { atomicAdd(address, value); }

__device__ __forceinline__ void atomic_add(double *address, double value) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 600
  atomicAdd(address, value);
#else  // no native double atomicAdd before sm_60: compare-and-swap loop
  unsigned long long *bits = reinterpret_cast<unsigned long long *>(address);
  unsigned long long old = *bits, assumed;
  do {
    assumed = old;
    old = atomicCAS(bits, assumed, __double_as_longlong(value + __longlong_as_double(assumed)));
  } while (assumed != old);
#endif
}

// (value, index) order of the FPS arg-max: larger value first, then smaller index.
__device__ __forceinline__ void keep_better(float &best, int &best_idx, float value, int idx) {
  if (value > best || (value == best && idx < best_idx)) {
    best = value;
    best_idx = idx;
  }
}

__device__ __forceinline__ void warp_arg_max(float &best, int &best_idx) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float value = __shfl_down_sync(kFullMask, best, offset);
    const int idx = __shfl_down_sync(kFullMask, best_idx, offset);
    keep_better(best, best_idx, value, idx);
  }
}

__global__ void furthest_point_sampling_kernel(int n, int m, const float *__restrict__ xyz, float *__restrict__ temp,
                                               int *__restrict__ idx) {
  __shared__ float warp_best[kFpsThreads / 32];
  __shared__ int warp_idx[kFpsThreads / 32];
  __shared__ int chosen;
  const long long b = blockIdx.x;
  xyz += b * n * 3;
  temp += b * n;
  idx += b * m;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int old = 0;
  if (threadIdx.x == 0) idx[0] = 0;
  for (int j = 1; j < m; ++j) {
    const float cx = xyz[old * 3], cy = xyz[old * 3 + 1], cz = xyz[old * 3 + 2];
    float best = -1.0f;
    int best_idx = INT_MAX;
    for (int k = threadIdx.x; k < n; k += kFpsThreads) {
      const float d = sq_dist(xyz[k * 3], xyz[k * 3 + 1], xyz[k * 3 + 2], cx, cy, cz);
      const float d2 = d < temp[k] ? d : temp[k];
      temp[k] = d2;
      if (d2 > best) {  // strict: the first of this thread's maxima
        best = d2;
        best_idx = k;
      }
    }
    warp_arg_max(best, best_idx);
    if (lane == 0) {
      warp_best[warp] = best;
      warp_idx[warp] = best_idx;
    }
    __syncthreads();
    if (warp == 0) {
      best = lane < kFpsThreads / 32 ? warp_best[lane] : -2.0f;
      best_idx = lane < kFpsThreads / 32 ? warp_idx[lane] : INT_MAX;
      warp_arg_max(best, best_idx);
      if (lane == 0) {
        chosen = best_idx;
        idx[j] = best_idx;
      }
    }
    __syncthreads();
    old = chosen;
  }
}

// One thread per centre; the points of the batch element are staged in shared memory, kThreads at a time, until
// every ball of the block is full.
__global__ void ball_query_kernel(int n, int m, float radius2, int nsample, const float *__restrict__ new_xyz,
                                  const float *__restrict__ xyz, int *__restrict__ idx) {
  __shared__ float tile[kThreads * 3];
  const long long b = blockIdx.y;
  const int q = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = q < m;
  xyz += b * n * 3;
  const float *centre = new_xyz + (b * m + (active ? q : 0)) * 3;
  int *row = idx + (b * m + (active ? q : 0)) * nsample;
  const float cx = centre[0], cy = centre[1], cz = centre[2];
  int cnt = active ? 0 : nsample;
  for (int t0 = 0; t0 < n; t0 += kThreads) {
    if (!__syncthreads_or(cnt < nsample)) break;  // also the barrier before the tile is overwritten
    const int count = min(kThreads, n - t0);
    for (int e = threadIdx.x; e < count * 3; e += blockDim.x) tile[e] = xyz[t0 * 3 + e];
    __syncthreads();
    for (int j = 0; j < count && cnt < nsample; ++j) {
      if (sq_dist(tile[j * 3], tile[j * 3 + 1], tile[j * 3 + 2], cx, cy, cz) < radius2) {
        if (cnt == 0) {
          for (int s = 0; s < nsample; ++s) row[s] = t0 + j;
        }
        row[cnt++] = t0 + j;
      }
    }
  }
}

// One thread per unknown point; the known points are staged in shared memory. Strict comparisons: equal
// distances keep the earlier (smaller) index first.
__global__ void three_nn_kernel(int n, int m, const float *__restrict__ unknown, const float *__restrict__ known,
                                float *__restrict__ dist2, int *__restrict__ idx) {
  __shared__ float tile[kThreads * 3];
  const long long b = blockIdx.y;
  const int q = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = q < n;
  known += b * m * 3;
  const float *u = unknown + (b * n + (active ? q : 0)) * 3;
  const float ux = u[0], uy = u[1], uz = u[2];
  float best1 = INFINITY, best2 = INFINITY, best3 = INFINITY;
  int i1 = 0, i2 = 0, i3 = 0;
  for (int t0 = 0; t0 < m; t0 += kThreads) {
    const int count = min(kThreads, m - t0);
    __syncthreads();
    for (int e = threadIdx.x; e < count * 3; e += blockDim.x) tile[e] = known[t0 * 3 + e];
    __syncthreads();
    for (int j = 0; j < count; ++j) {
      const float d = sq_dist(tile[j * 3], tile[j * 3 + 1], tile[j * 3 + 2], ux, uy, uz);
      if (d < best1) {
        best3 = best2; i3 = i2;
        best2 = best1; i2 = i1;
        best1 = d; i1 = t0 + j;
      } else if (d < best2) {
        best3 = best2; i3 = i2;
        best2 = d; i2 = t0 + j;
      } else if (d < best3) {
        best3 = d; i3 = t0 + j;
      }
    }
  }
  if (!active) return;
  float *d_out = dist2 + (b * n + q) * 3;
  int *i_out = idx + (b * n + q) * 3;
  d_out[0] = best1; d_out[1] = best2; d_out[2] = best3;
  i_out[0] = i1; i_out[1] = i2; i_out[2] = i3;
}

// Grid (ceil(k / kThreads), c, b): one thread per output element.
template <typename T>
__global__ void gather_points_kernel(int c, int n, int k, const T *__restrict__ features, const int *__restrict__ idx,
                                     T *__restrict__ out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= k) return;
  const long long b = blockIdx.z, ch = blockIdx.y;
  out[(b * c + ch) * k + i] = features[(b * c + ch) * n + idx[b * k + i]];
}

template <typename T>
__global__ void gather_points_grad_kernel(int c, int n, int k, const T *__restrict__ grad_out,
                                          const int *__restrict__ idx, T *__restrict__ grad_features) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= k) return;
  const long long b = blockIdx.z, ch = blockIdx.y;
  atomic_add(grad_features + (b * c + ch) * n + idx[b * k + i], grad_out[(b * c + ch) * k + i]);
}

// Grid (ceil(n / kThreads), c, b): one thread per output element.
template <typename T>
__global__ void three_interpolate_kernel(int c, int m, int n, const T *__restrict__ features,
                                         const int *__restrict__ idx, const T *__restrict__ weight,
                                         T *__restrict__ out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const long long b = blockIdx.z, ch = blockIdx.y;
  const T *src = features + (b * c + ch) * m;
  const int *id = idx + (b * n + i) * 3;
  const T *w = weight + (b * n + i) * 3;
  out[(b * c + ch) * n + i] = w[0] * src[id[0]] + w[1] * src[id[1]] + w[2] * src[id[2]];
}

template <typename T>
__global__ void three_interpolate_grad_kernel(int c, int n, int m, const T *__restrict__ grad_out,
                                              const int *__restrict__ idx, const T *__restrict__ weight,
                                              T *__restrict__ grad_features) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const long long b = blockIdx.z, ch = blockIdx.y;
  const T g = grad_out[(b * c + ch) * n + i];
  T *dst = grad_features + (b * c + ch) * m;
  const int *id = idx + (b * n + i) * 3;
  const T *w = weight + (b * n + i) * 3;
  atomic_add(dst + id[0], g * w[0]);
  atomic_add(dst + id[1], g * w[1]);
  atomic_add(dst + id[2], g * w[2]);
}

int blocks_for(int count) { return (count + kThreads - 1) / kThreads; }

// Launches kernel<<<grid, kThreads>>>(args...) on the stream; an empty grid launches nothing.
template <typename Kernel, typename... Args>
cudaError_t launch(Kernel kernel, dim3 grid, cudaStream_t stream, Args... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return cudaSuccess;
  kernel<<<grid, kThreads, 0, stream>>>(args...);
  return cudaGetLastError();
}

}  // namespace

cudaError_t furthest_point_sampling_launcher(int b, int n, int m, const float *xyz, float *temp, int *idx,
                                             cudaStream_t stream) {
  if (b == 0 || m == 0) return cudaSuccess;
  furthest_point_sampling_kernel<<<b, kFpsThreads, 0, stream>>>(n, m, xyz, temp, idx);
  return cudaGetLastError();
}

cudaError_t ball_query_launcher(int b, int n, int m, float radius, int nsample, const float *new_xyz,
                                const float *xyz, int *idx, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const float radius2 = radius * radius;
  return launch(ball_query_kernel, dim3(blocks_for(m), b), stream, n, m, radius2, nsample, new_xyz, xyz, idx);
}

cudaError_t three_nn_launcher(int b, int n, int m, const float *unknown, const float *known, float *dist2, int *idx,
                              cudaStream_t stream) {
  return launch(three_nn_kernel, dim3(blocks_for(n), b), stream, n, m, unknown, known, dist2, idx);
}

cudaError_t gather_points_launcher(int b, int c, int n, int k, const float *features, const int *idx, float *out,
                                   cudaStream_t stream) {
  return launch(gather_points_kernel<float>, dim3(blocks_for(k), c, b), stream, c, n, k, features, idx, out);
}
cudaError_t gather_points_launcher(int b, int c, int n, int k, const double *features, const int *idx, double *out,
                                   cudaStream_t stream) {
  return launch(gather_points_kernel<double>, dim3(blocks_for(k), c, b), stream, c, n, k, features, idx, out);
}

cudaError_t gather_points_grad_launcher(int b, int c, int n, int k, const float *grad_out, const int *idx,
                                        float *grad_features, cudaStream_t stream) {
  return launch(gather_points_grad_kernel<float>, dim3(blocks_for(k), c, b), stream, c, n, k, grad_out, idx,
                grad_features);
}
cudaError_t gather_points_grad_launcher(int b, int c, int n, int k, const double *grad_out, const int *idx,
                                        double *grad_features, cudaStream_t stream) {
  return launch(gather_points_grad_kernel<double>, dim3(blocks_for(k), c, b), stream, c, n, k, grad_out, idx,
                grad_features);
}

cudaError_t three_interpolate_launcher(int b, int c, int m, int n, const float *features, const int *idx,
                                       const float *weight, float *out, cudaStream_t stream) {
  return launch(three_interpolate_kernel<float>, dim3(blocks_for(n), c, b), stream, c, m, n, features, idx, weight,
                out);
}
cudaError_t three_interpolate_launcher(int b, int c, int m, int n, const double *features, const int *idx,
                                       const double *weight, double *out, cudaStream_t stream) {
  return launch(three_interpolate_kernel<double>, dim3(blocks_for(n), c, b), stream, c, m, n, features, idx, weight,
                out);
}

cudaError_t three_interpolate_grad_launcher(int b, int c, int n, int m, const float *grad_out, const int *idx,
                                            const float *weight, float *grad_features, cudaStream_t stream) {
  return launch(three_interpolate_grad_kernel<float>, dim3(blocks_for(n), c, b), stream, c, n, m, grad_out, idx,
                weight, grad_features);
}
cudaError_t three_interpolate_grad_launcher(int b, int c, int n, int m, const double *grad_out, const int *idx,
                                            const double *weight, double *grad_features, cudaStream_t stream) {
  return launch(three_interpolate_grad_kernel<double>, dim3(blocks_for(n), c, b), stream, c, n, m, grad_out, idx,
                weight, grad_features);
}
