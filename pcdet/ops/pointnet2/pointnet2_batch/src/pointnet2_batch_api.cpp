// Torch binding of the batched PointNet++ CUDA kernels (module pcdet.ops.pointnet2.pointnet2_batch.
// pointnet2_batch_cuda). Only this file sees torch; the kernel file takes raw pointers and the current CUDA stream.
// Outputs are allocated (and zero-filled where stated) by pointnet2_utils.py.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "pointnet2_batch_kernel.h"

namespace {

void check_tensor(const at::Tensor &t, const char *name, at::ScalarType dtype, int64_t dim) {
  TORCH_CHECK(t.is_cuda(), "pointnet2_batch_api.cpp: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), "pointnet2_batch_api.cpp: ", name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dtype, "pointnet2_batch_api.cpp: ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == dim, "pointnet2_batch_api.cpp: ", name, " must be ", dim, "-D, got ", t.sizes());
}

void check_xyz(const at::Tensor &t, const char *name) {
  check_tensor(t, name, at::kFloat, 3);
  TORCH_CHECK(t.size(2) == 3, "pointnet2_batch_api.cpp: ", name, " must be (B, N, 3), got ", t.sizes());
}

void check_launch(cudaError_t err, const char *what) {
  TORCH_CHECK(err == cudaSuccess, "pointnet2_batch_api.cpp: ", what, " kernel launch failed: ",
              cudaGetErrorString(err));
}

int as_int(int64_t v) { return static_cast<int>(v); }

}  // namespace

// xyz (B, N, 3) f32, temp (B, N) f32 filled with 1e10, idx (B, npoint) i32 out.
void furthest_point_sampling(at::Tensor xyz, at::Tensor temp, at::Tensor idx) {
  check_xyz(xyz, "xyz");
  check_tensor(temp, "temp", at::kFloat, 2);
  check_tensor(idx, "idx", at::kInt, 2);
  TORCH_CHECK(temp.size(0) == xyz.size(0) && temp.size(1) == xyz.size(1) && idx.size(0) == xyz.size(0),
              "pointnet2_batch_api.cpp: temp must be (B, N) and idx (B, npoint)");
  TORCH_CHECK(xyz.size(1) > 0 || idx.size(1) == 0, "pointnet2_batch_api.cpp: furthest_point_sampling needs N >= 1");
  const at::cuda::CUDAGuard guard(xyz.device());
  check_launch(furthest_point_sampling_launcher(as_int(xyz.size(0)), as_int(xyz.size(1)), as_int(idx.size(1)),
                                                xyz.data_ptr<float>(), temp.data_ptr<float>(), idx.data_ptr<int>(),
                                                at::cuda::getCurrentCUDAStream()),
               "furthest_point_sampling");
}

// new_xyz (B, M, 3) f32, xyz (B, N, 3) f32, idx (B, M, nsample) i32 zero-filled.
void ball_query(at::Tensor new_xyz, at::Tensor xyz, double radius, at::Tensor idx) {
  check_xyz(new_xyz, "new_xyz");
  check_xyz(xyz, "xyz");
  check_tensor(idx, "idx", at::kInt, 3);
  TORCH_CHECK(new_xyz.size(0) == xyz.size(0) && idx.size(0) == xyz.size(0) && idx.size(1) == new_xyz.size(1),
              "pointnet2_batch_api.cpp: idx must be (B, M, nsample) for new_xyz (B, M, 3) and xyz (B, N, 3)");
  const at::cuda::CUDAGuard guard(xyz.device());
  check_launch(ball_query_launcher(as_int(xyz.size(0)), as_int(xyz.size(1)), as_int(new_xyz.size(1)),
                                   static_cast<float>(radius), as_int(idx.size(2)), new_xyz.data_ptr<float>(),
                                   xyz.data_ptr<float>(), idx.data_ptr<int>(), at::cuda::getCurrentCUDAStream()),
               "ball_query");
}

