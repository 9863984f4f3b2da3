// SAN subtraction2 CUDA kernels (per-thread bodies) and their launch, shared by
// subtraction_cuda.cu (GPU) and subtraction_emulate.cpp (the same bodies over the whole
// grid on the CPU, for tests; lsa/emulate.h). Gather form (deterministic):
//   forward:  thread per y[n, c, kk, q] = centre - neighbour (coalesced along q);
//   backward: thread per input pixel (n, c, i, j): dx1 sums grad over all K taps of
//             the outputs whose centre is (i, j); dx2 subtracts grad of every
//             (output, tap) that reads (i, j), found by inverting the (reflected)
//             index map. fp16/bf16 accumulate in fp32; 32-bit indexing when sizes allow.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include <tuple>

#include "lsa/dispatch.h"
#include "lsa/launch.h"
#include "subtraction.h"

namespace lsa {
namespace subtraction {
namespace kernels {

template <typename scalar_t, typename index_t>
struct Forward {
  SanGeometryT<index_t> g;
  index_t total;
  const scalar_t* x1;
  const scalar_t* x2;
  scalar_t* y;

  LSA_HOST_DEVICE void operator()(const Thread& t) const {
    using acc_t = at::opmath_type<scalar_t>;
    const index_t K = g.taps(), L = g.positions();
    const index_t rh = (g.kh - 1) / 2, rw = (g.kw - 1) / 2;
    LSA_KERNEL_LOOP(t, idx, total) {
      const index_t q = idx % L, kk = (idx / L) % K, nc = idx / (K * L);
      const index_t h = q / g.wo, w = q % g.wo, th = kk / g.kw, tw = kk % g.kw;
      const scalar_t* p1 = x1 + nc * g.h * g.w;
      const scalar_t* p2 = x2 + nc * g.h * g.w;
      const index_t hb = h * g.sh - g.ph, wb = w * g.sw - g.pw;
      const index_t crow = san_source<index_t>(hb + rh * g.dh, g.h, g.mode);
      const index_t ccol = san_source<index_t>(wb + rw * g.dw, g.w, g.mode);
      const index_t row = san_source<index_t>(hb + th * g.dh, g.h, g.mode);
      const index_t col = san_source<index_t>(wb + tw * g.dw, g.w, g.mode);
      const acc_t centre = crow >= 0 && ccol >= 0 ? acc_t(p1[crow * g.w + ccol]) : acc_t(0);
      const acc_t neighbour = row >= 0 && col >= 0 ? acc_t(p2[row * g.w + col]) : acc_t(0);
      y[idx] = static_cast<scalar_t>(centre - neighbour);
    }
  }
};

template <typename scalar_t, typename index_t>
struct Backward {
  SanGeometryT<index_t> g;
  index_t total;
  const scalar_t* grad;
  scalar_t* dx1;
  scalar_t* dx2;

  LSA_HOST_DEVICE void operator()(const Thread& t) const {
    using acc_t = at::opmath_type<scalar_t>;
    const index_t K = g.taps(), L = g.positions();
    const index_t rh = (g.kh - 1) / 2, rw = (g.kw - 1) / 2;
    LSA_KERNEL_LOOP(t, idx, total) {
      const index_t j = idx % g.w, i = (idx / g.w) % g.h, nc = idx / (g.h * g.w);
      const scalar_t* gp = grad + nc * K * L;
      index_t vi[3], vj[3];
      const int ni = san_virtual_positions<index_t>(i, g.h, g.mode, vi);
      const int nj = san_virtual_positions<index_t>(j, g.w, g.mode, vj);
      acc_t d1 = 0, d2 = 0;
      for (int a = 0; a < ni; ++a) {  // outputs whose centre is (i, j)
        const index_t h = san_output_of<index_t>(vi[a], rh, g.sh, g.ph, g.dh, g.ho);
        if (h < 0) continue;
        for (int b = 0; b < nj; ++b) {
          const index_t w = san_output_of<index_t>(vj[b], rw, g.sw, g.pw, g.dw, g.wo);
          if (w < 0) continue;
          for (index_t kk = 0; kk < K; ++kk) d1 += acc_t(gp[kk * L + h * g.wo + w]);
        }
      }
      for (index_t th = 0; th < g.kh; ++th)  // (output, tap) pairs whose neighbour is (i, j)
        for (int a = 0; a < ni; ++a) {
          const index_t h = san_output_of<index_t>(vi[a], th, g.sh, g.ph, g.dh, g.ho);
          if (h < 0) continue;
          for (index_t tw = 0; tw < g.kw; ++tw)
            for (int b = 0; b < nj; ++b) {
              const index_t w = san_output_of<index_t>(vj[b], tw, g.sw, g.pw, g.dw, g.wo);
              if (w >= 0) d2 -= acc_t(gp[(th * g.kw + tw) * L + h * g.wo + w]);
            }
        }
      dx1[idx] = static_cast<scalar_t>(d1);
      dx2[idx] = static_cast<scalar_t>(d2);
    }
  }
};

}  // namespace kernels

// The op entry points over a launcher (cuda::Launcher or emulate::Launcher).

template <typename Launcher>
at::Tensor forward_on(const Launcher& launch, const at::Tensor& input1, const at::Tensor& input2,
                      at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                      at::IntArrayRef dilation, int64_t pad_mode) {
  const SanGeometry g = check_inputs("subtraction2_forward", input1, input2, kernel_size, stride,
                                     padding, dilation, pad_mode);
  const at::Tensor a = input1.contiguous(), b = input2.contiguous();
  at::Tensor y = at::empty({g.n, g.c, g.taps(), g.positions()}, input1.options());
  const int64_t total = y.numel();
  if (total == 0) return y;
  LSA_DISPATCH_FLOATING_TYPES(input1.scalar_type(), "subtraction2_forward", [&] {
    LSA_DISPATCH_INDEX_TYPE(launch.index32({a.numel(), total}), [&] {
      launch.grid(total, kernels::Forward<scalar_t, index_t>{
                             g.cast<index_t>(), index_t(total), a.const_data_ptr<scalar_t>(),
                             b.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>()});
    });
  });
  return y;
}

template <typename Launcher>
std::tuple<at::Tensor, at::Tensor> backward_on(const Launcher& launch,
                                               const at::Tensor& grad_output,
                                               at::IntArrayRef input_size,
                                               at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                               at::IntArrayRef padding, at::IntArrayRef dilation,
                                               int64_t pad_mode) {
  const SanGeometry g = check_backward_inputs("subtraction2_backward", grad_output, input_size,
                                              kernel_size, stride, padding, dilation, pad_mode);
  const at::Tensor go = grad_output.contiguous();
  at::Tensor dx1 = at::empty({g.n, g.c, g.h, g.w}, grad_output.options());
  at::Tensor dx2 = at::empty({g.n, g.c, g.h, g.w}, grad_output.options());
  const int64_t total = dx1.numel();
  if (total == 0) return {dx1, dx2};
  LSA_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "subtraction2_backward", [&] {
    LSA_DISPATCH_INDEX_TYPE(launch.index32({go.numel(), total}), [&] {
      launch.grid(total, kernels::Backward<scalar_t, index_t>{
                             g.cast<index_t>(), index_t(total), go.const_data_ptr<scalar_t>(),
                             dx1.mutable_data_ptr<scalar_t>(), dx2.mutable_data_ptr<scalar_t>()});
    });
  });
  return {dx1, dx2};
}

}  // namespace subtraction
}  // namespace lsa
