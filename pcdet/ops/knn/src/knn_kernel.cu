// Exact k-nearest-neighbour CUDA kernel: one thread per query, references streamed through shared memory in
// tiles; each thread keeps its sorted k-buffer in its own output row (global memory, cached).
// Tie-break: references are visited in index order and a candidate enters only if strictly closer than the
// current k-th, behind entries of equal distance, so rows come out sorted by (distance, index).
#include "knn_kernel.h"

#include <cmath>

namespace {

constexpr int kThreadsPerBlock = 128;
constexpr int kMaxTileRefs = 128;
constexpr size_t kSharedBytes = 32 * 1024;

// Rounded-to-nearest intrinsics are never contracted into FMA: the distance must equal the CPU kernel's
// d = d + (q - r) * (q - r), each operation rounded on its own.
__device__ __forceinline__ float sq_diff_add(float acc, float a, float b) {
  const float diff = __fsub_rn(a, b);
  return __fadd_rn(acc, __fmul_rn(diff, diff));
}
__device__ __forceinline__ double sq_diff_add(double acc, double a, double b) {
  const double diff = __dsub_rn(a, b);
  return __dadd_rn(acc, __dmul_rn(diff, diff));
}

template <typename T>
__device__ __forceinline__ int insert_sorted(T *dist_row, int64_t *idx_row, int k, int filled, T d, int64_t j) {
  int pos = filled < k ? filled : k - 1;
  while (pos > 0 && dist_row[pos - 1] > d) {
    dist_row[pos] = dist_row[pos - 1];
    idx_row[pos] = idx_row[pos - 1];
    --pos;
  }
  dist_row[pos] = d;
  idx_row[pos] = j;
  return filled < k ? filled + 1 : k;
}

// tile_refs > 0: references are staged in shared memory, tile_refs rows at a time.
// tile_refs == 0: channels too many for shared memory; references are read from global memory.
template <typename T>
__global__ void knn_kernel(int num_query, int num_ref, int channels, int k, int tile_refs,
                           const T *__restrict__ query, const T *__restrict__ ref, int64_t *__restrict__ idx,
                           T *__restrict__ dist) {
  extern __shared__ unsigned char shared_raw[];
  T *tile = reinterpret_cast<T *>(shared_raw);
  const int b = blockIdx.y;
  const int q = blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = q < num_query;
  const T *q_row = query + (static_cast<long long>(b) * num_query + (active ? q : 0)) * channels;
  const T *ref_b = ref + static_cast<long long>(b) * num_ref * channels;
  const long long out_offset = (static_cast<long long>(b) * num_query + (active ? q : 0)) * k;
  T *dist_row = dist + out_offset;
  int64_t *idx_row = idx + out_offset;
  int filled = 0;
  T worst = static_cast<T>(0);

  const int step = tile_refs > 0 ? tile_refs : num_ref;
  for (int t_start = 0; t_start < num_ref; t_start += step) {
    const int t_count = min(step, num_ref - t_start);
    const T *src = ref_b + static_cast<long long>(t_start) * channels;
    if (tile_refs > 0) {
      __syncthreads();  // the previous tile is no longer read
      for (int e = threadIdx.x; e < t_count * channels; e += blockDim.x) tile[e] = src[e];
      __syncthreads();
      src = tile;
    }
    if (!active) continue;
    for (int j = 0; j < t_count; ++j) {
      const T *r_row = src + static_cast<long long>(j) * channels;
      T d = static_cast<T>(0);
      for (int c = 0; c < channels; ++c) d = sq_diff_add(d, q_row[c], r_row[c]);
      if (filled < k || d < worst) {
        filled = insert_sorted(dist_row, idx_row, k, filled, d, static_cast<int64_t>(t_start + j));
        worst = dist_row[k - 1];
      }
    }
  }
}

template <typename T>
cudaError_t launch(int batch, int num_query, int num_ref, int channels, int k, const T *query, const T *ref,
                   int64_t *idx, T *dist, cudaStream_t stream) {
  if (batch <= 0 || num_query <= 0) return cudaSuccess;
  if (k < 1 || k > num_ref || channels < 0) return cudaErrorInvalidValue;
  const size_t row_bytes = static_cast<size_t>(channels > 0 ? channels : 1) * sizeof(T);
  int tile_refs = static_cast<int>(kSharedBytes / row_bytes);
  if (tile_refs > kMaxTileRefs) tile_refs = kMaxTileRefs;
  const size_t shared = tile_refs > 0 ? static_cast<size_t>(tile_refs) * row_bytes : 0;
  dim3 blocks((num_query + kThreadsPerBlock - 1) / kThreadsPerBlock, batch);
  knn_kernel<T><<<blocks, kThreadsPerBlock, shared, stream>>>(num_query, num_ref, channels, k, tile_refs, query,
                                                               ref, idx, dist);
  return cudaGetLastError();
}

}  // namespace

cudaError_t knn_launcher_f32(int batch, int num_query, int num_ref, int channels, int k, const float *query,
                             const float *ref, int64_t *idx, float *dist, cudaStream_t stream) {
  return launch<float>(batch, num_query, num_ref, channels, k, query, ref, idx, dist, stream);
}

cudaError_t knn_launcher_f64(int batch, int num_query, int num_ref, int channels, int k, const double *query,
                             const double *ref, int64_t *idx, double *dist, cudaStream_t stream) {
  return launch<double>(batch, num_query, num_ref, channels, k, query, ref, idx, dist, stream);
}
