// ELSA CPU kernels (forward and backward, optionally with the softmax over the k*k taps
// fused in), parallel with at::parallel_for.
//
//   forward:  one task per (n, c) plane, taps in row-major order (with the softmax: ATen's
//             softmax of the logits first, returned for the backward);
//   backward: one task per n, walking the output in blocks of rows (block_rows(g) rows of
//             every tap plane of A, sized to stay in the L2 cache) so that A and dA are
//             read and written once, not once per channel: per block, channels in order,
//             taps in row-major order, one inner loop along a row computes dV (scatter
//             into the task's own planes), dA (sum over channels in order), dM and dD
//             (per-(c, tap, x) partial rows summed over y, then over x); when a block is
//             done its dA rows are turned into the logits' gradient if the softmax is fused.
// Every output element is written by exactly one task in a fixed summation order, so
// results do not depend on the number of threads (no atomics, no shared accumulators).
// Inner loops run along a row with the out-of-image taps clipped beforehand, so they are
// branch-free (and vectorised for stride 1). Half types accumulate in float.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_softmax.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <tuple>
#include <type_traits>
#include <vector>

#include "elsa.h"
#include "lsa/cpu_isa.h"
#include "lsa/dispatch.h"

namespace lsa {
namespace elsa {
namespace {

// Output rows per block: about 16K elements of the (k*k, rows, Wo) slab of A.
int64_t block_rows(const Geometry& g) {
  return std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, g.taps() * g.wo));
}

// The in-image part of one tap within output rows [r0, r1): outputs y in [y0, y1), x in
// [x0, x1) read the input at (y*s + oy, x*s + ox).
struct Window {
  int64_t oy, ox, y0, y1, x0, x1;
};

Window window(const Geometry& g, int64_t tap, int64_t r0, int64_t r1) {
  Window t;
  t.oy = g.tap_offset(tap / g.k);
  t.ox = g.tap_offset(tap % g.k);
  valid_range(t.oy, g.s, g.h, g.ho, &t.y0, &t.y1);
  valid_range(t.ox, g.s, g.w, g.wo, &t.x0, &t.x1);
  t.y0 = std::max(t.y0, r0);
  t.y1 = std::max(t.y0, std::min(t.y1, r1));
  return t;
}

// Which gradients one backward pass computes (template flags of backward_block).
enum : int { kDV = 1, kDA = 2, kDM = 4, kDD = 8, kStride1 = 16 };  // kStride1: s == 1

// Per-thread accumulators of one sample's backward (sizes per the flags).
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> dv;      // (Cg, H, W)
  std::vector<acc_t> da;      // (k*k, rows, Wo) of the current block
  std::vector<acc_t> rm, rd;  // (Cg, k*k, Wo) partial rows of dM, dD (summed over y)
  std::vector<acc_t> dot;     // (rows * Wo) for the softmax gradient
};

// The compute loops: generic, and AVX2+FMA (wider vectors, and FMA contraction, which
// changes the rounding but not the thread-count independence) chosen at run time.
#define LSA_ELSA_ISA generic
#include "elsa_cpu_kernels.h"
#undef LSA_ELSA_ISA
#ifdef LSA_CPU_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LSA_ELSA_ISA avx2
#include "elsa_cpu_kernels.h"
#undef LSA_ELSA_ISA
#pragma GCC pop_options
#endif

at::Tensor forward_impl(const Inputs& in, const at::Tensor& attn) {
  const Geometry& g = in.g;
  auto out = at::empty({g.nb, g.cg, g.ho, g.wo}, in.v.options());
  if (out.numel() == 0) return out;
  LSA_DISPATCH_FLOATING_TYPES(in.v.scalar_type(), "elsa_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *pv = in.v.const_data_ptr<scalar_t>(), *pa = attn.const_data_ptr<scalar_t>();
    const scalar_t *pm = in.m.const_data_ptr<scalar_t>(), *pb = in.b.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const int64_t kk = g.taps(), plane_i = g.h * g.w, plane_o = g.ho * g.wo;
    at::parallel_for(0, g.nb * g.cg, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(plane_o);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t n = p / g.cg;
        LSA_ISA_CALL(forward_plane, g, pv + p * plane_i, pa + n * kk * plane_o, pm + p * kk,
                     pb + p * kk, acc.data(), po + p * plane_o);
      }
    });
  });
  return out;
}

at::Tensor elsa_forward_cpu(const at::Tensor& features, const at::Tensor& attn,
                            const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                            int64_t kernel_size, int64_t stride, int64_t dilation) {
  const Inputs in = check_inputs("elsa_forward", features, attn, ghost_mul, ghost_add, kernel_size,
                                 stride, dilation);
  return forward_impl(in, in.a);
}

std::tuple<at::Tensor, at::Tensor> elsa_softmax_forward_cpu(
    const at::Tensor& features, const at::Tensor& logits, const at::Tensor& ghost_mul,
    const at::Tensor& ghost_add, int64_t kernel_size, int64_t stride, int64_t dilation) {
  const Inputs in = check_inputs("elsa_softmax_forward", features, logits, ghost_mul, ghost_add,
                                 kernel_size, stride, dilation);
  // ATen's softmax (vectorised exp) measured faster than a scalar exp inside the op's
  // tasks; the op's own work per channel plane then reads it as the separate op would.
  at::Tensor attn = at::_softmax(in.a, 1, false);
  return {forward_impl(in, attn), attn};
}

