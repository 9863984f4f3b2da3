// SAN subtraction2 CPU kernels (forward and backward) with at::parallel_for.
//
// One task per (n, c) plane writes that plane's outputs (forward: its K*Ho*Wo
// relations; backward: both input-gradient planes) with private accumulators in a
// fixed order, so results are bitwise independent of the thread count (no atomics).
// The centre term of the backward first sums grad_output over the K taps (in tap
// order, as the official kernel does) and then routes it to the centre pixel.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "lsa/dispatch.h"
#include "lsa/san_cpu.h"
#include "subtraction.h"

namespace lsa {
namespace subtraction {
namespace {

template <typename scalar_t>
void forward_kernel(const SanGeometry& g, const scalar_t* x1, const scalar_t* x2, scalar_t* y) {
  using acc_t = at::opmath_type<scalar_t>;
  const SanAxis rows(g.h, g.kh, g.sh, g.ph, g.dh, g.ho, g.mode);
  const SanAxis cols(g.w, g.kw, g.sw, g.pw, g.dw, g.wo, g.mode);
  const int64_t L = g.positions(), K = g.taps(), HW = g.h * g.w;
  const int64_t rh = (g.kh - 1) / 2, rw = (g.kw - 1) / 2;  // centre tap
  at::parallel_for(0, g.n * g.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> centre(L);
    for (int64_t plane = begin; plane < end; ++plane) {
      const scalar_t* p1 = x1 + plane * HW;
      const scalar_t* p2 = x2 + plane * HW;
      for (int64_t h = 0; h < g.ho; ++h) {
        const int64_t row = rows.at(rh, h);
        for (int64_t w = 0; w < g.wo; ++w) {
          const int64_t col = cols.at(rw, w);
          centre[h * g.wo + w] = row >= 0 && col >= 0 ? acc_t(p1[row * g.w + col]) : acc_t(0);
        }
      }
      for (int64_t th = 0; th < g.kh; ++th)
        for (int64_t tw = 0; tw < g.kw; ++tw) {
          const int64_t lo = cols.lo[tw], hi = cols.hi[tw], off = cols.offset(tw), s = g.sw;
          scalar_t* yk = y + (plane * K + th * g.kw + tw) * L;
          for (int64_t h = 0; h < g.ho; ++h) {
            const int64_t row = rows.at(th, h);
            const acc_t* cr = centre.data() + h * g.wo;
            scalar_t* LSA_RESTRICT yr = yk + h * g.wo;
            if (row < 0) {  // zeros padding: the whole row of neighbours is 0
              for (int64_t w = 0; w < g.wo; ++w) yr[w] = static_cast<scalar_t>(cr[w]);
              continue;
            }
            const scalar_t* xr = p2 + row * g.w;
            auto border = [&](int64_t w) {
              const int64_t col = cols.at(tw, w);
              yr[w] = static_cast<scalar_t>(col >= 0 ? cr[w] - acc_t(xr[col]) : cr[w]);
            };
            for (int64_t w = 0; w < lo; ++w) border(w);
            if (s == 1) {
              for (int64_t w = lo; w < hi; ++w)
                yr[w] = static_cast<scalar_t>(cr[w] - acc_t(xr[w + off]));
            } else {
              for (int64_t w = lo; w < hi; ++w)
                yr[w] = static_cast<scalar_t>(cr[w] - acc_t(xr[w * s + off]));
            }
            for (int64_t w = hi; w < g.wo; ++w) border(w);
          }
        }
    }
  });
}

template <typename scalar_t>
void backward_kernel(const SanGeometry& g, const scalar_t* grad, scalar_t* dx1, scalar_t* dx2) {
  using acc_t = at::opmath_type<scalar_t>;
  const SanAxis rows(g.h, g.kh, g.sh, g.ph, g.dh, g.ho, g.mode);
  const SanAxis cols(g.w, g.kw, g.sw, g.pw, g.dw, g.wo, g.mode);
  const int64_t L = g.positions(), K = g.taps(), HW = g.h * g.w;
  const int64_t rh = (g.kh - 1) / 2, rw = (g.kw - 1) / 2;
  at::parallel_for(0, g.n * g.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> tap_sum(L), d1(HW), d2(HW);
    for (int64_t plane = begin; plane < end; ++plane) {
      const scalar_t* gp = grad + plane * K * L;
      std::fill(tap_sum.begin(), tap_sum.end(), acc_t(0));
      std::fill(d1.begin(), d1.end(), acc_t(0));
      std::fill(d2.begin(), d2.end(), acc_t(0));
      for (int64_t th = 0; th < g.kh; ++th)
        for (int64_t tw = 0; tw < g.kw; ++tw) {
          const scalar_t* gk = gp + (th * g.kw + tw) * L;
          for (int64_t q = 0; q < L; ++q) tap_sum[q] += acc_t(gk[q]);
          for (int64_t h = 0; h < g.ho; ++h) {
            const int64_t row = rows.at(th, h);
            if (row >= 0)
              san_scatter_row<scalar_t, acc_t>(d2.data() + row * g.w, gk + h * g.wo, nullptr, cols,
                                               tw);
          }
        }
      for (int64_t h = 0; h < g.ho; ++h) {
        const int64_t row = rows.at(rh, h);
        if (row < 0) continue;
        for (int64_t w = 0; w < g.wo; ++w) {
          const int64_t col = cols.at(rw, w);
          if (col >= 0) d1[row * g.w + col] += tap_sum[h * g.wo + w];
        }
      }
      scalar_t* o1 = dx1 + plane * HW;
      scalar_t* o2 = dx2 + plane * HW;
      for (int64_t i = 0; i < HW; ++i) {
        o1[i] = static_cast<scalar_t>(d1[i]);
        o2[i] = static_cast<scalar_t>(d2[i]);
      }
    }
  });
}

at::Tensor forward_cpu(const at::Tensor& input1, const at::Tensor& input2,
                       at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t pad_mode) {
  const SanGeometry g = check_inputs("subtraction2_forward", input1, input2, kernel_size, stride,
                                     padding, dilation, pad_mode);
  const at::Tensor a = input1.contiguous(), b = input2.contiguous();
  at::Tensor y = at::empty({g.n, g.c, g.taps(), g.positions()}, input1.options());
  LSA_DISPATCH_FLOATING_TYPES(input1.scalar_type(), "subtraction2_forward_cpu", [&] {
    forward_kernel<scalar_t>(g, a.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
                             y.mutable_data_ptr<scalar_t>());
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_output,
                                                at::IntArrayRef input_size,
                                                at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                at::IntArrayRef padding, at::IntArrayRef dilation,
                                                int64_t pad_mode) {
  const SanGeometry g = check_backward_inputs("subtraction2_backward", grad_output, input_size,
                                              kernel_size, stride, padding, dilation, pad_mode);
  const at::Tensor go = grad_output.contiguous();
  at::Tensor dx1 = at::empty({g.n, g.c, g.h, g.w}, grad_output.options());
  at::Tensor dx2 = at::empty({g.n, g.c, g.h, g.w}, grad_output.options());
  LSA_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "subtraction2_backward_cpu", [&] {
    backward_kernel<scalar_t>(g, go.const_data_ptr<scalar_t>(), dx1.mutable_data_ptr<scalar_t>(),
                              dx2.mutable_data_ptr<scalar_t>());
  });
  return {dx1, dx2};
}

}  // namespace
}  // namespace subtraction
}  // namespace lsa

TORCH_LIBRARY_IMPL(lsa, CPU, m) {
  m.impl("subtraction2_forward", &lsa::subtraction::forward_cpu);
  m.impl("subtraction2_backward", &lsa::subtraction::backward_cpu);
}
