// Fused SAN patchwise attention, CPU kernels (float32, float64), at::parallel_for.
//
// Per tile of up to kTile pixels of one image, gamma's input rows (the centre's u1 and
// every tap's u2, read through the tap runs), its hidden rows and the Cw * K aggregation
// weights live in per-task buffers ([channels][tile], in cache); only (N, C, H, W)-sized
// tensors are read or written. Scheduling as in the pairwise op (san_fused_cpu.cpp):
// forward and moments over tiles; the backwards recompute a tile's forward and run over
// bands of output rows in two phases, so the scatters into grad u2 / grad value need no
// atomics and the results do not depend on the thread count.
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

#include "../san_fused/san_fused_tile.h"
#include "san_patchwise.h"

namespace lsa {
namespace san_fused {
namespace {

#define LSA_SAN_FUSED_ISA generic
#include "../san_fused/san_fused_kernels.h"
#include "san_patchwise_kernels.h"
#undef LSA_SAN_FUSED_ISA
#ifdef LSA_CPU_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#pragma GCC optimize("associative-math,no-signed-zeros,no-trapping-math")
#define LSA_SAN_FUSED_ISA avx2
#include "../san_fused/san_fused_kernels.h"
#include "san_patchwise_kernels.h"
#undef LSA_SAN_FUSED_ISA
#pragma GCC pop_options
#endif

using san_patchwise::check_inputs;
using san_patchwise::Dims;

at::Tensor patchwise_forward_cpu(const at::Tensor& u1, const at::Tensor& u2,
                                 const at::Tensor& value, const at::Tensor& scale1,
                                 const at::Tensor& shift1, const at::Tensor& weight1,
                                 const at::Tensor& bias1, const at::Tensor& weight2,
                                 const at::Tensor& bias2, int64_t kernel_size, int64_t dilation,
                                 int64_t pad_mode) {
  Dims d{};
  const SanGeometry g =
      check_inputs("san_patchwise_forward", u1, u2, scale1, shift1, weight1, &bias1, &weight2,
                   &bias2, &value, nullptr, kernel_size, dilation, pad_mode, &d);
  const Window win(g);
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous(), v = value.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous(), w1 = weight1.contiguous();
  const at::Tensor b1 = bias1.contiguous(), w2 = weight2.contiguous(), b2 = bias2.contiguous();
  at::Tensor y = at::empty({g.n, d.c, g.h, g.w}, value.options());
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_patchwise_forward_cpu", [&] {
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, &w1, &b1, &w2, &b2, d.cw * win.K);
    LSA_ISA_CALL(patch_forward_kernel<scalar_t>, win, net, d.r, d.c, x1.const_data_ptr<scalar_t>(),
                 x2.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
                 y.mutable_data_ptr<scalar_t>());
  });
  return y;
}

