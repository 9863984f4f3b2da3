// Fused SAN pairwise attention, CPU kernels (float32, float64), at::parallel_for.
//
// Work unit: a tile of up to kTile consecutive pixels (flattened h*W + w) of one image.
// For each tap the tile's relation rows, gamma's hidden rows and logits are computed
// in small per-task buffers ([channels][tile] so the matrix products vectorise along
// the pixels); only (N, C, H, W)-sized tensors are read or written.
//
// Forward:     tasks = tiles; no shared writes.
// Moments:     tasks = tiles; per-task partial sums (double), added in task order.
// Backward:    recomputes the forward of a tile, then scatters into grad u2 / grad value
//              at the taps' source pixels. Tasks are bands of B >= 2 * padding output
//              rows, run in two phases (even bands, then odd bands): the source rows of
//              two bands of one phase never overlap, so the scatters need no atomics and
//              every element receives its terms in a fixed order. Parameter gradients
//              are per-task partials added in task order. Results therefore do not
//              depend on the thread count. The moments backward runs the same way
//              (it needs only a, not gamma's layers: da = g_a + (G + G^T) a).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "san_fused.h"
#include "san_fused_tile.h"

namespace lsa {
namespace san_fused {
namespace {

// The compute loops: generic, and AVX2+FMA with reassociation allowed in the
// reductions (so they vectorise). The order of every sum is fixed by the code and the
// build, not by the thread count, so results stay deterministic.
#define LSA_SAN_FUSED_ISA generic
#include "san_fused_kernels.h"
#undef LSA_SAN_FUSED_ISA
#ifdef LSA_CPU_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("associative-math,no-signed-zeros,no-trapping-math")
#define LSA_SAN_FUSED_ISA avx2
#include "san_fused_kernels.h"
#undef LSA_SAN_FUSED_ISA
#pragma GCC pop_options
#endif

// ---------------------------------------------------------------------------------------

at::Tensor forward_cpu(const at::Tensor& u1, const at::Tensor& u2, const at::Tensor& value,
                       const at::Tensor& scale1, const at::Tensor& shift1,
                       const at::Tensor& weight1, const at::Tensor& bias1,
                       const at::Tensor& weight2, const at::Tensor& bias2, int64_t kernel_size,
                       int64_t dilation, int64_t pad_mode) {
  Dims d{};
  const SanGeometry g =
      check_inputs("san_pairwise_forward", u1, u2, scale1, shift1, &weight1, &bias1, &weight2,
                   &bias2, &value, nullptr, kernel_size, dilation, pad_mode, &d);
  const Window win(g);
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous(), v = value.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous(), w1 = weight1.contiguous();
  const at::Tensor b1 = bias1.contiguous(), w2 = weight2.contiguous(), b2 = bias2.contiguous();
  at::Tensor y = at::empty({g.n, d.c, g.h, g.w}, value.options());
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_pairwise_forward_cpu", [&] {
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, &w1, &b1, &w2, &b2, d.cw);
    LSA_ISA_CALL(forward_kernel<scalar_t>, win, net, d.c, x1.const_data_ptr<scalar_t>(),
                 x2.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
                 y.mutable_data_ptr<scalar_t>());
  });
  return y;
}

std::vector<at::Tensor> backward_cpu(const at::Tensor& grad_output, const at::Tensor& u1,
                                     const at::Tensor& u2, const at::Tensor& value,
                                     const at::Tensor& scale1, const at::Tensor& shift1,
                                     const at::Tensor& weight1, const at::Tensor& bias1,
                                     const at::Tensor& weight2, const at::Tensor& bias2,
                                     int64_t kernel_size, int64_t dilation, int64_t pad_mode) {
  Dims d{};
  const SanGeometry g =
      check_inputs("san_pairwise_backward", u1, u2, scale1, shift1, &weight1, &bias1, &weight2,
                   &bias2, &value, &grad_output, kernel_size, dilation, pad_mode, &d);
  const Window win(g);
  const at::Tensor gy = grad_output.contiguous(), x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor v = value.contiguous(), s1 = scale1.contiguous(), t1 = shift1.contiguous();
  const at::Tensor w1 = weight1.contiguous(), b1 = bias1.contiguous();
  const at::Tensor w2 = weight2.contiguous(), b2 = bias2.contiguous();
  at::Tensor du1 = at::zeros_like(x1), du2 = at::zeros_like(x2), dv = at::zeros_like(v);
  at::Tensor ds1 = at::empty_like(s1), dt1 = at::empty_like(t1), dw1 = at::empty_like(w1);
  at::Tensor db1 = at::empty_like(b1), dw2 = at::empty_like(w2), db2 = at::empty_like(b2);
  const GradLayout lay(d.cr, d.m, d.cw);
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_pairwise_backward_cpu", [&] {
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, &w1, &b1, &w2, &b2, d.cw);
    std::vector<scalar_t> partials;
    LSA_ISA_CALL(backward_kernel<scalar_t>, win, net, d.c, gy.const_data_ptr<scalar_t>(),
                 x1.const_data_ptr<scalar_t>(), x2.const_data_ptr<scalar_t>(),
                 v.const_data_ptr<scalar_t>(), du1.mutable_data_ptr<scalar_t>(),
                 du2.mutable_data_ptr<scalar_t>(), dv.mutable_data_ptr<scalar_t>(), partials, lay);
    reduce_partials<scalar_t>(partials, lay,
                              {{&ds1, lay.s1},
                               {&dt1, lay.t1},
                               {&dw1, lay.w1},
                               {&db1, lay.b1},
                               {&dw2, lay.w2},
                               {&db2, lay.b2}});
  });
  return {du1, du2, dv, ds1, dt1, dw1, db1, dw2, db2};
}

