// Fused SAN pairwise attention, CUDA kernels (float32, float64).
//
// Straightforward, correct-first kernels (not yet tuned on a GPU):
//   forward:        thread per (n, pixel, weight channel j); online softmax over the taps
//                   (first pass), then the aggregation of the channels c = j (mod Cw);
//   backward:       thread per (n, pixel, j); recomputes the MLP per tap, atomics for the
//                   scattered input gradients and the parameter gradients;
//   moments (+ bwd): thread per (n, pixel, tap); atomics into the (Cr + 1, Cr) sums
//                   (double) of a and a a^T.
// Per-thread arrays hold one tap's relation/hidden channels: Cr, M <= kMaxCh.
// Atomics make the CUDA gradients order-dependent in the last bits (the CPU kernels are
// deterministic).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "lsa/cuda_utils.cuh"
#include "san_fused.h"

namespace lsa {
namespace san_fused {
namespace {

constexpr int kMaxCh = 256;

template <typename T>
struct Args {
  const T *u1, *u2, *v, *s1, *t1, *w1, *b1, *w2, *b2;
  int64_t n, cr, m, cw, c, h, w, k, d, p, mode;
};

// Source pixel (flattened) of tap kk for pixel q, or -1 (zero padding).
template <typename T>
__device__ __forceinline__ int64_t source(const Args<T>& a, int64_t q, int64_t kk) {
  const int64_t r = san_source<int64_t>(q / a.w - a.p + (kk / a.k) * a.d, a.h, a.mode);
  const int64_t c = san_source<int64_t>(q % a.w - a.p + (kk % a.k) * a.d, a.w, a.mode);
  return (r < 0 || c < 0) ? -1 : r * a.w + c;
}

// rel[c] = r (relation) and act[c] = relu(s1 r + t1) for one (n, q, source).
template <typename T>
__device__ void relation(const Args<T>& a, int64_t n, int64_t q, int64_t src, T* rel, T* act) {
  const int64_t HW = a.h * a.w;
  for (int64_t c = 0; c < a.cr; ++c) {
    const int64_t base = (n * a.cr + c) * HW;
    const T r = a.u1[base + q] - (src >= 0 ? a.u2[base + src] : T(0));
    rel[c] = r;
    act[c] = max(a.s1[c] * r + a.t1[c], T(0));
  }
}

// Hidden unit m before its ReLU: b1[m] (if any) + w1[m] . act
template <typename T>
__device__ __forceinline__ T hidden(const Args<T>& a, int64_t m, const T* act) {
  T z = a.b1 ? a.b1[m] : T(0);
  for (int64_t c = 0; c < a.cr; ++c) z += a.w1[m * a.cr + c] * act[c];
  return z;
}

template <typename T>
__device__ T logit(const Args<T>& a, int64_t j, const T* act, T* zs) {
  T l = a.b2[j];
  for (int64_t m = 0; m < a.m; ++m) {
    const T z = max(hidden(a, m, act), T(0));
    if (zs) zs[m] = z;
    l += a.w2[j * a.m + m] * z;
  }
  return l;
}

// Online softmax statistics over the taps: max and sum of exp(l - max).
template <typename T>
__device__ void softmax_stats(const Args<T>& a, int64_t n, int64_t q, int64_t j, T* rel, T* act,
                              T* mx, T* sum) {
  T m = -INFINITY, s = 0;
  for (int64_t kk = 0; kk < a.k * a.k; ++kk) {
    relation(a, n, q, source(a, q, kk), rel, act);
    const T l = logit(a, j, act, static_cast<T*>(nullptr));
    if (l > m) {
      s = s * exp(m - l) + T(1);
      m = l;
    } else {
      s += exp(l - m);
    }
  }
  *mx = m;
  *sum = s;
}

// Grid-stride loop over `n` items with the kernel's `index_t` (the fused kernels' own; the
// templated ops use lsa/launch.h's functor launcher instead).
#define LSA_FUSED_GRID_LOOP(i, n)                                                        \
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<index_t>(blockDim.x) * gridDim.x)

template <typename T>
__global__ void forward_kernel(const Args<T> a, T* __restrict__ y) {
  using index_t = int64_t;
  const int64_t HW = a.h * a.w, total = a.n * HW * a.cw;
  T rel[kMaxCh], act[kMaxCh];
  LSA_FUSED_GRID_LOOP(i, total) {
    const int64_t j = i % a.cw, q = (i / a.cw) % HW, n = i / (a.cw * HW);
    T mx, sum;
    softmax_stats(a, n, q, j, rel, act, &mx, &sum);
    for (int64_t c = j; c < a.c; c += a.cw) y[(n * a.c + c) * HW + q] = T(0);
    for (int64_t kk = 0; kk < a.k * a.k; ++kk) {
      const int64_t src = source(a, q, kk);
      relation(a, n, q, src, rel, act);
      const T p = exp(logit(a, j, act, static_cast<T*>(nullptr)) - mx) / sum;
      if (src < 0) continue;
      for (int64_t c = j; c < a.c; c += a.cw)
        y[(n * a.c + c) * HW + q] += p * a.v[(n * a.c + c) * HW + src];
    }
  }
}

// Gradients through act[c] = relu(s1 rel + t1) (act[c] > 0) of one (n, q, tap), given da.
template <typename T>
__device__ void act_backward(const Args<T>& a, int64_t n, int64_t q, int64_t src, const T* rel,
                             int64_t c, T da, T* ds1, T* dt1, T* du1, T* du2) {
  atomicAdd(ds1 + c, da * rel[c]);
  atomicAdd(dt1 + c, da);
  const T dr = a.s1[c] * da;
  const int64_t base = (n * a.cr + c) * a.h * a.w;
  atomicAdd(du1 + base + q, dr);
  if (src >= 0) atomicAdd(du2 + base + src, -dr);
}

// Gradients of the first layer for one (n, q, tap), given dz (after the ReLU mask).
template <typename T>
__device__ void layer1_backward(const Args<T>& a, int64_t n, int64_t q, int64_t src, const T* rel,
                                const T* act, const T* dz, T* db1, T* dw1, T* ds1, T* dt1, T* du1,
                                T* du2) {
  for (int64_t m = 0; m < a.m; ++m) {
    if (dz[m] == T(0)) continue;
    if (db1) atomicAdd(db1 + m, dz[m]);
    for (int64_t c = 0; c < a.cr; ++c) atomicAdd(dw1 + m * a.cr + c, dz[m] * act[c]);
  }
  for (int64_t c = 0; c < a.cr; ++c) {
    if (!(act[c] > T(0))) continue;
    T da = 0;
    for (int64_t m = 0; m < a.m; ++m) da += a.w1[m * a.cr + c] * dz[m];
    act_backward(a, n, q, src, rel, c, da, ds1, dt1, du1, du2);
  }
}

template <typename T>
struct Grads {
  T *du1, *du2, *dv, *ds1, *dt1, *dw1, *db1, *dw2, *db2;
};

template <typename T>
__global__ void backward_kernel(const Args<T> a, const T* __restrict__ gy, const Grads<T> g) {
  using index_t = int64_t;
  const int64_t HW = a.h * a.w, total = a.n * HW * a.cw;
  T rel[kMaxCh], act[kMaxCh], zs[kMaxCh], dz[kMaxCh];
  LSA_FUSED_GRID_LOOP(i, total) {
    const int64_t j = i % a.cw, q = (i / a.cw) % HW, n = i / (a.cw * HW);
    T mx, sum;
    softmax_stats(a, n, q, j, rel, act, &mx, &sum);
    // dP_k = sum_{c = j mod Cw} gy[c, q] v[c, src_k]; dot = sum_k p_k dP_k; grad value
    T dot = 0;
    for (int64_t kk = 0; kk < a.k * a.k; ++kk) {
      const int64_t src = source(a, q, kk);
      if (src < 0) continue;
      relation(a, n, q, src, rel, act);
      const T p = exp(logit(a, j, act, static_cast<T*>(nullptr)) - mx) / sum;
      T dp = 0;
      for (int64_t c = j; c < a.c; c += a.cw) {
        const int64_t base = (n * a.c + c) * HW;
        dp += gy[base + q] * a.v[base + src];
        atomicAdd(g.dv + base + src, p * gy[base + q]);
      }
      dot += p * dp;
    }
    for (int64_t kk = 0; kk < a.k * a.k; ++kk) {
      const int64_t src = source(a, q, kk);
      relation(a, n, q, src, rel, act);
      const T p = exp(logit(a, j, act, zs) - mx) / sum;
      T dp = 0;
      if (src >= 0)
        for (int64_t c = j; c < a.c; c += a.cw) {
          const int64_t base = (n * a.c + c) * HW;
          dp += gy[base + q] * a.v[base + src];
        }
      const T dl = p * (dp - dot);
      atomicAdd(g.db2 + j, dl);
      for (int64_t m = 0; m < a.m; ++m) {
        atomicAdd(g.dw2 + j * a.m + m, dl * zs[m]);
        dz[m] = zs[m] > T(0) ? a.w2[j * a.m + m] * dl : T(0);
      }
      layer1_backward(a, n, q, src, rel, act, dz, g.db1, g.dw1, g.ds1, g.dt1, g.du1, g.du2);
    }
  }
}

template <typename T>
__global__ void moments_kernel(const Args<T> a, double* __restrict__ out) {
  using index_t = int64_t;
  const int64_t HW = a.h * a.w, K = a.k * a.k, total = a.n * HW * K;
  T rel[kMaxCh], act[kMaxCh];
  LSA_FUSED_GRID_LOOP(i, total) {
    const int64_t kk = i % K, q = (i / K) % HW, n = i / (K * HW);
    relation(a, n, q, source(a, q, kk), rel, act);
    for (int64_t c = 0; c < a.cr; ++c) {
      if (!(act[c] > T(0))) continue;
      atomicAdd(out + c, static_cast<double>(act[c]));
      for (int64_t c2 = 0; c2 < a.cr; ++c2)
        atomicAdd(out + a.cr + c * a.cr + c2, static_cast<double>(act[c]) * act[c2]);
    }
  }
}

// grad (Cr + 1, Cr) = [g_a; G]: da = g_a + (G + G^T) act.
template <typename T>
__global__ void moments_backward_kernel(const Args<T> a, const T* __restrict__ grad,
                                        const Grads<T> g) {
  using index_t = int64_t;
  const int64_t HW = a.h * a.w, K = a.k * a.k, total = a.n * HW * K;
  T rel[kMaxCh], act[kMaxCh];
  LSA_FUSED_GRID_LOOP(i, total) {
    const int64_t kk = i % K, q = (i / K) % HW, n = i / (K * HW);
    const int64_t src = source(a, q, kk);
    relation(a, n, q, src, rel, act);
    for (int64_t c = 0; c < a.cr; ++c) {
      if (!(act[c] > T(0))) continue;
      T da = grad[c];
      for (int64_t c2 = 0; c2 < a.cr; ++c2)
        da += (grad[a.cr + c * a.cr + c2] + grad[a.cr + c2 * a.cr + c]) * act[c2];
      act_backward(a, n, q, src, rel, c, da, g.ds1, g.dt1, g.du1, g.du2);
    }
  }
}

template <typename T>
Args<T> make_args(const SanGeometry& g, const Dims& d, const at::Tensor& u1, const at::Tensor& u2,
                  const at::Tensor* v, const at::Tensor& s1, const at::Tensor& t1,
                  const at::Tensor* w1, const at::Tensor* b1, const at::Tensor* w2,
                  const at::Tensor* b2) {
  auto ptr = [](const at::Tensor* t) { return t ? t->const_data_ptr<T>() : nullptr; };
  return {u1.const_data_ptr<T>(),
          u2.const_data_ptr<T>(),
          ptr(v),
          s1.const_data_ptr<T>(),
          t1.const_data_ptr<T>(),
          ptr(w1),
          ptr(b1),
          ptr(w2),
          ptr(b2),
          g.n,
          d.cr,
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

void check_channels(const char* fn, const Dims& d) {
  TORCH_CHECK(d.cr <= kMaxCh && d.m <= kMaxCh, fn, ": the CUDA kernels support up to ", kMaxCh,
              " relation and hidden channels, got Cr=", d.cr, ", M=", d.m);
}

at::Tensor forward_cuda(const at::Tensor& u1, const at::Tensor& u2, const at::Tensor& value,
                        const at::Tensor& scale1, const at::Tensor& shift1,
                        const at::Tensor& weight1, const at::Tensor& bias1,
                        const at::Tensor& weight2, const at::Tensor& bias2, int64_t kernel_size,
                        int64_t dilation, int64_t pad_mode) {
  const char* fn = "san_pairwise_forward";
  Dims d{};
  const SanGeometry g = check_inputs(fn, u1, u2, scale1, shift1, &weight1, &bias1, &weight2, &bias2,
                                     &value, nullptr, kernel_size, dilation, pad_mode, &d);
  check_channels(fn, d);
  const c10::cuda::CUDAGuard guard(u1.device());
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous(), v = value.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous(), w1 = weight1.contiguous();
  const at::Tensor b1 = bias1.contiguous(), w2 = weight2.contiguous(), b2 = bias2.contiguous();
  at::Tensor y = at::empty({g.n, d.c, g.h, g.w}, value.options());
  const int64_t total = g.n * g.h * g.w * d.cw;
  if (total == 0) return y;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_pairwise_forward_cuda", [&] {
    const auto a = make_args<scalar_t>(g, d, x1, x2, &v, s1, t1, &w1, &b1, &w2, &b2);
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
  const char* fn = "san_pairwise_backward";
  Dims d{};
  const SanGeometry g = check_inputs(fn, u1, u2, scale1, shift1, &weight1, &bias1, &weight2, &bias2,
                                     &value, &grad_output, kernel_size, dilation, pad_mode, &d);
  check_channels(fn, d);
  const c10::cuda::CUDAGuard guard(u1.device());
  const at::Tensor gy = grad_output.contiguous(), x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor v = value.contiguous(), s1 = scale1.contiguous(), t1 = shift1.contiguous();
  const at::Tensor w1 = weight1.contiguous(), b1 = bias1.contiguous();
  const at::Tensor w2 = weight2.contiguous(), b2 = bias2.contiguous();
  std::vector<at::Tensor> out;
  for (const at::Tensor* t : {&x1, &x2, &v, &s1, &t1, &w1, &b1, &w2, &b2})
    out.push_back(at::zeros_like(*t));
  const int64_t total = g.n * g.h * g.w * d.cw;
  if (total == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_pairwise_backward_cuda", [&] {
    const auto a = make_args<scalar_t>(g, d, x1, x2, &v, s1, t1, &w1, &b1, &w2, &b2);
    Grads<scalar_t> gr{};
    scalar_t** slots[] = {&gr.du1, &gr.du2, &gr.dv,  &gr.ds1, &gr.dt1,
                          &gr.dw1, &gr.db1, &gr.dw2, &gr.db2};
    for (size_t i = 0; i < out.size(); ++i) *slots[i] = out[i].mutable_data_ptr<scalar_t>();
    backward_kernel<scalar_t>
        <<<num_blocks(total), kThreads, 0, stream>>>(a, gy.const_data_ptr<scalar_t>(), gr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor moments_cuda(const at::Tensor& u1, const at::Tensor& u2, const at::Tensor& scale1,
                        const at::Tensor& shift1, int64_t kernel_size, int64_t dilation,
                        int64_t pad_mode) {
  const char* fn = "san_pairwise_moments";
  Dims d{};
  const SanGeometry g = check_inputs(fn, u1, u2, scale1, shift1, nullptr, nullptr, nullptr, nullptr,
                                     nullptr, nullptr, kernel_size, dilation, pad_mode, &d);
  check_channels(fn, d);
  const c10::cuda::CUDAGuard guard(u1.device());
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous();
  at::Tensor sums = at::zeros({d.cr + 1, d.cr}, u1.options().dtype(at::kDouble));
  const int64_t total = g.n * g.h * g.w * g.kh * g.kw;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (total > 0) {
    AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_pairwise_moments_cuda", [&] {
      const auto a =
          make_args<scalar_t>(g, d, x1, x2, nullptr, s1, t1, nullptr, nullptr, nullptr, nullptr);
      moments_kernel<scalar_t>
          <<<num_blocks(total), kThreads, 0, stream>>>(a, sums.mutable_data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return sums.to(u1.scalar_type());
}

std::vector<at::Tensor> moments_backward_cuda(const at::Tensor& grad, const at::Tensor& u1,
                                              const at::Tensor& u2, const at::Tensor& scale1,
                                              const at::Tensor& shift1, int64_t kernel_size,
                                              int64_t dilation, int64_t pad_mode) {
  const char* fn = "san_pairwise_moments_backward";
  Dims d{};
  const SanGeometry g = check_inputs(fn, u1, u2, scale1, shift1, nullptr, nullptr, nullptr, nullptr,
                                     nullptr, nullptr, kernel_size, dilation, pad_mode, &d);
  check_channels(fn, d);
  check_float_tensor(fn, "grad", grad, 2);
  TORCH_CHECK(grad.size(0) == d.cr + 1 && grad.size(1) == d.cr, fn, ": grad must have shape (",
              d.cr + 1, ", ", d.cr, "), got ", grad.sizes());
  const c10::cuda::CUDAGuard guard(u1.device());
  const at::Tensor gr = grad.contiguous().to(u1.scalar_type());
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous();
  std::vector<at::Tensor> out;
  for (const at::Tensor* t : {&x1, &x2, &s1, &t1}) out.push_back(at::zeros_like(*t));
  const int64_t total = g.n * g.h * g.w * g.kh * g.kw;
  if (total == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_pairwise_moments_backward_cuda", [&] {
    const auto a =
        make_args<scalar_t>(g, d, x1, x2, nullptr, s1, t1, nullptr, nullptr, nullptr, nullptr);
    Grads<scalar_t> gs{};
    gs.du1 = out[0].mutable_data_ptr<scalar_t>();
    gs.du2 = out[1].mutable_data_ptr<scalar_t>();
    gs.ds1 = out[2].mutable_data_ptr<scalar_t>();
    gs.dt1 = out[3].mutable_data_ptr<scalar_t>();
    moments_backward_kernel<scalar_t>
        <<<num_blocks(total), kThreads, 0, stream>>>(a, gr.const_data_ptr<scalar_t>(), gs);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace san_fused
}  // namespace lsa

TORCH_LIBRARY_IMPL(lsa, CUDA, m) {
  m.impl("san_pairwise_forward", &lsa::san_fused::forward_cuda);
  m.impl("san_pairwise_backward", &lsa::san_fused::backward_cuda);
  m.impl("san_pairwise_moments", &lsa::san_fused::moments_cuda);
  m.impl("san_pairwise_moments_backward", &lsa::san_fused::moments_backward_cuda);
}
