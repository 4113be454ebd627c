// torch binding of the rotated IoU / NMS kernels: PYBIND11 module `iou3d_nms_cuda` (OpenPCDet's function names).
// Called from pcdet/ops/iou3d_nms/iou3d_nms_utils.py for CUDA tensors only; CPU tensors never reach this file.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "iou3d_nms_kernel.h"

#define CHECK_BOXES(x)                                                                                   \
  TORCH_CHECK((x).is_cuda(), "iou3d_nms_api.cpp: " #x " must be a CUDA tensor");                        \
  TORCH_CHECK((x).is_contiguous(), "iou3d_nms_api.cpp: " #x " must be contiguous");                     \
  TORCH_CHECK((x).scalar_type() == at::kFloat, "iou3d_nms_api.cpp: " #x " must be float32");            \
  TORCH_CHECK((x).dim() == 2 && (x).size(1) == 7, "iou3d_nms_api.cpp: " #x " must have shape (N, 7)")

#define CHECK_CUDA_ERR(err) \
  TORCH_CHECK((err) == cudaSuccess, "iou3d_nms_api.cpp: CUDA error: ", cudaGetErrorString(err))

namespace {

using Launcher = cudaError_t (*)(int, int, const float *, const float *, float *, cudaStream_t);

int pairwise(at::Tensor boxes_a, at::Tensor boxes_b, at::Tensor ans, Launcher launcher) {
  CHECK_BOXES(boxes_a);
  CHECK_BOXES(boxes_b);
  TORCH_CHECK(ans.is_cuda() && ans.is_contiguous() && ans.scalar_type() == at::kFloat &&
                  ans.size(0) == boxes_a.size(0) && ans.size(1) == boxes_b.size(0),
              "iou3d_nms_api.cpp: ans must be a contiguous float32 CUDA tensor of shape (N, M)");
  const c10::cuda::CUDAGuard guard(boxes_a.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  CHECK_CUDA_ERR(launcher(boxes_a.size(0), boxes_b.size(0), boxes_a.data_ptr<float>(), boxes_b.data_ptr<float>(),
                          ans.data_ptr<float>(), stream));
  return 1;
}

int nms_impl(at::Tensor boxes, at::Tensor keep, double thresh, bool rotated) {
  // boxes (N, 7) sorted by descending score; keep: CPU int64 (N,) receives kept positions; returns their count
  CHECK_BOXES(boxes);
  TORCH_CHECK(!keep.is_cuda() && keep.scalar_type() == at::kLong && keep.is_contiguous() &&
                  keep.numel() >= boxes.size(0),
              "iou3d_nms_api.cpp: keep must be a contiguous CPU int64 tensor with at least N elements");
  const int n = boxes.size(0);
  if (n == 0) return 0;
  const int col_blocks = (n + IOU3D_NMS_THREADS - 1) / IOU3D_NMS_THREADS;
  const c10::cuda::CUDAGuard guard(boxes.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  at::Tensor mask = at::empty({n, col_blocks}, boxes.options().dtype(at::kLong));
  CHECK_CUDA_ERR(nms_mask_launcher(n, boxes.data_ptr<float>(), thresh, rotated,
                                   reinterpret_cast<unsigned long long *>(mask.data_ptr<int64_t>()), stream));
  at::Tensor mask_cpu = mask.to(at::kCPU);  // synchronises with the stream
  const unsigned long long *m = reinterpret_cast<const unsigned long long *>(mask_cpu.data_ptr<int64_t>());
  // greedy pass on the host: a box survives unless a kept, higher-scored box suppressed it
  std::vector<unsigned long long> removed(col_blocks, 0ULL);
  int64_t *keep_ptr = keep.data_ptr<int64_t>();
  int num = 0;
  for (int i = 0; i < n; ++i) {
    const int blk = i / IOU3D_NMS_THREADS, bit = i % IOU3D_NMS_THREADS;
    if (removed[blk] & (1ULL << bit)) continue;
    keep_ptr[num++] = i;
    const unsigned long long *row = m + (size_t)i * col_blocks;
    for (int b = blk; b < col_blocks; ++b) removed[b] |= row[b];
  }
  return num;
}

}  // namespace

int boxes_overlap_bev_gpu(at::Tensor a, at::Tensor b, at::Tensor ans) {
  return pairwise(a, b, ans, boxes_overlap_bev_launcher);
}
int boxes_iou_bev_gpu(at::Tensor a, at::Tensor b, at::Tensor ans) { return pairwise(a, b, ans, boxes_iou_bev_launcher); }
int boxes_iou3d_gpu(at::Tensor a, at::Tensor b, at::Tensor ans) { return pairwise(a, b, ans, boxes_iou3d_launcher); }
int nms_gpu(at::Tensor boxes, at::Tensor keep, double thresh) { return nms_impl(boxes, keep, thresh, true); }
int nms_normal_gpu(at::Tensor boxes, at::Tensor keep, double thresh) { return nms_impl(boxes, keep, thresh, false); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("boxes_overlap_bev_gpu", &boxes_overlap_bev_gpu, "rotated BEV intersection area (N, M)");
  m.def("boxes_iou_bev_gpu", &boxes_iou_bev_gpu, "rotated BEV IoU (N, M)");
  m.def("boxes_iou3d_gpu", &boxes_iou3d_gpu, "rotated 3D IoU (N, M)");
  m.def("nms_gpu", &nms_gpu, "rotated BEV NMS of score-sorted boxes");
  m.def("nms_normal_gpu", &nms_normal_gpu, "axis-aligned BEV NMS of score-sorted boxes");
}
