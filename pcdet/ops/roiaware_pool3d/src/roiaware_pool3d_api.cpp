// Torch binding of the points-in-boxes CUDA kernel (module pcdet.ops.roiaware_pool3d.roiaware_pool3d_cuda).
// Only this file sees torch; the kernel file takes raw pointers and the current CUDA stream.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "points_in_boxes_kernel.h"

#define CHECK_CUDA_TENSOR(x, dtype)                                                              \
  TORCH_CHECK((x).is_cuda(), "roiaware_pool3d_api.cpp: " #x " must be a CUDA tensor");          \
  TORCH_CHECK((x).is_contiguous(), "roiaware_pool3d_api.cpp: " #x " must be contiguous");       \
  TORCH_CHECK((x).scalar_type() == (dtype), "roiaware_pool3d_api.cpp: " #x " has the wrong dtype")

// boxes (B, M, 7) float32, pts (B, N, 3) float32, box_idx_of_points (B, N) int32 pre-filled with -1.
void points_in_boxes_gpu(at::Tensor boxes, at::Tensor pts, at::Tensor box_idx_of_points) {
  CHECK_CUDA_TENSOR(boxes, at::kFloat);
  CHECK_CUDA_TENSOR(pts, at::kFloat);
  CHECK_CUDA_TENSOR(box_idx_of_points, at::kInt);
  TORCH_CHECK(boxes.dim() == 3 && boxes.size(2) == 7, "roiaware_pool3d_api.cpp: boxes must be (B, M, 7)");
  TORCH_CHECK(pts.dim() == 3 && pts.size(2) == 3, "roiaware_pool3d_api.cpp: pts must be (B, N, 3)");
  TORCH_CHECK(boxes.size(0) == pts.size(0) && box_idx_of_points.size(0) == pts.size(0) &&
                  box_idx_of_points.size(1) == pts.size(1),
              "roiaware_pool3d_api.cpp: batch / point counts of boxes, pts and box_idx_of_points differ");
  const at::cuda::CUDAGuard guard(pts.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  cudaError_t err = points_in_boxes_launcher(static_cast<int>(pts.size(0)), static_cast<int>(boxes.size(1)),
                                             static_cast<int>(pts.size(1)), boxes.data_ptr<float>(),
                                             pts.data_ptr<float>(), box_idx_of_points.data_ptr<int>(), stream);
  TORCH_CHECK(err == cudaSuccess, "roiaware_pool3d_api.cpp: points_in_boxes kernel launch failed: ",
              cudaGetErrorString(err));
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("points_in_boxes_gpu", &points_in_boxes_gpu,
        "points_in_boxes_gpu(boxes (B,M,7) f32, pts (B,N,3) f32, out (B,N) i32 filled with -1)");
}