// Calls fn(std::integral_constant<int, F>) for the runtime flags f (0 <= f < 32).
template <int F = 0, typename Fn>
void with_flags(int f, const Fn& fn) {
  if constexpr (F < 32) {
    if (f == F) return fn(std::integral_constant<int, F>{});
    with_flags<F + 1>(f, fn);
  }
}

Grads backward_impl(const char* fn, const at::Tensor& grad_out, const at::Tensor& features,
                    const at::Tensor& attn, const at::Tensor& ghost_mul,
                    const at::Tensor& ghost_add, int64_t kernel_size, int64_t stride,
                    int64_t dilation, std::array<bool, 4> mask, bool softmax) {
  const Inputs in =
      check_inputs(fn, features, attn, ghost_mul, ghost_add, kernel_size, stride, dilation);
  const Geometry& g = in.g;
  check_grad(fn, grad_out, features, g);
  bool empty_output = false;
  at::Tensor dv, da, dm, dd;  // the kernels write every element of those they compute
  std::tie(dv, da, dm, dd) = allocate_grads(g, features.options(), mask, &empty_output);
  const auto none = [&] { return at::empty({0}, features.options()); };
  if (empty_output) return {dv, da, mask[2] ? dm : none(), mask[3] ? dd : none()};
  const int flags =
      (mask[0] ? kDV : 0) | (mask[1] ? kDA : 0) | (mask[2] ? kDM : 0) | (mask[3] ? kDD : 0);
  if (flags == 0) return {dv, da, none(), none()};
  const int all_flags = flags | (stride == 1 ? kStride1 : 0);
  const auto go = grad_out.contiguous();
  LSA_DISPATCH_FLOATING_TYPES(features.scalar_type(), "elsa_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *pg = go.const_data_ptr<scalar_t>(), *pv = in.v.const_data_ptr<scalar_t>();
    const scalar_t *pa = in.a.const_data_ptr<scalar_t>(), *pm = in.m.const_data_ptr<scalar_t>();
    const scalar_t* pb = in.b.const_data_ptr<scalar_t>();
    scalar_t* pdv = mask[0] ? dv.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* pda = mask[1] ? da.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* pdm = mask[2] ? dm.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* pdd = mask[3] ? dd.mutable_data_ptr<scalar_t>() : nullptr;
    const int64_t kk = g.taps(), plane_i = g.h * g.w, plane_o = g.ho * g.wo;
    const int64_t block = block_rows(g) * g.wo;
    with_flags(all_flags, [&](auto f) {
      constexpr int F = decltype(f)::value;
      at::parallel_for(0, g.nb, 1, [&](int64_t begin, int64_t end) {
        Scratch<acc_t> sc;
        sc.dv.resize(F & kDV ? g.cg * plane_i : 0);
        sc.da.resize(F & kDA ? kk * block : 0);
        sc.rm.resize(F & kDM ? g.cg * kk * g.wo : 0);
        sc.rd.resize(F & kDD ? g.cg * kk * g.wo : 0);
        sc.dot.resize(F & kDA ? block : 0);
        for (int64_t n = begin; n < end; ++n) {
          const int64_t pc = n * g.cg;  // first (n, c) plane
          LSA_ISA_CALL(backward_sample, f, g, softmax, pg + pc * plane_o, pv + pc * plane_i,
                       pa + n * kk * plane_o, pm + pc * kk, pb + pc * kk, sc,
                       pdv ? pdv + pc * plane_i : nullptr, pda ? pda + n * kk * plane_o : nullptr,
                       pdm ? pdm + pc * kk : nullptr, pdd ? pdd + pc * kk : nullptr);
        }
      });
    });
  });
  return {dv, da, mask[2] ? dm : none(), mask[3] ? dd : none()};
}

Grads elsa_backward_cpu(const at::Tensor& grad_out, const at::Tensor& features,
                        const at::Tensor& attn, const at::Tensor& ghost_mul,
                        const at::Tensor& ghost_add, int64_t kernel_size, int64_t stride,
                        int64_t dilation, std::array<bool, 4> mask) {
  return backward_impl("elsa_backward", grad_out, features, attn, ghost_mul, ghost_add, kernel_size,
                       stride, dilation, mask, false);
}

Grads elsa_softmax_backward_cpu(const at::Tensor& grad_out, const at::Tensor& features,
                                const at::Tensor& attn, const at::Tensor& ghost_mul,
                                const at::Tensor& ghost_add, int64_t kernel_size, int64_t stride,
                                int64_t dilation, std::array<bool, 4> mask) {
  return backward_impl("elsa_softmax_backward", grad_out, features, attn, ghost_mul, ghost_add,
                       kernel_size, stride, dilation, mask, true);
}

}  // namespace

TORCH_LIBRARY_IMPL(lsa, CPU, m) {
  m.impl("elsa_forward", &elsa_forward_cpu);
  m.impl("elsa_backward", &elsa_backward_cpu);
  m.impl("elsa_softmax_forward", &elsa_softmax_forward_cpu);
  m.impl("elsa_softmax_backward", &elsa_softmax_backward_cpu);
}

}  // namespace elsa
}  // namespace lsa
