// Torch binding of the RoI point selection CUDA kernel (module pcdet.ops.roipoint_pool3d.roipoint_pool3d_cuda).
// Only this file sees torch; the kernel file takes raw pointers and the current CUDA stream.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "roipoint_pool3d_kernel.h"

#define CHECK_CUDA_TENSOR(x, dtype)                                                             \
  TORCH_CHECK((x).is_cuda(), "roipoint_pool3d_api.cpp: " #x " must be a CUDA tensor");         \
  TORCH_CHECK((x).is_contiguous(), "roipoint_pool3d_api.cpp: " #x " must be contiguous");      \
  TORCH_CHECK((x).scalar_type() == (dtype), "roipoint_pool3d_api.cpp: " #x " has the wrong dtype")

// mask (B, M, N) bool, pts_idx (B, M, S) int32 out, empty_flag (B, M) int32 zero-filled.
void select_points(at::Tensor mask, at::Tensor pts_idx, at::Tensor empty_flag) {
  CHECK_CUDA_TENSOR(mask, at::kBool);
  CHECK_CUDA_TENSOR(pts_idx, at::kInt);
  CHECK_CUDA_TENSOR(empty_flag, at::kInt);
  TORCH_CHECK(mask.dim() == 3 && pts_idx.dim() == 3 && empty_flag.dim() == 2,
              "roipoint_pool3d_api.cpp: mask must be (B, M, N), pts_idx (B, M, S), empty_flag (B, M)");
  TORCH_CHECK(pts_idx.size(0) == mask.size(0) && pts_idx.size(1) == mask.size(1) &&
                  empty_flag.size(0) == mask.size(0) && empty_flag.size(1) == mask.size(1),
              "roipoint_pool3d_api.cpp: batch / box counts of mask, pts_idx and empty_flag differ");
  TORCH_CHECK(pts_idx.size(2) >= 1, "roipoint_pool3d_api.cpp: need at least one sampled point per box");
  const at::cuda::CUDAGuard guard(mask.device());
  cudaError_t err = roipoint_select_launcher(
      static_cast<int>(mask.size(0)), static_cast<int>(mask.size(1)), static_cast<int>(mask.size(2)),
      static_cast<int>(pts_idx.size(2)), reinterpret_cast<const unsigned char *>(mask.data_ptr<bool>()),
      pts_idx.data_ptr<int>(), empty_flag.data_ptr<int>(), at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "roipoint_pool3d_api.cpp: select_points kernel launch failed: ",
              cudaGetErrorString(err));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("select_points", &select_points,
        "select_points(mask (B,M,N) bool, pts_idx (B,M,S) i32 out, empty_flag (B,M) i32 = 0)");
}
