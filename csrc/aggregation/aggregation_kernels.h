// SAN aggregation CUDA kernels (per-thread bodies) and their launch, shared by
// aggregation_cuda.cu (run on the GPU) and aggregation_emulate.cpp (the same bodies run
// over the whole grid on the CPU, for tests; lsa/emulate.h).
//
// One thread per output element, all in gather form (no atomics: deterministic):
//   forward:     thread per y[n, c, h, w], sums the K taps in row-major order;
//   grad input:  thread per dx[n, c, i, j]; the taps that read (i, j) are found by
//                inverting the (reflected) index map (san_virtual_positions/output_of);
//   grad weight: thread per dw[n, cw, kk, q], sums the C/Cw sharing channels in order.
// fp16/bf16 accumulate in fp32 (at::opmath_type); 32-bit indexing when sizes allow.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include "aggregation.h"
#include "lsa/dispatch.h"
#include "lsa/launch.h"

namespace lsa {
namespace aggregation {
namespace kernels {

template <typename scalar_t, typename index_t>
struct Forward {
  SanGeometryT<index_t> g;
  index_t cw, total;
  const scalar_t* x;
  const scalar_t* wt;
  scalar_t* y;

  LSA_HOST_DEVICE void operator()(const Thread& t) const {
    using acc_t = at::opmath_type<scalar_t>;
    const index_t K = g.taps(), L = g.positions();
    LSA_KERNEL_LOOP(t, idx, total) {
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
};

template <typename scalar_t, typename index_t>
struct BackwardInput {
  SanGeometryT<index_t> g;
  index_t cw, total;
  const scalar_t* grad;
  const scalar_t* wt;
  scalar_t* dx;

  LSA_HOST_DEVICE void operator()(const Thread& t) const {
    using acc_t = at::opmath_type<scalar_t>;
    const index_t K = g.taps(), L = g.positions();
    LSA_KERNEL_LOOP(t, idx, total) {
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
};

template <typename scalar_t, typename index_t>
struct BackwardWeight {
  SanGeometryT<index_t> g;
  index_t cw, total;
  const scalar_t* grad;
  const scalar_t* x;
  scalar_t* dw;

  LSA_HOST_DEVICE void operator()(const Thread& t) const {
    using acc_t = at::opmath_type<scalar_t>;
    const index_t K = g.taps(), L = g.positions(), groups = g.c / cw;
    LSA_KERNEL_LOOP(t, idx, total) {
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
};

}  // namespace kernels

// The op entry points over a launcher (cuda::Launcher or emulate::Launcher).

template <typename Launcher>
at::Tensor forward_on(const Launcher& launch, const at::Tensor& input, const at::Tensor& weight,
                      at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                      at::IntArrayRef dilation, int64_t pad_mode) {
  int64_t cw = 0;
  const SanGeometry g = check_inputs("aggregation_forward", input, weight, kernel_size, stride,
                                     padding, dilation, pad_mode, &cw);
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  at::Tensor y = at::empty({g.n, g.c, g.ho, g.wo}, input.options());
  const int64_t total = y.numel();
  if (total == 0) return y;
  LSA_DISPATCH_FLOATING_TYPES(input.scalar_type(), "aggregation_forward", [&] {
    LSA_DISPATCH_INDEX_TYPE(launch.index32({x.numel(), w.numel(), total}), [&] {
      launch.grid(total,
                  kernels::Forward<scalar_t, index_t>{
                      g.cast<index_t>(), index_t(cw), index_t(total), x.const_data_ptr<scalar_t>(),
                      w.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>()});
    });
  });
  return y;
}

template <typename Launcher>
at::Tensor backward_input_on(const Launcher& launch, const at::Tensor& grad_output,
                             const at::Tensor& input, const at::Tensor& weight,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode) {
  int64_t cw = 0;
  const SanGeometry g = check_inputs("aggregation_backward_input", input, weight, kernel_size,
                                     stride, padding, dilation, pad_mode, &cw, &grad_output);
  const at::Tensor go = grad_output.contiguous(), w = weight.contiguous();
  at::Tensor dx = at::empty({g.n, g.c, g.h, g.w}, input.options());
  const int64_t total = dx.numel();
  if (total == 0) return dx;
  LSA_DISPATCH_FLOATING_TYPES(input.scalar_type(), "aggregation_backward_input", [&] {
    LSA_DISPATCH_INDEX_TYPE(launch.index32({go.numel(), w.numel(), total}), [&] {
      launch.grid(total,
                  kernels::BackwardInput<scalar_t, index_t>{
                      g.cast<index_t>(), index_t(cw), index_t(total), go.const_data_ptr<scalar_t>(),
                      w.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>()});
    });
  });
  return dx;
}

template <typename Launcher>
at::Tensor backward_weight_on(const Launcher& launch, const at::Tensor& grad_output,
                              const at::Tensor& input, const at::Tensor& weight,
                              at::IntArrayRef kernel_size, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode) {
  int64_t cw = 0;
  const SanGeometry g = check_inputs("aggregation_backward_weight", input, weight, kernel_size,
                                     stride, padding, dilation, pad_mode, &cw, &grad_output);
  const at::Tensor go = grad_output.contiguous(), x = input.contiguous();
  at::Tensor dw = at::empty({g.n, cw, g.taps(), g.positions()}, weight.options());
  const int64_t total = dw.numel();
  if (total == 0) return dw;
  LSA_DISPATCH_FLOATING_TYPES(input.scalar_type(), "aggregation_backward_weight", [&] {
    LSA_DISPATCH_INDEX_TYPE(launch.index32({go.numel(), x.numel(), total}), [&] {
      launch.grid(total,
                  kernels::BackwardWeight<scalar_t, index_t>{
                      g.cast<index_t>(), index_t(cw), index_t(total), go.const_data_ptr<scalar_t>(),
                      x.const_data_ptr<scalar_t>(), dw.mutable_data_ptr<scalar_t>()});
    });
  });
  return dw;
}

}  // namespace aggregation
}  // namespace lsa
