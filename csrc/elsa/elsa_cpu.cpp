// ELSA CPU kernels (forward and backward), parallel with at::parallel_for.
//
// Every output element is written by exactly one task, in a fixed summation order, so
// results do not depend on the number of threads (no atomics, no shared accumulators):
//   forward, dV, dM, dD: one task per (n, c) plane; taps in row-major order;
//   dA:                  one task per (n, tap) plane; channels in order.
// Inner loops run along a row with the out-of-image taps clipped beforehand, so they are
// branch-free (and vectorised for stride 1). Half types accumulate in float.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

#include "elsa.h"
#include "lsa/dispatch.h"

namespace lsa {
namespace elsa {
namespace {

// out[n, c] for one (n, c) plane.
template <typename scalar_t, typename acc_t>
void forward_plane(const Geometry& g, const scalar_t* LSA_RESTRICT v,
                   const scalar_t* LSA_RESTRICT a, const scalar_t* LSA_RESTRICT mul,
                   const scalar_t* LSA_RESTRICT add, acc_t* LSA_RESTRICT acc,
                   scalar_t* LSA_RESTRICT out) {
  const int64_t plane_o = g.ho * g.wo;
  for (int64_t i = 0; i < plane_o; ++i) acc[i] = acc_t(0);
  for (int64_t ky = 0; ky < g.k; ++ky) {
    const int64_t oy = g.tap_offset(ky);
    int64_t y0, y1;
    valid_range(oy, g.s, g.h, g.ho, &y0, &y1);
    for (int64_t kx = 0; kx < g.k; ++kx) {
      const int64_t ox = g.tap_offset(kx);
      int64_t x0, x1;
      valid_range(ox, g.s, g.w, g.wo, &x0, &x1);
      const int64_t tap = ky * g.k + kx;
      const acc_t m = static_cast<acc_t>(mul[tap]);
      const acc_t b = static_cast<acc_t>(add[tap]);
      for (int64_t y = y0; y < y1; ++y) {
        const scalar_t* vr = v + (y * g.s + oy) * g.w + ox;
        const scalar_t* ar = a + tap * plane_o + y * g.wo;
        acc_t* accr = acc + y * g.wo;
        if (g.s == 1) {
          for (int64_t x = x0; x < x1; ++x)
            accr[x] += static_cast<acc_t>(vr[x]) * (static_cast<acc_t>(ar[x]) * m + b);
        } else {
          for (int64_t x = x0; x < x1; ++x)
            accr[x] += static_cast<acc_t>(vr[x * g.s]) * (static_cast<acc_t>(ar[x]) * m + b);
        }
      }
    }
  }
  for (int64_t i = 0; i < plane_o; ++i) out[i] = static_cast<scalar_t>(acc[i]);
}

// dV (whole plane), dM and dD (k*k values) of one (n, c) plane.
template <typename scalar_t, typename acc_t, bool NEED_V, bool NEED_MD>
void backward_plane(const Geometry& g, const scalar_t* LSA_RESTRICT go,
                    const scalar_t* LSA_RESTRICT v, const scalar_t* LSA_RESTRICT a,
                    const scalar_t* LSA_RESTRICT mul, const scalar_t* LSA_RESTRICT add,
                    acc_t* LSA_RESTRICT dv_acc, acc_t* LSA_RESTRICT row_m,
                    acc_t* LSA_RESTRICT row_d, scalar_t* LSA_RESTRICT dv,
                    scalar_t* LSA_RESTRICT dmul, scalar_t* LSA_RESTRICT dadd) {
  const int64_t plane_i = g.h * g.w, plane_o = g.ho * g.wo, s = g.s;
  if (NEED_V)
    for (int64_t i = 0; i < plane_i; ++i) dv_acc[i] = acc_t(0);
  for (int64_t ky = 0; ky < g.k; ++ky) {
    const int64_t oy = g.tap_offset(ky);
    int64_t y0, y1;
    valid_range(oy, s, g.h, g.ho, &y0, &y1);
    for (int64_t kx = 0; kx < g.k; ++kx) {
      const int64_t ox = g.tap_offset(kx);
      int64_t x0, x1;
      valid_range(ox, s, g.w, g.wo, &x0, &x1);
      const int64_t tap = ky * g.k + kx;
      const acc_t m = static_cast<acc_t>(mul[tap]);
      const acc_t b = static_cast<acc_t>(add[tap]);
      if (NEED_MD)
        for (int64_t x = 0; x < g.wo; ++x) row_m[x] = row_d[x] = acc_t(0);
      for (int64_t y = y0; y < y1; ++y) {
        const int64_t in_off = (y * s + oy) * g.w + ox;
        const scalar_t* vr = v + in_off;
        const scalar_t* ar = a + tap * plane_o + y * g.wo;
        const scalar_t* gr = go + y * g.wo;
        acc_t* dvr = NEED_V ? dv_acc + in_off : nullptr;
        for (int64_t x = x0; x < x1; ++x) {
          const acc_t gx = static_cast<acc_t>(gr[x]);
          const acc_t ax = static_cast<acc_t>(ar[x]);
          if (NEED_V) dvr[x * s] += gx * (ax * m + b);
          if (NEED_MD) {
            const acc_t t = gx * static_cast<acc_t>(vr[x * s]);
            row_d[x] += t;
            row_m[x] += t * ax;
          }
        }
      }
      if (NEED_MD) {
        acc_t sm = acc_t(0), sd = acc_t(0);
        for (int64_t x = x0; x < x1; ++x) {
          sm += row_m[x];
          sd += row_d[x];
        }
        dmul[tap] = static_cast<scalar_t>(sm);
        dadd[tap] = static_cast<scalar_t>(sd);
      }
    }
  }
  if (NEED_V)
    for (int64_t i = 0; i < plane_i; ++i) dv[i] = static_cast<scalar_t>(dv_acc[i]);
}

// dA[n, tap] = sum_c mul[n, c, tap] * G[n, c] * V[n, c] shifted by the tap.
template <typename scalar_t, typename acc_t>
void attn_grad_plane(const Geometry& g, int64_t tap, const scalar_t* LSA_RESTRICT go,
                     const scalar_t* LSA_RESTRICT v, const scalar_t* LSA_RESTRICT mul,
                     acc_t* LSA_RESTRICT acc, scalar_t* LSA_RESTRICT da) {
  const int64_t plane_i = g.h * g.w, plane_o = g.ho * g.wo, s = g.s, kk = g.taps();
  const int64_t oy = g.tap_offset(tap / g.k), ox = g.tap_offset(tap % g.k);
  int64_t y0, y1, x0, x1;
  valid_range(oy, s, g.h, g.ho, &y0, &y1);
  valid_range(ox, s, g.w, g.wo, &x0, &x1);
  for (int64_t i = 0; i < plane_o; ++i) acc[i] = acc_t(0);
  for (int64_t c = 0; c < g.cg; ++c) {
    const acc_t m = static_cast<acc_t>(mul[c * kk + tap]);
    const scalar_t* vc = v + c * plane_i;
    const scalar_t* gc = go + c * plane_o;
    for (int64_t y = y0; y < y1; ++y) {
      const scalar_t* vr = vc + (y * s + oy) * g.w + ox;
      const scalar_t* gr = gc + y * g.wo;
      acc_t* accr = acc + y * g.wo;
      for (int64_t x = x0; x < x1; ++x)
        accr[x] += m * static_cast<acc_t>(gr[x]) * static_cast<acc_t>(vr[x * s]);
    }
  }
  for (int64_t i = 0; i < plane_o; ++i) da[i] = static_cast<scalar_t>(acc[i]);
}

at::Tensor elsa_forward_cpu(const at::Tensor& features, const at::Tensor& attn,
                            const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                            int64_t kernel_size, int64_t stride, int64_t dilation) {
  const Inputs in = check_inputs("elsa_forward", features, attn, ghost_mul, ghost_add, kernel_size,
                                 stride, dilation);
  const Geometry& g = in.g;
  auto out = at::empty({g.nb, g.cg, g.ho, g.wo}, features.options());
  if (out.numel() == 0) return out;
  LSA_DISPATCH_FLOATING_TYPES(features.scalar_type(), "elsa_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *pv = in.v.const_data_ptr<scalar_t>(), *pa = in.a.const_data_ptr<scalar_t>();
    const scalar_t *pm = in.m.const_data_ptr<scalar_t>(), *pb = in.b.const_data_ptr<scalar_t>();
    scalar_t* po = out.mutable_data_ptr<scalar_t>();
    const int64_t kk = g.taps(), plane_i = g.h * g.w, plane_o = g.ho * g.wo;
    at::parallel_for(0, g.nb * g.cg, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(plane_o);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t n = p / g.cg;
        forward_plane<scalar_t, acc_t>(g, pv + p * plane_i, pa + n * kk * plane_o, pm + p * kk,
                                       pb + p * kk, acc.data(), po + p * plane_o);
      }
    });
  });
  return out;
}

