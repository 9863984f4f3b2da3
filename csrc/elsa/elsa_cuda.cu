// ELSA CUDA kernels (forward and backward) for float64/float32/float16/bfloat16.
//
// All kernels are gathers: each output element is owned by one thread (or, for the ghost
// gradients, one block with a fixed reduction tree), so there are no atomics and results are
// bitwise reproducible. Half types accumulate in float (at::opmath_type). Index arithmetic
// is 32-bit when every tensor fits, 64-bit otherwise.
//   forward: one thread per output (n, c, y, x), taps in row-major order
//   dV:      one thread per input (n, c, i, j), reading the outputs whose window covers it
//   dA:      one thread per (n, tap, y, x), channels in order (x fastest: coalesced)
//   dM, dD:  one block per (n, c, tap), strided partial sums + shared-memory tree
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <limits>
#include <tuple>

#include "elsa.h"

namespace lsa {
namespace elsa {
namespace {

constexpr int kThreads = 256;
constexpr int kReduceThreads = 256;

template <typename index_t>
struct Dims {
  index_t nb, cg, h, w, ho, wo, k, s, d, r;
};

template <typename index_t>
Dims<index_t> make_dims(const Geometry& g) {
  return {static_cast<index_t>(g.nb), static_cast<index_t>(g.cg), static_cast<index_t>(g.h),
          static_cast<index_t>(g.w),  static_cast<index_t>(g.ho), static_cast<index_t>(g.wo),
          static_cast<index_t>(g.k),  static_cast<index_t>(g.s),  static_cast<index_t>(g.d),
          static_cast<index_t>(g.k / 2)};
}

inline unsigned int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(b, 1 << 30));  // grid-stride beyond
}

template <typename scalar_t, typename acc_t, typename index_t>
__global__ void forward_kernel(Dims<index_t> g, index_t total, const scalar_t* __restrict__ v,
                               const scalar_t* __restrict__ a, const scalar_t* __restrict__ mul,
                               const scalar_t* __restrict__ add, scalar_t* __restrict__ out) {
  const index_t kk = g.k * g.k;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(blockDim.x) * gridDim.x) {
    const index_t x = i % g.wo;
    const index_t y = (i / g.wo) % g.ho;
    const index_t p = i / (g.wo * g.ho);  // n * Cg + c
    const index_t n = p / g.cg;
    const scalar_t* vp = v + p * g.h * g.w;
    const scalar_t* ap = a + n * kk * g.ho * g.wo + y * g.wo + x;
    const scalar_t* mp = mul + p * kk;
    const scalar_t* bp = add + p * kk;
    acc_t acc = 0;
    for (index_t ky = 0; ky < g.k; ++ky) {
      const index_t iy = y * g.s + (ky - g.r) * g.d;
      if (iy < 0 || iy >= g.h) continue;
      for (index_t kx = 0; kx < g.k; ++kx) {
        const index_t ix = x * g.s + (kx - g.r) * g.d;
        if (ix < 0 || ix >= g.w) continue;
        const index_t tap = ky * g.k + kx;
        const acc_t f = static_cast<acc_t>(ap[tap * g.ho * g.wo]) * static_cast<acc_t>(mp[tap]) +
                        static_cast<acc_t>(bp[tap]);
        acc += static_cast<acc_t>(vp[iy * g.w + ix]) * f;
      }
    }
    out[i] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename acc_t, typename index_t>
__global__ void features_grad_kernel(Dims<index_t> g, index_t total,
                                     const scalar_t* __restrict__ go,
                                     const scalar_t* __restrict__ a,
                                     const scalar_t* __restrict__ mul,
                                     const scalar_t* __restrict__ add,
                                     scalar_t* __restrict__ dv) {
  const index_t kk = g.k * g.k;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(blockDim.x) * gridDim.x) {
    const index_t ix = i % g.w;
    const index_t iy = (i / g.w) % g.h;
    const index_t p = i / (g.w * g.h);
    const index_t n = p / g.cg;
    const scalar_t* gp = go + p * g.ho * g.wo;
    const scalar_t* ap = a + n * kk * g.ho * g.wo;
    const scalar_t* mp = mul + p * kk;
    const scalar_t* bp = add + p * kk;
    acc_t acc = 0;
    for (index_t ky = 0; ky < g.k; ++ky) {
      const index_t ty = iy - (ky - g.r) * g.d;  // = y * s for the output reading this input
      if (ty < 0 || ty % g.s != 0 || ty / g.s >= g.ho) continue;
      const index_t y = ty / g.s;
      for (index_t kx = 0; kx < g.k; ++kx) {
        const index_t tx = ix - (kx - g.r) * g.d;
        if (tx < 0 || tx % g.s != 0 || tx / g.s >= g.wo) continue;
        const index_t x = tx / g.s;
        const index_t tap = ky * g.k + kx;
        const index_t q = y * g.wo + x;
        const acc_t f = static_cast<acc_t>(ap[tap * g.ho * g.wo + q]) *
                            static_cast<acc_t>(mp[tap]) +
                        static_cast<acc_t>(bp[tap]);
        acc += static_cast<acc_t>(gp[q]) * f;
      }
    }
    dv[i] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename acc_t, typename index_t>
__global__ void attn_grad_kernel(Dims<index_t> g, index_t total, const scalar_t* __restrict__ go,
                                 const scalar_t* __restrict__ v,
                                 const scalar_t* __restrict__ mul, scalar_t* __restrict__ da) {
  const index_t kk = g.k * g.k;
  for (index_t i = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<index_t>(blockDim.x) * gridDim.x) {
    const index_t x = i % g.wo;
    const index_t y = (i / g.wo) % g.ho;
    const index_t tap = (i / (g.wo * g.ho)) % kk;
    const index_t n = i / (g.wo * g.ho * kk);
    const index_t iy = y * g.s + (tap / g.k - g.r) * g.d;
    const index_t ix = x * g.s + (tap % g.k - g.r) * g.d;
    acc_t acc = 0;
    if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) {
      const index_t plane_i = g.h * g.w, plane_o = g.ho * g.wo;
      const scalar_t* vp = v + n * g.cg * plane_i + iy * g.w + ix;
      const scalar_t* gp = go + n * g.cg * plane_o + y * g.wo + x;
      const scalar_t* mp = mul + n * g.cg * kk + tap;
      for (index_t c = 0; c < g.cg; ++c)
        acc += static_cast<acc_t>(mp[c * kk]) * static_cast<acc_t>(gp[c * plane_o]) *
               static_cast<acc_t>(vp[c * plane_i]);
    }
    da[i] = static_cast<scalar_t>(acc);
  }
}

// One block per (n, c, tap): dM = sum G * V(shifted) * A, dD = sum G * V(shifted).
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void ghost_grad_kernel(Dims<index_t> g, const scalar_t* __restrict__ go,
                                  const scalar_t* __restrict__ v,
                                  const scalar_t* __restrict__ a, scalar_t* __restrict__ dmul,
                                  scalar_t* __restrict__ dadd) {
  __shared__ acc_t sm[kReduceThreads];
  __shared__ acc_t sd[kReduceThreads];
  const index_t kk = g.k * g.k;
  const index_t b = blockIdx.x;  // (n * Cg + c) * kk + tap
  const index_t tap = b % kk, p = b / kk, n = p / g.cg;
  const index_t oy = (tap / g.k - g.r) * g.d, ox = (tap % g.k - g.r) * g.d;
  int64_t y0, y1, x0, x1;
  valid_range(oy, g.s, g.h, g.ho, &y0, &y1);
  valid_range(ox, g.s, g.w, g.wo, &x0, &x1);
  const index_t ny = static_cast<index_t>(y1 - y0), nx = static_cast<index_t>(x1 - x0);
  const index_t plane_o = g.ho * g.wo;
  const scalar_t* gp = go + p * plane_o;
  const scalar_t* vp = v + p * g.h * g.w;
  const scalar_t* ap = a + (n * kk + tap) * plane_o;
  acc_t m = 0, d = 0;
  for (index_t j = threadIdx.x; j < ny * nx; j += blockDim.x) {
    const index_t y = y0 + j / nx, x = x0 + j % nx;
    const index_t q = y * g.wo + x;
    const acc_t t = static_cast<acc_t>(gp[q]) *
                    static_cast<acc_t>(vp[(y * g.s + oy) * g.w + x * g.s + ox]);
    d += t;
    m += t * static_cast<acc_t>(ap[q]);
  }
  sm[threadIdx.x] = m;
  sd[threadIdx.x] = d;
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      sm[threadIdx.x] += sm[threadIdx.x + half];
      sd[threadIdx.x] += sd[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if (dmul != nullptr) dmul[b] = static_cast<scalar_t>(sm[0]);
    if (dadd != nullptr) dadd[b] = static_cast<scalar_t>(sd[0]);
  }
}

bool fits_int32(const Geometry& g) {
  const int64_t big = std::max({g.nb * g.cg * g.h * g.w, g.nb * g.taps() * g.ho * g.wo,
                                g.nb * g.cg * g.taps()});
  return big < std::numeric_limits<int32_t>::max() / 2;
}

at::Tensor elsa_forward_cuda(const at::Tensor& features, const at::Tensor& attn,
                             const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                             int64_t kernel_size, int64_t stride, int64_t dilation) {
  const Geometry g = check_inputs("lsa::elsa_forward", features, attn, ghost_mul, ghost_add,
                                  kernel_size, stride, dilation);
  const c10::cuda::CUDAGuard guard(features.device());
  auto out = at::empty({g.nb, g.cg, g.ho, g.wo}, features.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const auto v = features.contiguous(), a = attn.contiguous();
  const auto m = ghost_mul.contiguous(), b = ghost_add.contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, features.scalar_type(),
                                  "elsa_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto launch = [&](auto zero) {
      using index_t = decltype(zero);
      forward_kernel<scalar_t, acc_t, index_t><<<blocks_for(total), kThreads, 0, stream>>>(
          make_dims<index_t>(g), static_cast<index_t>(total), v.data_ptr<scalar_t>(),
          a.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
          out.data_ptr<scalar_t>());
    };
    if (fits_int32(g)) launch(int32_t(0)); else launch(int64_t(0));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> elsa_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& features, const at::Tensor& attn,
    const at::Tensor& ghost_mul, const at::Tensor& ghost_add, int64_t kernel_size,
    int64_t stride, int64_t dilation, std::array<bool, 4> mask) {
  const Geometry g = check_inputs("lsa::elsa_backward", features, attn, ghost_mul, ghost_add,
                                  kernel_size, stride, dilation);
  check_grad("lsa::elsa_backward", grad_out, features, g);
  const c10::cuda::CUDAGuard guard(features.device());
  const auto opts = features.options();
  const auto none = [&] { return at::empty({0}, opts); };  // a gradient not asked for
  if (g.nb * g.cg * g.ho * g.wo == 0) {  // no output: every gradient is zero
    return {mask[0] ? at::zeros({g.nb, g.cg, g.h, g.w}, opts) : none(),
            mask[1] ? at::zeros({g.nb, g.taps(), g.ho, g.wo}, opts) : none(),
            mask[2] ? at::zeros({g.nb, g.cg, g.k, g.k}, opts) : none(),
            mask[3] ? at::zeros({g.nb, g.cg, g.k, g.k}, opts) : none()};
  }
  auto dv = mask[0] ? at::empty({g.nb, g.cg, g.h, g.w}, opts) : none();
  auto da = mask[1] ? at::empty({g.nb, g.taps(), g.ho, g.wo}, opts) : none();
  auto dm = mask[2] ? at::empty({g.nb, g.cg, g.k, g.k}, opts) : none();
  auto dd = mask[3] ? at::empty({g.nb, g.cg, g.k, g.k}, opts) : none();
  const auto go = grad_out.contiguous(), v = features.contiguous(), a = attn.contiguous();
  const auto m = ghost_mul.contiguous(), b = ghost_add.contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, features.scalar_type(),
                                  "elsa_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto launch = [&](auto zero) {
      using index_t = decltype(zero);
      const Dims<index_t> dims = make_dims<index_t>(g);
      if (mask[0]) {
        const int64_t n = dv.numel();
        features_grad_kernel<scalar_t, acc_t, index_t><<<blocks_for(n), kThreads, 0, stream>>>(
            dims, static_cast<index_t>(n), go.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
            m.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (mask[1]) {
        const int64_t n = da.numel();
        attn_grad_kernel<scalar_t, acc_t, index_t><<<blocks_for(n), kThreads, 0, stream>>>(
            dims, static_cast<index_t>(n), go.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
            m.data_ptr<scalar_t>(), da.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (mask[2] || mask[3]) {
        const int64_t n = g.nb * g.cg * g.taps();
        ghost_grad_kernel<scalar_t, acc_t, index_t>
            <<<static_cast<unsigned int>(n), kReduceThreads, 0, stream>>>(
                dims, go.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
                mask[2] ? dm.data_ptr<scalar_t>() : nullptr,
                mask[3] ? dd.data_ptr<scalar_t>() : nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    };
    if (fits_int32(g)) launch(int32_t(0)); else launch(int64_t(0));
  });
  return {dv, da, dm, dd};
}

}  // namespace

TORCH_LIBRARY_IMPL(lsa, CUDA, m) {
  m.impl("elsa_forward", &elsa_forward_cuda);
  m.impl("elsa_backward", &elsa_backward_cuda);
}

}  // namespace elsa
}  // namespace lsa