std::vector<at::Tensor> patchwise_backward_cpu(const at::Tensor& grad_output, const at::Tensor& u1,
                                               const at::Tensor& u2, const at::Tensor& value,
                                               const at::Tensor& scale1, const at::Tensor& shift1,
                                               const at::Tensor& weight1, const at::Tensor& bias1,
                                               const at::Tensor& weight2, const at::Tensor& bias2,
                                               int64_t kernel_size, int64_t dilation,
                                               int64_t pad_mode) {
  Dims d{};
  const SanGeometry g =
      check_inputs("san_patchwise_backward", u1, u2, scale1, shift1, weight1, &bias1, &weight2,
                   &bias2, &value, &grad_output, kernel_size, dilation, pad_mode, &d);
  const Window win(g);
  const at::Tensor gy = grad_output.contiguous(), x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor v = value.contiguous(), s1 = scale1.contiguous(), t1 = shift1.contiguous();
  const at::Tensor w1 = weight1.contiguous(), b1 = bias1.contiguous();
  const at::Tensor w2 = weight2.contiguous(), b2 = bias2.contiguous();
  at::Tensor du1 = at::zeros_like(x1), du2 = at::zeros_like(x2), dv = at::zeros_like(v);
  at::Tensor ds1 = at::empty_like(s1), dt1 = at::empty_like(t1), dw1 = at::empty_like(w1);
  at::Tensor db1 = at::empty_like(b1), dw2 = at::empty_like(w2), db2 = at::empty_like(b2);
  const GradLayout lay(d.ca, d.m, d.cw * win.K);
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_patchwise_backward_cpu", [&] {
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, &w1, &b1, &w2, &b2, d.cw * win.K);
    std::vector<scalar_t> partials;
    LSA_ISA_CALL(patch_backward_kernel<scalar_t>, win, net, d.r, d.c, gy.const_data_ptr<scalar_t>(),
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

at::Tensor patchwise_moments_cpu(const at::Tensor& u1, const at::Tensor& u2,
                                 const at::Tensor& scale1, const at::Tensor& shift1,
                                 const at::Tensor& weight1, int64_t kernel_size, int64_t dilation,
                                 int64_t pad_mode) {
  Dims d{};
  const SanGeometry g =
      check_inputs("san_patchwise_moments", u1, u2, scale1, shift1, weight1, nullptr, nullptr,
                   nullptr, nullptr, nullptr, kernel_size, dilation, pad_mode, &d);
  const Window win(g);
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous(), w1 = weight1.contiguous();
  at::Tensor out = at::empty({2, d.m}, u1.options());
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_patchwise_moments_cpu", [&] {
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, &w1, nullptr, nullptr, nullptr, 0);
    LSA_ISA_CALL(patch_moments_kernel<scalar_t>, win, net, d.r, x1.const_data_ptr<scalar_t>(),
                 x2.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

std::vector<at::Tensor> patchwise_moments_backward_cpu(
    const at::Tensor& grad, const at::Tensor& u1, const at::Tensor& u2, const at::Tensor& scale1,
    const at::Tensor& shift1, const at::Tensor& weight1, int64_t kernel_size, int64_t dilation,
    int64_t pad_mode) {
  const char* fn = "san_patchwise_moments_backward";
  Dims d{};
  const SanGeometry g = check_inputs(fn, u1, u2, scale1, shift1, weight1, nullptr, nullptr, nullptr,
                                     nullptr, nullptr, kernel_size, dilation, pad_mode, &d);
  check_float_tensor(fn, "grad", grad, 2);
  TORCH_CHECK(grad.size(0) == 2 && grad.size(1) == d.m, fn, ": grad must have shape (2, ", d.m,
              "), got ", grad.sizes());
  const Window win(g);
  const at::Tensor gr = grad.contiguous().to(u1.scalar_type());
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous(), w1 = weight1.contiguous();
  at::Tensor du1 = at::zeros_like(x1), du2 = at::zeros_like(x2);
  at::Tensor ds1 = at::empty_like(s1), dt1 = at::empty_like(t1), dw1 = at::empty_like(w1);
  const GradLayout lay(d.ca, d.m, 0);
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_patchwise_moments_backward_cpu", [&] {
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, &w1, nullptr, nullptr, nullptr, 0);
    std::vector<scalar_t> partials;
    LSA_ISA_CALL(patch_moments_backward_kernel<scalar_t>, win, net, d.r,
                 gr.const_data_ptr<scalar_t>(), x1.const_data_ptr<scalar_t>(),
                 x2.const_data_ptr<scalar_t>(), du1.mutable_data_ptr<scalar_t>(),
                 du2.mutable_data_ptr<scalar_t>(), partials, lay);
    reduce_partials<scalar_t>(partials, lay, {{&ds1, lay.s1}, {&dt1, lay.t1}, {&dw1, lay.w1}});
  });
  return {du1, du2, ds1, dt1, dw1};
}

}  // namespace
}  // namespace san_fused
}  // namespace lsa

TORCH_LIBRARY_IMPL(lsa, CPU, m) {
  m.impl("san_patchwise_forward", &lsa::san_fused::patchwise_forward_cpu);
  m.impl("san_patchwise_backward", &lsa::san_fused::patchwise_backward_cpu);
  m.impl("san_patchwise_moments", &lsa::san_fused::patchwise_moments_cpu);
  m.impl("san_patchwise_moments_backward", &lsa::san_fused::patchwise_moments_backward_cpu);
}
