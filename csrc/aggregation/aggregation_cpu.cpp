// SAN aggregation CPU kernels (forward, grad input, grad weight) with at::parallel_for.
//
// Deterministic by construction: every output element is written by one task that
// sums in a fixed order (taps row-major; the C/Cw sharing channels in order), with
// a private accumulator, so results do not depend on the thread count (no atomics).
//   forward, grad input: one task per (n, c) plane (ordered so channels sharing a
//                        weight plane run back to back and reuse it from cache);
//   grad weight:         one task per (n, cw, tap) plane.
// Inner loops run along an output row, branch-free over the interior (vectorised for
// stride 1); only the border outputs go through the source table. 16-bit types
// accumulate in float. No (K, C, H, W) unfold tensor is ever built.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "aggregation.h"
#include "lsa/dispatch.h"
#include "lsa/san_cpu.h"

namespace lsa {
namespace aggregation {
namespace {

// Accumulator of `n` elements: the output itself when it has the accumulation type.
template <typename scalar_t, typename acc_t>
acc_t* acc_buffer(std::vector<acc_t>& buf, scalar_t* out, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    std::fill(out, out + n, acc_t(0));
    return out;
  } else {
    std::fill(buf.begin(), buf.begin() + n, acc_t(0));
    return buf.data();
  }
}

template <typename scalar_t, typename acc_t>
void store(const std::vector<acc_t>& buf, scalar_t* out, int64_t n) {
  if constexpr (!std::is_same_v<scalar_t, acc_t>) {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<scalar_t>(buf[i]);
  }
}

template <typename scalar_t>
void forward_kernel(const SanGeometry& g, int64_t cw, const scalar_t* x, const scalar_t* wt,
                    scalar_t* y) {
  using acc_t = at::opmath_type<scalar_t>;
  const SanAxis rows(g.h, g.kh, g.sh, g.ph, g.dh, g.ho, g.mode);
  const SanAxis cols(g.w, g.kw, g.sw, g.pw, g.dw, g.wo, g.mode);
  const int64_t groups = g.c / cw, L = g.positions(), K = g.taps(), HW = g.h * g.w;
  at::parallel_for(0, g.n * g.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(L);
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t n = idx / g.c, j = (idx % g.c) / groups, c = (idx % groups) * cw + j;
      const scalar_t* xp = x + (n * g.c + c) * HW;
      const scalar_t* wp = wt + (n * cw + j) * K * L;
      scalar_t* yp = y + (n * g.c + c) * L;
      acc_t* acc = acc_buffer(buf, yp, L);
      for (int64_t th = 0; th < g.kh; ++th)
        for (int64_t tw = 0; tw < g.kw; ++tw) {
          const scalar_t* wk = wp + (th * g.kw + tw) * L;
          for (int64_t h = 0; h < g.ho; ++h) {
            const int64_t row = rows.at(th, h);
            if (row >= 0) san_fma_row(acc + h * g.wo, wk + h * g.wo, xp + row * g.w, cols, tw);
          }
        }
      store(buf, yp, L);
    }
  });
}

template <typename scalar_t>
void backward_input_kernel(const SanGeometry& g, int64_t cw, const scalar_t* grad,
                           const scalar_t* wt, scalar_t* dx) {
  using acc_t = at::opmath_type<scalar_t>;
  const SanAxis rows(g.h, g.kh, g.sh, g.ph, g.dh, g.ho, g.mode);
  const SanAxis cols(g.w, g.kw, g.sw, g.pw, g.dw, g.wo, g.mode);
  const int64_t groups = g.c / cw, L = g.positions(), K = g.taps(), HW = g.h * g.w;
  at::parallel_for(0, g.n * g.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(HW);
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t n = idx / g.c, j = (idx % g.c) / groups, c = (idx % groups) * cw + j;
      const scalar_t* gp = grad + (n * g.c + c) * L;
      const scalar_t* wp = wt + (n * cw + j) * K * L;
      scalar_t* dxp = dx + (n * g.c + c) * HW;
      acc_t* acc = acc_buffer(buf, dxp, HW);
      for (int64_t th = 0; th < g.kh; ++th)
        for (int64_t tw = 0; tw < g.kw; ++tw) {
          const scalar_t* wk = wp + (th * g.kw + tw) * L;
          for (int64_t h = 0; h < g.ho; ++h) {
            const int64_t row = rows.at(th, h);
            if (row >= 0) san_scatter_row(acc + row * g.w, wk + h * g.wo, gp + h * g.wo, cols, tw);
          }
        }
      store(buf, dxp, HW);
    }
  });
}

