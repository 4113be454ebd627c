// Torch binding of the exact kNN CUDA kernel (module pcdet.ops.knn.knn_cuda). Only this file sees torch; the
// kernel file takes raw pointers and the current CUDA stream.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "knn_kernel.h"

#define CHECK_CUDA_CONTIG(x)                                                          \
  TORCH_CHECK((x).is_cuda(), "knn_api.cpp: " #x " must be a CUDA tensor");           \
  TORCH_CHECK((x).is_contiguous(), "knn_api.cpp: " #x " must be contiguous")

// query (B, N, C), ref (B, M, C) float32 or float64; idx (B, N, k) int64 and dist (B, N, k) (query dtype) are
// filled with the k nearest references of every query, sorted by (distance, index).
void knn(at::Tensor query, at::Tensor ref, at::Tensor idx, at::Tensor dist) {
  CHECK_CUDA_CONTIG(query);
  CHECK_CUDA_CONTIG(ref);
  CHECK_CUDA_CONTIG(idx);
  CHECK_CUDA_CONTIG(dist);
  TORCH_CHECK(query.dim() == 3 && ref.dim() == 3 && idx.dim() == 3 && dist.dim() == 3,
              "knn_api.cpp: query, ref, idx, dist must be 3-D (B, N, C), (B, M, C), (B, N, k), (B, N, k)");
  TORCH_CHECK(query.size(0) == ref.size(0) && query.size(2) == ref.size(2),
              "knn_api.cpp: query and ref differ in batch size or channel count");
  TORCH_CHECK(idx.sizes() == dist.sizes() && idx.size(0) == query.size(0) && idx.size(1) == query.size(1),
              "knn_api.cpp: idx and dist must be (B, N, k)");
  TORCH_CHECK(query.scalar_type() == ref.scalar_type() && dist.scalar_type() == query.scalar_type(),
              "knn_api.cpp: query, ref and dist must share one dtype");
  TORCH_CHECK(idx.scalar_type() == at::kLong, "knn_api.cpp: idx must be int64");
  const int64_t k = idx.size(2);
  TORCH_CHECK(k >= 1 && k <= ref.size(1), "knn_api.cpp: need 1 <= k <= M, got k=", k, ", M=", ref.size(1));

  const at::cuda::CUDAGuard guard(query.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int batch = static_cast<int>(query.size(0)), num_query = static_cast<int>(query.size(1));
  const int num_ref = static_cast<int>(ref.size(1)), channels = static_cast<int>(query.size(2));
  cudaError_t err;
  if (query.scalar_type() == at::kFloat) {
    err = knn_launcher_f32(batch, num_query, num_ref, channels, static_cast<int>(k), query.data_ptr<float>(),
                           ref.data_ptr<float>(), idx.data_ptr<int64_t>(), dist.data_ptr<float>(), stream);
  } else if (query.scalar_type() == at::kDouble) {
    err = knn_launcher_f64(batch, num_query, num_ref, channels, static_cast<int>(k), query.data_ptr<double>(),
                           ref.data_ptr<double>(), idx.data_ptr<int64_t>(), dist.data_ptr<double>(), stream);
  } else {
    TORCH_CHECK(false, "knn_api.cpp: only float32 and float64 are supported, got ", query.scalar_type());
  }
  TORCH_CHECK(err == cudaSuccess, "knn_api.cpp: knn kernel launch failed: ", cudaGetErrorString(err));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("knn", &knn, "knn(query (B,N,C), ref (B,M,C), idx (B,N,k) int64 out, dist (B,N,k) out)");
}