Grads elsa_backward_cpu(const at::Tensor& grad_out, const at::Tensor& features,
                        const at::Tensor& attn, const at::Tensor& ghost_mul,
                        const at::Tensor& ghost_add, int64_t kernel_size, int64_t stride,
                        int64_t dilation, std::array<bool, 4> mask) {
  const Inputs in = check_inputs("elsa_backward", features, attn, ghost_mul, ghost_add, kernel_size,
                                 stride, dilation);
  const Geometry& g = in.g;
  check_grad("elsa_backward", grad_out, features, g);
  const bool need_v = mask[0], need_a = mask[1], need_md = mask[2] || mask[3];
  bool empty_output = false;
  at::Tensor dv, da, dm, dd;  // the kernels write every element of those they compute
  std::tie(dv, da, dm, dd) = allocate_grads(g, features.options(), mask, &empty_output);
  const auto none = [&] { return at::empty({0}, features.options()); };
  if (empty_output) return {dv, da, mask[2] ? dm : none(), mask[3] ? dd : none()};
  const auto go = grad_out.contiguous();
  LSA_DISPATCH_FLOATING_TYPES(features.scalar_type(), "elsa_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *pg = go.const_data_ptr<scalar_t>(), *pv = in.v.const_data_ptr<scalar_t>();
    const scalar_t *pa = in.a.const_data_ptr<scalar_t>(), *pm = in.m.const_data_ptr<scalar_t>();
    const scalar_t* pb = in.b.const_data_ptr<scalar_t>();
    const int64_t kk = g.taps(), plane_i = g.h * g.w, plane_o = g.ho * g.wo;
    if (need_v || need_md) {
      scalar_t* pdv = need_v ? dv.mutable_data_ptr<scalar_t>() : nullptr;
      scalar_t* pdm = need_md ? dm.mutable_data_ptr<scalar_t>() : nullptr;
      scalar_t* pdd = need_md ? dd.mutable_data_ptr<scalar_t>() : nullptr;
      at::parallel_for(0, g.nb * g.cg, 1, [&](int64_t begin, int64_t end) {
        std::vector<acc_t> dv_acc(need_v ? plane_i : 0), row_m(g.wo), row_d(g.wo);
        for (int64_t p = begin; p < end; ++p) {
          const int64_t n = p / g.cg;
          const scalar_t *gp = pg + p * plane_o, *vp = pv + p * plane_i;
          const scalar_t* ap = pa + n * kk * plane_o;
          scalar_t* dvp = need_v ? pdv + p * plane_i : nullptr;
          scalar_t* dmp = need_md ? pdm + p * kk : nullptr;
          scalar_t* ddp = need_md ? pdd + p * kk : nullptr;
          if (need_v && need_md)
            backward_plane<scalar_t, acc_t, true, true>(g, gp, vp, ap, pm + p * kk, pb + p * kk,
                                                        dv_acc.data(), row_m.data(), row_d.data(),
                                                        dvp, dmp, ddp);
          else if (need_v)
            backward_plane<scalar_t, acc_t, true, false>(g, gp, vp, ap, pm + p * kk, pb + p * kk,
                                                         dv_acc.data(), row_m.data(), row_d.data(),
                                                         dvp, dmp, ddp);
          else
            backward_plane<scalar_t, acc_t, false, true>(g, gp, vp, ap, pm + p * kk, pb + p * kk,
                                                         dv_acc.data(), row_m.data(), row_d.data(),
                                                         dvp, dmp, ddp);
        }
      });
    }
    if (need_a) {
      scalar_t* pda = da.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, g.nb * kk, 1, [&](int64_t begin, int64_t end) {
        std::vector<acc_t> acc(plane_o);
        for (int64_t q = begin; q < end; ++q) {
          const int64_t n = q / kk, tap = q % kk;
          attn_grad_plane<scalar_t, acc_t>(g, tap, pg + n * g.cg * plane_o, pv + n * g.cg * plane_i,
                                           pm + n * g.cg * kk, acc.data(), pda + q * plane_o);
        }
      });
    }
  });
  return {dv, da, mask[2] ? dm : none(), mask[3] ? dd : none()};
}

}  // namespace

TORCH_LIBRARY_IMPL(lsa, CPU, m) {
  m.impl("elsa_forward", &elsa_forward_cpu);
  m.impl("elsa_backward", &elsa_backward_cpu);
}

}  // namespace elsa
}  // namespace lsa
