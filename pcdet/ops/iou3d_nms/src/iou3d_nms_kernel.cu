// CUDA kernels: rotated BEV / 3D IoU and the NMS suppression mask of LiDAR boxes. See iou3d_nms_kernel.h.
#include "iou3d_nms_kernel.h"

namespace {

constexpr int kMaxVerts = 16;  // a rectangle clipped by 4 half-planes has at most 8 vertices

__device__ inline void box_corners(const float *b, double *xs, double *ys) {
  // LiDAR box -> BEV [x, y, dx, dy, heading]; corners counter-clockwise
  const double c = cos((double)b[6]), s = sin((double)b[6]);
  const double hx = 0.5 * b[3], hy = 0.5 * b[4];
  const double lx[4] = {hx, hx, -hx, -hx};
  const double ly[4] = {-hy, hy, hy, -hy};
  for (int k = 0; k < 4; ++k) {
    xs[k] = b[0] + lx[k] * c - ly[k] * s;
    ys[k] = b[1] + lx[k] * s + ly[k] * c;
  }
}

__device__ inline int clip_half_plane(const double *px, const double *py, int n, double ex0, double ey0,
                                      double ex1, double ey1, double *ox, double *oy) {
  // keep the part of the polygon left of the directed edge e0 -> e1
  int m = 0;
  const double ux = ex1 - ex0, uy = ey1 - ey0;
  for (int i = 0; i < n; ++i) {
    const int j = (i + 1 < n) ? i + 1 : 0;
    const double da = ux * (py[i] - ey0) - uy * (px[i] - ex0);
    const double db = ux * (py[j] - ey0) - uy * (px[j] - ex0);
    if (da >= 0.0) {
      ox[m] = px[i];
      oy[m] = py[i];
      ++m;
    }
    if ((da > 0.0 && db < 0.0) || (da < 0.0 && db > 0.0)) {
      const double inv = 1.0 / (db - da);
      ox[m] = (px[i] * db - px[j] * da) * inv;
      oy[m] = (py[i] * db - py[j] * da) * inv;
      ++m;
    }
  }
  return m;
}

__device__ double box_inter_area(const float *a, const float *b) {
  if (a[3] <= 0.f || a[4] <= 0.f || b[3] <= 0.f || b[4] <= 0.f) return 0.0;
  if (a[0] == b[0] && a[1] == b[1] && a[3] == b[3] && a[4] == b[4] && a[6] == b[6])
    return (double)a[3] * a[4];  // identical boxes: IoU exactly 1
  const double ra = 0.5 * sqrt((double)a[3] * a[3] + (double)a[4] * a[4]);
  const double rb = 0.5 * sqrt((double)b[3] * b[3] + (double)b[4] * b[4]);
  const double ddx = (double)a[0] - b[0], ddy = (double)a[1] - b[1];
  if (ddx * ddx + ddy * ddy >= (ra + rb) * (ra + rb)) return 0.0;
  double px[kMaxVerts], py[kMaxVerts], qx[kMaxVerts], qy[kMaxVerts], bx[4], by[4];
  box_corners(a, px, py);
  box_corners(b, bx, by);
  int n = 4;
  double *cx = px, *cy = py, *nx = qx, *ny = qy;
  for (int k = 0; k < 4; ++k) {
    const int k1 = (k < 3) ? k + 1 : 0;
    n = clip_half_plane(cx, cy, n, bx[k], by[k], bx[k1], by[k1], nx, ny);
    if (n < 3) return 0.0;
    double *t = cx; cx = nx; nx = t;
    t = cy; cy = ny; ny = t;
  }
  double acc = 0.0;
  for (int i = 0; i < n; ++i) {
    const int j = (i + 1 < n) ? i + 1 : 0;
    acc += cx[i] * cy[j] - cx[j] * cy[i];
  }
  const double area = fabs(acc) * 0.5;
  return fmin(area, fmin((double)a[3] * a[4], (double)b[3] * b[4]));
}

__device__ inline double iou_bev(const float *a, const float *b) {
  const double inter = box_inter_area(a, b);
  const double uni = (double)a[3] * a[4] + (double)b[3] * b[4] - inter;
  return (inter > 0.0 && uni > 0.0) ? inter / uni : 0.0;
}

__device__ inline double iou_aligned(const float *a, const float *b) {
  const double w = fmin(a[0] + 0.5 * a[3], b[0] + 0.5 * b[3]) - fmax(a[0] - 0.5 * a[3], b[0] - 0.5 * b[3]);
  const double h = fmin(a[1] + 0.5 * a[4], b[1] + 0.5 * b[4]) - fmax(a[1] - 0.5 * a[4], b[1] - 0.5 * b[4]);
  if (w <= 0.0 || h <= 0.0) return 0.0;
  const double inter = w * h;
  const double uni = (double)a[3] * a[4] + (double)b[3] * b[4] - inter;
  return uni > 0.0 ? inter / uni : 0.0;
}

// mode 0: BEV intersection area, 1: BEV IoU, 2: 3D IoU
__global__ void pairwise_kernel(int n, int m, const float *__restrict__ boxes_a, const float *__restrict__ boxes_b,
                                float *__restrict__ out, int mode) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= m) return;
  // grid-stride over rows: gridDim.y is capped at 65535
  for (int i = blockIdx.y; i < n; i += gridDim.y) {
    const float *a = boxes_a + (size_t)i * 7;
    const float *b = boxes_b + (size_t)j * 7;
    double v = 0.0;
    if (mode == 0) {
      v = box_inter_area(a, b);
    } else if (mode == 1) {
      v = iou_bev(a, b);
    } else {
      const double h = fmin(a[2] + 0.5 * a[5], b[2] + 0.5 * b[5]) - fmax(a[2] - 0.5 * a[5], b[2] - 0.5 * b[5]);
      if (h > 0.0) {
        const double inter = box_inter_area(a, b) * h;
        const double uni = (double)a[3] * a[4] * a[5] + (double)b[3] * b[4] * b[5] - inter;
        if (inter > 0.0 && uni > 0.0) v = inter / uni;
      }
    }
    out[(size_t)i * m + j] = (float)v;
  }
}