// unknown (B, n, 3) f32, known (B, m, 3) f32, dist2 (B, n, 3) f32 out, idx (B, n, 3) i32 out.
void three_nn(at::Tensor unknown, at::Tensor known, at::Tensor dist2, at::Tensor idx) {
  check_xyz(unknown, "unknown");
  check_xyz(known, "known");
  check_xyz(dist2, "dist2");
  check_tensor(idx, "idx", at::kInt, 3);
  TORCH_CHECK(known.size(0) == unknown.size(0) && dist2.sizes() == unknown.sizes() && idx.sizes() == unknown.sizes(),
              "pointnet2_batch_api.cpp: dist2 and idx must be (B, n, 3) like unknown, known (B, m, 3)");
  const at::cuda::CUDAGuard guard(unknown.device());
  check_launch(three_nn_launcher(as_int(unknown.size(0)), as_int(unknown.size(1)), as_int(known.size(1)),
                                 unknown.data_ptr<float>(), known.data_ptr<float>(), dist2.data_ptr<float>(),
                                 idx.data_ptr<int>(), at::cuda::getCurrentCUDAStream()),
               "three_nn");
}

// features (B, C, N) f32/f64, idx (B, K) i32, out (B, C, K).
void gather_points(at::Tensor features, at::Tensor idx, at::Tensor out) {
  check_tensor(features, "features", features.scalar_type(), 3);
  check_tensor(idx, "idx", at::kInt, 2);
  check_tensor(out, "out", features.scalar_type(), 3);
  TORCH_CHECK(idx.size(0) == features.size(0) && out.size(0) == features.size(0) &&
                  out.size(1) == features.size(1) && out.size(2) == idx.size(1),
              "pointnet2_batch_api.cpp: out must be (B, C, K) for features (B, C, N) and idx (B, K)");
  const at::cuda::CUDAGuard guard(features.device());
  const int b = as_int(features.size(0)), c = as_int(features.size(1)), n = as_int(features.size(2));
  const int k = as_int(idx.size(1));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "gather_points", [&] {
    check_launch(gather_points_launcher(b, c, n, k, features.data_ptr<scalar_t>(), idx.data_ptr<int>(),
                                        out.data_ptr<scalar_t>(), stream), "gather_points");
  });
}

// grad_out (B, C, K) f32/f64, idx (B, K) i32, grad_features (B, C, N) zero-filled.
void gather_points_grad(at::Tensor grad_out, at::Tensor idx, at::Tensor grad_features) {
  check_tensor(grad_out, "grad_out", grad_out.scalar_type(), 3);
  check_tensor(idx, "idx", at::kInt, 2);
  check_tensor(grad_features, "grad_features", grad_out.scalar_type(), 3);
  TORCH_CHECK(idx.size(0) == grad_out.size(0) && grad_out.size(2) == idx.size(1) &&
                  grad_features.size(0) == grad_out.size(0) && grad_features.size(1) == grad_out.size(1),
              "pointnet2_batch_api.cpp: grad_out (B, C, K), idx (B, K), grad_features (B, C, N) disagree");
  const at::cuda::CUDAGuard guard(grad_out.device());
  const int b = as_int(grad_out.size(0)), c = as_int(grad_out.size(1)), k = as_int(grad_out.size(2));
  const int n = as_int(grad_features.size(2));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "gather_points_grad", [&] {
    check_launch(gather_points_grad_launcher(b, c, n, k, grad_out.data_ptr<scalar_t>(), idx.data_ptr<int>(),
                                             grad_features.data_ptr<scalar_t>(), stream), "gather_points_grad");
  });
}