at::Tensor moments_cpu(const at::Tensor& u1, const at::Tensor& u2, const at::Tensor& scale1,
                       const at::Tensor& shift1, int64_t kernel_size, int64_t dilation,
                       int64_t pad_mode) {
  Dims d{};
  const SanGeometry g =
      check_inputs("san_pairwise_moments", u1, u2, scale1, shift1, nullptr, nullptr, nullptr,
                   nullptr, nullptr, nullptr, kernel_size, dilation, pad_mode, &d);
  const Window win(g);
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous();
  at::Tensor out = at::empty({d.cr + 1, d.cr}, u1.options());
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_pairwise_moments_cpu", [&] {
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, nullptr, nullptr, nullptr, nullptr, 0);
    LSA_ISA_CALL(moments_kernel<scalar_t>, win, net, x1.const_data_ptr<scalar_t>(),
                 x2.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

std::vector<at::Tensor> moments_backward_cpu(const at::Tensor& grad, const at::Tensor& u1,
                                             const at::Tensor& u2, const at::Tensor& scale1,
                                             const at::Tensor& shift1, int64_t kernel_size,
                                             int64_t dilation, int64_t pad_mode) {
  const char* fn = "san_pairwise_moments_backward";
  Dims d{};
  const SanGeometry g = check_inputs(fn, u1, u2, scale1, shift1, nullptr, nullptr, nullptr, nullptr,
                                     nullptr, nullptr, kernel_size, dilation, pad_mode, &d);
  check_float_tensor(fn, "grad", grad, 2);
  TORCH_CHECK(grad.size(0) == d.cr + 1 && grad.size(1) == d.cr, fn, ": grad must have shape (",
              d.cr + 1, ", ", d.cr, "), got ", grad.sizes());
  const Window win(g);
  const at::Tensor gr = grad.contiguous().to(u1.scalar_type());
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous();
  at::Tensor du1 = at::zeros_like(x1), du2 = at::zeros_like(x2);
  at::Tensor ds1 = at::empty_like(s1), dt1 = at::empty_like(t1);
  const GradLayout lay(d.cr, 0, 0);
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_pairwise_moments_backward_cpu", [&] {
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, nullptr, nullptr, nullptr, nullptr, 0);
    std::vector<scalar_t> partials;
    LSA_ISA_CALL(moments_backward_kernel<scalar_t>, win, net, gr.const_data_ptr<scalar_t>(),
                 x1.const_data_ptr<scalar_t>(), x2.const_data_ptr<scalar_t>(),
                 du1.mutable_data_ptr<scalar_t>(), du2.mutable_data_ptr<scalar_t>(), partials, lay);
    reduce_partials<scalar_t>(partials, lay, {{&ds1, lay.s1}, {&dt1, lay.t1}});
  });
  return {du1, du2, ds1, dt1};
}

}  // namespace
}  // namespace san_fused
}  // namespace lsa

TORCH_LIBRARY_IMPL(lsa, CPU, m) {
  m.impl("san_pairwise_forward", &lsa::san_fused::forward_cpu);
  m.impl("san_pairwise_backward", &lsa::san_fused::backward_cpu);
  m.impl("san_pairwise_moments", &lsa::san_fused::moments_cpu);
  m.impl("san_pairwise_moments_backward", &lsa::san_fused::moments_backward_cpu);
}