__global__ void nms_mask_kernel(int n, const float *__restrict__ boxes, double thresh, bool rotated,
                                unsigned long long *__restrict__ mask) {
  const int row_block = blockIdx.y, col_block = blockIdx.x;
  if (row_block > col_block) return;  // only boxes after the current one can be suppressed by it
  const int row_size = min(n - row_block * IOU3D_NMS_THREADS, IOU3D_NMS_THREADS);
  const int col_size = min(n - col_block * IOU3D_NMS_THREADS, IOU3D_NMS_THREADS);
  __shared__ float block_boxes[IOU3D_NMS_THREADS * 7];
  if (threadIdx.x < col_size) {
    for (int k = 0; k < 7; ++k)
      block_boxes[threadIdx.x * 7 + k] = boxes[(IOU3D_NMS_THREADS * col_block + threadIdx.x) * 7 + k];
  }
  __syncthreads();
  if (threadIdx.x < row_size) {
    const int cur = IOU3D_NMS_THREADS * row_block + threadIdx.x;
    const float *cur_box = boxes + cur * 7;
    unsigned long long bits = 0;
    const int start = (row_block == col_block) ? threadIdx.x + 1 : 0;
    for (int k = start; k < col_size; ++k) {
      const double iou = rotated ? iou_bev(cur_box, block_boxes + k * 7) : iou_aligned(cur_box, block_boxes + k * 7);
      if (iou > thresh) bits |= 1ULL << k;
    }
    const int col_blocks = (n + IOU3D_NMS_THREADS - 1) / IOU3D_NMS_THREADS;
    mask[(size_t)cur * col_blocks + col_block] = bits;
  }
}

cudaError_t launch_pairwise(int n, int m, const float *a, const float *b, float *out, int mode, cudaStream_t s) {
  if (n == 0 || m == 0) return cudaSuccess;
  const dim3 threads(256);
  const dim3 blocks((m + 255) / 256, n < 65535 ? n : 65535);
  pairwise_kernel<<<blocks, threads, 0, s>>>(n, m, a, b, out, mode);
  return cudaGetLastError();
}

}  // namespace

cudaError_t boxes_overlap_bev_launcher(int n, int m, const float *a, const float *b, float *out, cudaStream_t s) {
  return launch_pairwise(n, m, a, b, out, 0, s);
}

cudaError_t boxes_iou_bev_launcher(int n, int m, const float *a, const float *b, float *out, cudaStream_t s) {
  return launch_pairwise(n, m, a, b, out, 1, s);
}

cudaError_t boxes_iou3d_launcher(int n, int m, const float *a, const float *b, float *out, cudaStream_t s) {
  return launch_pairwise(n, m, a, b, out, 2, s);
}

cudaError_t nms_mask_launcher(int n, const float *boxes, double thresh, bool rotated, unsigned long long *mask,
                              cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  const int col_blocks = (n + IOU3D_NMS_THREADS - 1) / IOU3D_NMS_THREADS;
  // rows of the lower-left tiles are never written by the kernel; zero the whole mask first
  cudaError_t err = cudaMemsetAsync(mask, 0, sizeof(unsigned long long) * (size_t)n * col_blocks, s);
  if (err != cudaSuccess) return err;
  const dim3 blocks(col_blocks, col_blocks);
  nms_mask_kernel<<<blocks, IOU3D_NMS_THREADS, 0, s>>>(n, boxes, thresh, rotated, mask);
  return cudaGetLastError();
}
