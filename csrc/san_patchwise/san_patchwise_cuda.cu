// Fused SAN patchwise attention, CUDA kernels (float32, float64).
//
// Straightforward, correct-first kernels (not yet run or tuned on a GPU), one thread per
// (n, pixel q) in all four ops:
//   forward:        h = weight1 @ a + bias1 streamed over gamma's CA input channels (each
//                   read from u1 / u2 at its tap's source), z = relu(h), then per conv2
//                   row (j, tap k) its weight and the aggregation of channels c = j mod Cw;
//   backward:       recomputes z, then the aggregation and conv2 backward per row (atomics
//                   into grad value and the parameters), then gamma's first layer
//                   (atomics into grad u2 and the parameters; grad u1 at q is the thread's);
//   moments (+ bwd): the sums of h and h^2 (double atomics); the backward is the first
//                   layer's with dh = g0 + 2 g1 h.
// Per-thread arrays hold the M hidden units: M <= kMaxHidden. Atomics make the CUDA
// gradients order-dependent in the last bits (the CPU kernels are deterministic).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "lsa/cuda_utils.cuh"
#include "san_patchwise.h"

namespace lsa {
namespace san_patchwise {
namespace {

constexpr int kMaxHidden = 256;

template <typename T>
struct Args {
  const T *u1, *u2, *v, *s1, *t1, *w1, *b1, *w2, *b2;
  int64_t n, r, ca, m, cw, c, h, w, k, d, p, mode;
};

template <typename T>
struct Grads {
  T *du1, *du2, *dv, *ds1, *dt1, *dw1, *db1, *dw2, *db2;
};

// Source pixel (flattened) of tap kk for pixel q, or -1 (zero padding).
template <typename T>
__device__ __forceinline__ int64_t tap_source(const Args<T>& a, int64_t q, int64_t kk) {
  const int64_t r = san_source<int64_t>(q / a.w - a.p + (kk / a.k) * a.d, a.h, a.mode);
  const int64_t c = san_source<int64_t>(q % a.w - a.p + (kk % a.k) * a.d, a.w, a.mode);
  return (r < 0 || c < 0) ? -1 : r * a.w + c;
}

// gamma's input channel ci at (n, q): u1[ci, q] for ci < R, else u2[c, source of tap kk]
// for ci = R + c * K + kk (0 for zero padding). *src: the source pixel, or q for ci < R.
template <typename T>
__device__ __forceinline__ T gamma_input(const Args<T>& a, int64_t n, int64_t q, int64_t ci,
                                         int64_t* src) {
  const int64_t HW = a.h * a.w, K = a.k * a.k;
  if (ci < a.r) {
    *src = q;
    return a.u1[(n * a.r + ci) * HW + q];
  }
  const int64_t c = (ci - a.r) / K;
  *src = tap_source(a, q, (ci - a.r) % K);
  return *src >= 0 ? a.u2[(n * a.r + c) * HW + *src] : T(0);
}

// h[m] = (bias1[m]) + weight1[m] . relu(s1 * t + t1) over gamma's input channels.
template <typename T>
__device__ void hidden(const Args<T>& a, int64_t n, int64_t q, T* h) {
  for (int64_t m = 0; m < a.m; ++m) h[m] = a.b1 ? a.b1[m] : T(0);
  for (int64_t ci = 0; ci < a.ca; ++ci) {
    int64_t src;
    const T act = max(a.s1[ci] * gamma_input(a, n, q, ci, &src) + a.t1[ci], T(0));
    if (act == T(0)) continue;
    for (int64_t m = 0; m < a.m; ++m) h[m] += a.w1[m * a.ca + ci] * act;
  }
}

// conv2 row o: bias2[o] + weight2[o] . z
template <typename T>
__device__ __forceinline__ T conv2_row(const Args<T>& a, int64_t o, const T* z) {
  T s = a.b2[o];
  for (int64_t m = 0; m < a.m; ++m) s += a.w2[o * a.m + m] * z[m];
  return s;
}

// Gradients of gamma's first layer at (n, q) given dh = d(loss)/d(weight1 @ a) [M].
template <typename T>
__device__ void layer1_backward(const Args<T>& a, int64_t n, int64_t q, const T* dh,
                                const Grads<T>& g) {
  const int64_t HW = a.h * a.w, K = a.k * a.k;
  for (int64_t ci = 0; ci < a.ca; ++ci) {
    int64_t src;
    const T t = gamma_input(a, n, q, ci, &src);
    const T act = max(a.s1[ci] * t + a.t1[ci], T(0));
    if (!(act > T(0))) continue;
    T da = 0;
    for (int64_t m = 0; m < a.m; ++m) {
      if (dh[m] != T(0)) atomicAdd(g.dw1 + m * a.ca + ci, dh[m] * act);
      da += a.w1[m * a.ca + ci] * dh[m];
    }
    atomicAdd(g.ds1 + ci, da * t);
    atomicAdd(g.dt1 + ci, da);
    const T dt = a.s1[ci] * da;
    if (ci < a.r)
      g.du1[(n * a.r + ci) * HW + q] += dt;  // only this thread writes pixel q of u1
    else if (src >= 0)
      atomicAdd(g.du2 + (n * a.r + (ci - a.r) / K) * HW + src, dt);
  }
}

#define LSA_PATCH_GRID_LOOP(i, n)                                                        \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

template <typename T>
__global__ void forward_kernel(const Args<T> a, T* __restrict__ y) {
  const int64_t HW = a.h * a.w, K = a.k * a.k;
  T z[kMaxHidden];
  LSA_PATCH_GRID_LOOP(i, a.n * HW) {
    const int64_t q = i % HW, n = i / HW;
    hidden(a, n, q, z);
    for (int64_t m = 0; m < a.m; ++m) z[m] = max(z[m], T(0));
    for (int64_t c = 0; c < a.c; ++c) y[(n * a.c + c) * HW + q] = T(0);
    for (int64_t j = 0; j < a.cw; ++j)
      for (int64_t kk = 0; kk < K; ++kk) {
        const int64_t src = tap_source(a, q, kk);
        if (src < 0) continue;
        const T wt = conv2_row(a, j * K + kk, z);
        for (int64_t c = j; c < a.c; c += a.cw)
          y[(n * a.c + c) * HW + q] += wt * a.v[(n * a.c + c) * HW + src];
      }
  }
}

template <typename T>
__global__ void backward_kernel(const Args<T> a, const T* __restrict__ gy, const Grads<T> g) {
  const int64_t HW = a.h * a.w, K = a.k * a.k;
  T z[kMaxHidden], dz[kMaxHidden];
  LSA_PATCH_GRID_LOOP(i, a.n * HW) {
    const int64_t q = i % HW, n = i / HW;
    hidden(a, n, q, z);
    for (int64_t m = 0; m < a.m; ++m) {
      z[m] = max(z[m], T(0));
      dz[m] = 0;
    }
    for (int64_t j = 0; j < a.cw; ++j)
      for (int64_t kk = 0; kk < K; ++kk) {
        const int64_t src = tap_source(a, q, kk), o = j * K + kk;
        const T wt = conv2_row(a, o, z);
        T dw = 0;
        if (src >= 0)
          for (int64_t c = j; c < a.c; c += a.cw) {
            const int64_t base = (n * a.c + c) * HW;
            dw += gy[base + q] * a.v[base + src];
            atomicAdd(g.dv + base + src, wt * gy[base + q]);
          }
        atomicAdd(g.db2 + o, dw);
        for (int64_t m = 0; m < a.m; ++m) {
          atomicAdd(g.dw2 + o * a.m + m, dw * z[m]);
          dz[m] += a.w2[o * a.m + m] * dw;
        }
      }
    for (int64_t m = 0; m < a.m; ++m) {
      if (!(z[m] > T(0))) dz[m] = T(0);
      atomicAdd(g.db1 + m, dz[m]);
    }
    layer1_backward(a, n, q, dz, g);
  }
}

template <typename T>
__global__ void moments_kernel(const Args<T> a, double* __restrict__ out) {
  const int64_t HW = a.h * a.w;
  T h[kMaxHidden];
  LSA_PATCH_GRID_LOOP(i, a.n * HW) {
    hidden(a, i / HW, i % HW, h);
    for (int64_t m = 0; m < a.m; ++m) {
      atomicAdd(out + m, static_cast<double>(h[m]));
      atomicAdd(out + a.m + m, static_cast<double>(h[m]) * h[m]);
    }
  }
}

// grad (2, M) = [g0; g1]: dh = g0 + 2 g1 h.
template <typename T>
__global__ void moments_backward_kernel(const Args<T> a, const T* __restrict__ grad,
                                        const Grads<T> g) {
  const int64_t HW = a.h * a.w;
  T h[kMaxHidden];
  LSA_PATCH_GRID_LOOP(i, a.n * HW) {
    const int64_t q = i % HW, n = i / HW;
    hidden(a, n, q, h);
    for (int64_t m = 0; m < a.m; ++m) h[m] = grad[m] + T(2) * grad[a.m + m] * h[m];
    layer1_backward(a, n, q, h, g);
  }
}

#undef LSA_PATCH_GRID_LOOP

template <typename T>
Args<T> make_args(const SanGeometry& g, const Dims& d, const at::Tensor& u1, const at::Tensor& u2,
                  const at::Tensor* v, const at::Tensor& s1, const at::Tensor& t1,
                  const at::Tensor& w1, const at::Tensor* b1, const at::Tensor* w2,
                  const at::Tensor* b2) {
  auto ptr = [](const at::Tensor* t) { return t ? t->const_data_ptr<T>() : nullptr; };
  return {u1.const_data_ptr<T>(),
          u2.const_data_ptr<T>(),
          ptr(v),
          s1.const_data_ptr<T>(),
          t1.const_data_ptr<T>(),
          w1.const_data_ptr<T>(),
          ptr(b1),
          ptr(w2),
          ptr(b2),
          g.n,
          d.r,
          d.ca,
          d.m,
          d.cw,
          d.c,
          g.h,
          g.w,
          g.kh,
          g.dh,
          g.ph,
          g.mode};
}

void check_hidden(const char* fn, const Dims& d) {
  TORCH_CHECK(d.m <= kMaxHidden, fn, ": the CUDA kernels support up to ", kMaxHidden,
              " hidden channels, got M=", d.m);
}

// Grads<T> over the tensors of `out` in the order du1, du2, dv, ds1, dt1, dw1, db1, dw2,
// db2; `present` says which of the nine `out` holds (in order).
template <typename T>
Grads<T> grads_of(std::vector<at::Tensor>& out, std::initializer_list<int> present) {
  Grads<T> g{};
  T** slots[] = {&g.du1, &g.du2, &g.dv, &g.ds1, &g.dt1, &g.dw1, &g.db1, &g.dw2, &g.db2};
  size_t i = 0;
  for (int s : present) *slots[s] = out[i++].mutable_data_ptr<T>();
  return g;
}

at::Tensor forward_cuda(const at::Tensor& u1, const at::Tensor& u2, const at::Tensor& value,
                        const at::Tensor& scale1, const at::Tensor& shift1,
                        const at::Tensor& weight1, const at::Tensor& bias1,
                        const at::Tensor& weight2, const at::Tensor& bias2, int64_t kernel_size,
                        int64_t dilation, int64_t pad_mode) {
  const char* fn = "san_patchwise_forward";
  Dims d{};
  const SanGeometry g = check_inputs(fn, u1, u2, scale1, shift1, weight1, &bias1, &weight2, &bias2,
                                     &value, nullptr, kernel_size, dilation, pad_mode, &d);
  check_hidden(fn, d);
  const c10::cuda::CUDAGuard guard(u1.device());
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous(), v = value.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous(), w1 = weight1.contiguous();
  const at::Tensor b1 = bias1.contiguous(), w2 = weight2.contiguous(), b2 = bias2.contiguous();
  at::Tensor y = at::empty({g.n, d.c, g.h, g.w}, value.options());
  const int64_t total = g.n * g.h * g.w;
  if (total == 0) return y;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_patchwise_forward_cuda", [&] {
    const auto a = make_args<scalar_t>(g, d, x1, x2, &v, s1, t1, w1, &b1, &w2, &b2);
    forward_kernel<scalar_t>
        <<<num_blocks(total), kThreads, 0, stream>>>(a, y.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::vector<at::Tensor> backward_cuda(const at::Tensor& grad_output, const at::Tensor& u1,
                                      const at::Tensor& u2, const at::Tensor& value,
                                      const at::Tensor& scale1, const at::Tensor& shift1,
                                      const at::Tensor& weight1, const at::Tensor& bias1,
                                      const at::Tensor& weight2, const at::Tensor& bias2,
                                      int64_t kernel_size, int64_t dilation, int64_t pad_mode) {
  const char* fn = "san_patchwise_backward";
  Dims d{};
  const SanGeometry g = check_inputs(fn, u1, u2, scale1, shift1, weight1, &bias1, &weight2, &bias2,
                                     &value, &grad_output, kernel_size, dilation, pad_mode, &d);
  check_hidden(fn, d);
  const c10::cuda::CUDAGuard guard(u1.device());
  const at::Tensor gy = grad_output.contiguous(), x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor v = value.contiguous(), s1 = scale1.contiguous(), t1 = shift1.contiguous();
  const at::Tensor w1 = weight1.contiguous(), b1 = bias1.contiguous();
  const at::Tensor w2 = weight2.contiguous(), b2 = bias2.contiguous();
  std::vector<at::Tensor> out;
  for (const at::Tensor* t : {&x1, &x2, &v, &s1, &t1, &w1, &b1, &w2, &b2})
    out.push_back(at::zeros_like(*t));
  const int64_t total = g.n * g.h * g.w;
  if (total == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_patchwise_backward_cuda", [&] {
    const auto a = make_args<scalar_t>(g, d, x1, x2, &v, s1, t1, w1, &b1, &w2, &b2);
    backward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
        a, gy.const_data_ptr<scalar_t>(), grads_of<scalar_t>(out, {0, 1, 2, 3, 4, 5, 6, 7, 8}));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor moments_cuda(const at::Tensor& u1, const at::Tensor& u2, const at::Tensor& scale1,
                        const at::Tensor& shift1, const at::Tensor& weight1, int64_t kernel_size,
                        int64_t dilation, int64_t pad_mode) {
  const char* fn = "san_patchwise_moments";
  Dims d{};
  const SanGeometry g = check_inputs(fn, u1, u2, scale1, shift1, weight1, nullptr, nullptr, nullptr,
                                     nullptr, nullptr, kernel_size, dilation, pad_mode, &d);
  check_hidden(fn, d);
  const c10::cuda::CUDAGuard guard(u1.device());
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous(), w1 = weight1.contiguous();
  at::Tensor sums = at::zeros({2, d.m}, u1.options().dtype(at::kDouble));
  const int64_t total = g.n * g.h * g.w;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (total > 0) {
    AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_patchwise_moments_cuda", [&] {
      const auto a =
          make_args<scalar_t>(g, d, x1, x2, nullptr, s1, t1, w1, nullptr, nullptr, nullptr);
      moments_kernel<scalar_t>
          <<<num_blocks(total), kThreads, 0, stream>>>(a, sums.mutable_data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return sums.to(u1.scalar_type());
}

std::vector<at::Tensor> moments_backward_cuda(const at::Tensor& grad, const at::Tensor& u1,
                                              const at::Tensor& u2, const at::Tensor& scale1,
                                              const at::Tensor& shift1, const at::Tensor& weight1,
                                              int64_t kernel_size, int64_t dilation,
                                              int64_t pad_mode) {
  const char* fn = "san_patchwise_moments_backward";
  Dims d{};
  const SanGeometry g = check_inputs(fn, u1, u2, scale1, shift1, weight1, nullptr, nullptr, nullptr,
                                     nullptr, nullptr, kernel_size, dilation, pad_mode, &d);
  check_hidden(fn, d);
  check_float_tensor(fn, "grad", grad, 2);
  TORCH_CHECK(grad.size(0) == 2 && grad.size(1) == d.m, fn, ": grad must have shape (2, ", d.m,
              "), got ", grad.sizes());
  const c10::cuda::CUDAGuard guard(u1.device());
  const at::Tensor gr = grad.contiguous().to(u1.scalar_type());
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous(), w1 = weight1.contiguous();
  std::vector<at::Tensor> out;
  for (const at::Tensor* t : {&x1, &x2, &s1, &t1, &w1}) out.push_back(at::zeros_like(*t));
  const int64_t total = g.n * g.h * g.w;
  if (total == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_patchwise_moments_backward_cuda", [&] {
    const auto a =
        make_args<scalar_t>(g, d, x1, x2, nullptr, s1, t1, w1, nullptr, nullptr, nullptr);
    moments_backward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
        a, gr.const_data_ptr<scalar_t>(), grads_of<scalar_t>(out, {0, 1, 3, 4, 5}));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace san_patchwise
}  // namespace lsa

TORCH_LIBRARY_IMPL(lsa, CUDA, m) {
  m.impl("san_patchwise_forward", &lsa::san_patchwise::forward_cuda);
  m.impl("san_patchwise_backward", &lsa::san_patchwise::backward_cuda);
  m.impl("san_patchwise_moments", &lsa::san_patchwise::moments_cuda);
  m.impl("san_patchwise_moments_backward", &lsa::san_patchwise::moments_backward_cuda);
}