// features (B, C, m) f32/f64, idx (B, n, 3) i32, weight (B, n, 3) features dtype, out (B, C, n).
void three_interpolate(at::Tensor features, at::Tensor idx, at::Tensor weight, at::Tensor out) {
  check_tensor(features, "features", features.scalar_type(), 3);
  check_tensor(idx, "idx", at::kInt, 3);
  check_tensor(weight, "weight", features.scalar_type(), 3);
  check_tensor(out, "out", features.scalar_type(), 3);
  TORCH_CHECK(idx.size(0) == features.size(0) && idx.size(2) == 3 && weight.sizes() == idx.sizes() &&
                  out.size(0) == features.size(0) && out.size(1) == features.size(1) && out.size(2) == idx.size(1),
              "pointnet2_batch_api.cpp: features (B, C, m), idx / weight (B, n, 3), out (B, C, n) disagree");
  const at::cuda::CUDAGuard guard(features.device());
  const int b = as_int(features.size(0)), c = as_int(features.size(1)), m = as_int(features.size(2));
  const int n = as_int(idx.size(1));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(features.scalar_type(), "three_interpolate", [&] {
    check_launch(three_interpolate_launcher(b, c, m, n, features.data_ptr<scalar_t>(), idx.data_ptr<int>(),
                                            weight.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), stream),
                 "three_interpolate");
  });
}

// grad_out (B, C, n) f32/f64, idx (B, n, 3) i32, weight (B, n, 3), grad_features (B, C, m) zero-filled.
void three_interpolate_grad(at::Tensor grad_out, at::Tensor idx, at::Tensor weight, at::Tensor grad_features) {
  check_tensor(grad_out, "grad_out", grad_out.scalar_type(), 3);
  check_tensor(idx, "idx", at::kInt, 3);
  check_tensor(weight, "weight", grad_out.scalar_type(), 3);
  check_tensor(grad_features, "grad_features", grad_out.scalar_type(), 3);
  TORCH_CHECK(idx.size(0) == grad_out.size(0) && idx.size(1) == grad_out.size(2) && idx.size(2) == 3 &&
                  weight.sizes() == idx.sizes() && grad_features.size(0) == grad_out.size(0) &&
                  grad_features.size(1) == grad_out.size(1),
              "pointnet2_batch_api.cpp: grad_out (B, C, n), idx / weight (B, n, 3), grad_features (B, C, m) disagree");
  const at::cuda::CUDAGuard guard(grad_out.device());
  const int b = as_int(grad_out.size(0)), c = as_int(grad_out.size(1)), n = as_int(grad_out.size(2));
  const int m = as_int(grad_features.size(2));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "three_interpolate_grad", [&] {
    check_launch(three_interpolate_grad_launcher(b, c, n, m, grad_out.data_ptr<scalar_t>(), idx.data_ptr<int>(),
                                                 weight.data_ptr<scalar_t>(), grad_features.data_ptr<scalar_t>(),
                                                 stream),
                 "three_interpolate_grad");
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("furthest_point_sampling", &furthest_point_sampling,
        "furthest_point_sampling(xyz (B,N,3) f32, temp (B,N) f32 = 1e10, idx (B,npoint) i32 out)");
  m.def("ball_query", &ball_query, "ball_query(new_xyz (B,M,3) f32, xyz (B,N,3) f32, radius, idx (B,M,S) i32 = 0)");
  m.def("three_nn", &three_nn, "three_nn(unknown (B,n,3) f32, known (B,m,3) f32, dist2 (B,n,3) out, idx (B,n,3) out)");
  m.def("gather_points", &gather_points, "gather_points(features (B,C,N), idx (B,K) i32, out (B,C,K))");
  m.def("gather_points_grad", &gather_points_grad,
        "gather_points_grad(grad_out (B,C,K), idx (B,K) i32, grad_features (B,C,N) = 0)");
  m.def("three_interpolate", &three_interpolate,
        "three_interpolate(features (B,C,m), idx (B,n,3) i32, weight (B,n,3), out (B,C,n))");
  m.def("three_interpolate_grad", &three_interpolate_grad,
        "three_interpolate_grad(grad_out (B,C,n), idx (B,n,3) i32, weight (B,n,3), grad_features (B,C,m) = 0)");
}
