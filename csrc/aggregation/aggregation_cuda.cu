// SAN aggregation CUDA kernels (forward, grad input, grad weight).
//
// One thread per output element, all in gather form (no atomics: deterministic):
//   forward:     thread per y[n, c, h, w], sums the K taps in row-major order;
//   grad input:  thread per dx[n, c, i, j]; the taps that read (i, j) are found by
//                inverting the (reflected) index map (san_virtual_positions/output_of);
//   grad weight: thread per dw[n, cw, kk, q], sums the C/Cw sharing channels in order.
// fp16/bf16 accumulate in fp32 (at::opmath_type); 32-bit indexing when sizes allow.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "aggregation.h"
#include "lsa/cuda_utils.cuh"
#include "lsa/dispatch.h"

namespace lsa {
namespace aggregation {
namespace {

template <typename scalar_t, typename index_t>
__global__ void forward_kernel(const SanGeometryT<index_t> g, const index_t cw,
                               const scalar_t* __restrict__ x, const scalar_t* __restrict__ wt,
                               scalar_t* __restrict__ y, const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t K = g.taps(), L = g.positions();
  LSA_CUDA_KERNEL_LOOP(idx, total) {
    const index_t w = idx % g.wo, h = (idx / g.wo) % g.ho, nc = idx / L;
    const index_t c = nc % g.c, n = nc / g.c;
    const scalar_t* xp = x + nc * g.h * g.w;
    const scalar_t* wp = wt + (n * cw + c % cw) * K * L + h * g.wo + w;
    acc_t acc = 0;
    for (index_t th = 0; th < g.kh; ++th) {
      const index_t row = san_source<index_t>(h * g.sh - g.ph + th * g.dh, g.h, g.mode);
      if (row < 0) continue;
      for (index_t tw = 0; tw < g.kw; ++tw) {
        const index_t col = san_source<index_t>(w * g.sw - g.pw + tw * g.dw, g.w, g.mode);
        if (col < 0) continue;
        acc += acc_t(wp[(th * g.kw + tw) * L]) * acc_t(xp[row * g.w + col]);
      }
    }
    y[idx] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename index_t>
__global__ void backward_input_kernel(const SanGeometryT<index_t> g, const index_t cw,
                                      const scalar_t* __restrict__ grad,
                                      const scalar_t* __restrict__ wt,
                                      scalar_t* __restrict__ dx, const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t K = g.taps(), L = g.positions();
  LSA_CUDA_KERNEL_LOOP(idx, total) {
    const index_t j = idx % g.w, i = (idx / g.w) % g.h, nc = idx / (g.h * g.w);
    const index_t c = nc % g.c, n = nc / g.c;
    const scalar_t* gp = grad + nc * L;
    const scalar_t* wp = wt + (n * cw + c % cw) * K * L;
    index_t vi[3], vj[3];
    const int ni = san_virtual_positions<index_t>(i, g.h, g.mode, vi);
    const int nj = san_virtual_positions<index_t>(j, g.w, g.mode, vj);
    acc_t acc = 0;
    for (index_t th = 0; th < g.kh; ++th)
      for (int a = 0; a < ni; ++a) {
        const index_t h = san_output_of<index_t>(vi[a], th, g.sh, g.ph, g.dh, g.ho);
        if (h < 0) continue;
        for (index_t tw = 0; tw < g.kw; ++tw)
          for (int b = 0; b < nj; ++b) {
            const index_t w = san_output_of<index_t>(vj[b], tw, g.sw, g.pw, g.dw, g.wo);
            if (w < 0) continue;
            const index_t q = h * g.wo + w;
            acc += acc_t(wp[(th * g.kw + tw) * L + q]) * acc_t(gp[q]);
          }
      }
    dx[idx] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename index_t>
__global__ void backward_weight_kernel(const SanGeometryT<index_t> g, const index_t cw,
                                       const scalar_t* __restrict__ grad,
                                       const scalar_t* __restrict__ x,
                                       scalar_t* __restrict__ dw, const index_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t K = g.taps(), L = g.positions(), groups = g.c / cw;
  LSA_CUDA_KERNEL_LOOP(idx, total) {
    const index_t q = idx % L, kk = (idx / L) % K, nj = idx / (K * L);
    const index_t j = nj % cw, n = nj / cw;
    const index_t h = q / g.wo, w = q % g.wo, th = kk / g.kw, tw = kk % g.kw;
    const index_t row = san_source<index_t>(h * g.sh - g.ph + th * g.dh, g.h, g.mode);
    const index_t col = san_source<index_t>(w * g.sw - g.pw + tw * g.dw, g.w, g.mode);
    acc_t acc = 0;
    if (row >= 0 && col >= 0) {
      for (index_t grp = 0; grp < groups; ++grp) {
        const index_t nc = n * g.c + grp * cw + j;
        acc += acc_t(x[(nc * g.h + row) * g.w + col]) * acc_t(grad[nc * L + q]);
      }
    }
    dw[idx] = static_cast<scalar_t>(acc);
  }
}

at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                        at::IntArrayRef kernel_size, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode) {
  int64_t cw = 0;
  const SanGeometry g = check_inputs("aggregation_forward", input, weight, kernel_size, stride,
                                     padding, dilation, pad_mode, &cw);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  at::Tensor y = at::empty({g.n, g.c, g.ho, g.wo}, input.options());
  const int64_t total = y.numel();
  if (total == 0) return y;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  LSA_DISPATCH_FLOATING_TYPES(input.scalar_type(), "aggregation_forward_cuda", [&] {
    LSA_DISPATCH_INDEX_TYPE(cuda::fits_int32({x.numel(), w.numel(), total}), [&] {
      forward_kernel<scalar_t, index_t><<<cuda::num_blocks(total), cuda::kThreads, 0, stream>>>(
          g.cast<index_t>(), index_t(cw), x.const_data_ptr<scalar_t>(),
          w.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), index_t(total));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return y;
}

at::Tensor backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                               const at::Tensor& weight, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t pad_mode) {
  int64_t cw = 0;
  const SanGeometry g = check_inputs("aggregation_backward_input", input, weight, kernel_size,
                                     stride, padding, dilation, pad_mode, &cw, &grad_output);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor go = grad_output.contiguous(), w = weight.contiguous();
  at::Tensor dx = at::empty({g.n, g.c, g.h, g.w}, input.options());
  const int64_t total = dx.numel();
  if (total == 0) return dx;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  LSA_DISPATCH_FLOATING_TYPES(input.scalar_type(), "aggregation_backward_input_cuda", [&] {
    LSA_DISPATCH_INDEX_TYPE(cuda::fits_int32({go.numel(), w.numel(), total}), [&] {
      backward_input_kernel<scalar_t, index_t>
          <<<cuda::num_blocks(total), cuda::kThreads, 0, stream>>>(
              g.cast<index_t>(), index_t(cw), go.const_data_ptr<scalar_t>(),
              w.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>(), index_t(total));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return dx;
}

at::Tensor backward_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                const at::Tensor& weight, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, int64_t pad_mode) {
  int64_t cw = 0;
  const SanGeometry g = check_inputs("aggregation_backward_weight", input, weight, kernel_size,
                                     stride, padding, dilation, pad_mode, &cw, &grad_output);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor go = grad_output.contiguous(), x = input.contiguous();
  at::Tensor dw = at::empty({g.n, cw, g.taps(), g.positions()}, weight.options());
  const int64_t total = dw.numel();
  if (total == 0) return dw;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  LSA_DISPATCH_FLOATING_TYPES(input.scalar_type(), "aggregation_backward_weight_cuda", [&] {
    LSA_DISPATCH_INDEX_TYPE(cuda::fits_int32({go.numel(), x.numel(), total}), [&] {
      backward_weight_kernel<scalar_t, index_t>
          <<<cuda::num_blocks(total), cuda::kThreads, 0, stream>>>(
              g.cast<index_t>(), index_t(cw), go.const_data_ptr<scalar_t>(),
              x.const_data_ptr<scalar_t>(), dw.mutable_data_ptr<scalar_t>(), index_t(total));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return dw;
}

}  // namespace
}  // namespace aggregation
}  // namespace lsa

TORCH_LIBRARY_IMPL(lsa, CUDA, m) {
  m.impl("aggregation_forward", &lsa::aggregation::forward_cuda);
  m.impl("aggregation_backward_input", &lsa::aggregation::backward_input_cuda);
  m.impl("aggregation_backward_weight", &lsa::aggregation::backward_weight_cuda);
}