template <typename scalar_t>
void backward_weight_kernel(const SanGeometry& g, int64_t cw, const scalar_t* grad,
                            const scalar_t* x, scalar_t* dw) {
  using acc_t = at::opmath_type<scalar_t>;
  const SanAxis rows(g.h, g.kh, g.sh, g.ph, g.dh, g.ho, g.mode);
  const SanAxis cols(g.w, g.kw, g.sw, g.pw, g.dw, g.wo, g.mode);
  const int64_t groups = g.c / cw, L = g.positions(), K = g.taps(), HW = g.h * g.w;
  at::parallel_for(0, g.n * cw * K, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(L);
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t n = idx / (cw * K), j = (idx / K) % cw, kk = idx % K;
      const int64_t th = kk / g.kw, tw = kk % g.kw;
      scalar_t* dwp = dw + idx * L;
      acc_t* acc = acc_buffer(buf, dwp, L);
      for (int64_t grp = 0; grp < groups; ++grp) {
        const int64_t c = grp * cw + j;
        const scalar_t* xp = x + (n * g.c + c) * HW;
        const scalar_t* gp = grad + (n * g.c + c) * L;
        for (int64_t h = 0; h < g.ho; ++h) {
          const int64_t row = rows.at(th, h);
          if (row >= 0) san_fma_row(acc + h * g.wo, gp + h * g.wo, xp + row * g.w, cols, tw);
        }
      }
      store(buf, dwp, L);
    }
  });
}

at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                       at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t pad_mode) {
  int64_t cw = 0;
  const SanGeometry g = check_inputs("aggregation_forward", input, weight, kernel_size, stride,
                                     padding, dilation, pad_mode, &cw);
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  at::Tensor y = at::empty({g.n, g.c, g.ho, g.wo}, input.options());
  LSA_DISPATCH_FLOATING_TYPES(input.scalar_type(), "aggregation_forward_cpu", [&] {
    forward_kernel<scalar_t>(g, cw, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                             y.mutable_data_ptr<scalar_t>());
  });
  return y;
}

at::Tensor backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& weight, at::IntArrayRef kernel_size,
                              at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, int64_t pad_mode) {
  int64_t cw = 0;
  const SanGeometry g = check_inputs("aggregation_backward_input", input, weight, kernel_size,
                                     stride, padding, dilation, pad_mode, &cw, &grad_output);
  const at::Tensor go = grad_output.contiguous(), w = weight.contiguous();
  at::Tensor dx = at::empty({g.n, g.c, g.h, g.w}, input.options());
  LSA_DISPATCH_FLOATING_TYPES(input.scalar_type(), "aggregation_backward_input_cpu", [&] {
    backward_input_kernel<scalar_t>(g, cw, go.const_data_ptr<scalar_t>(),
                                    w.const_data_ptr<scalar_t>(), dx.mutable_data_ptr<scalar_t>());
  });
  return dx;
}

at::Tensor backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                               const at::Tensor& weight, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t pad_mode) {
  int64_t cw = 0;
  const SanGeometry g = check_inputs("aggregation_backward_weight", input, weight, kernel_size,
                                     stride, padding, dilation, pad_mode, &cw, &grad_output);
  const at::Tensor go = grad_output.contiguous(), x = input.contiguous();
  at::Tensor dw = at::empty({g.n, cw, g.taps(), g.positions()}, weight.options());
  LSA_DISPATCH_FLOATING_TYPES(input.scalar_type(), "aggregation_backward_weight_cpu", [&] {
    backward_weight_kernel<scalar_t>(g, cw, go.const_data_ptr<scalar_t>(),
                                     x.const_data_ptr<scalar_t>(), dw.mutable_data_ptr<scalar_t>());
  });
  return dw;
}

}  // namespace
}  // namespace aggregation
}  // namespace lsa

TORCH_LIBRARY_IMPL(lsa, CPU, m) {
  m.impl("aggregation_forward", &lsa::aggregation::forward_cpu);
  m.impl("aggregation_backward_input", &lsa::aggregation::backward_input_cpu);
  m.impl("aggregation_backward_weight", &lsa::aggregation::backward_weight_cpu);
}
