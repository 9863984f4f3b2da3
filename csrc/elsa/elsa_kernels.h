// ELSA CUDA kernels (per-thread bodies) and their launch, shared by elsa_cuda.cu (GPU)
// and elsa_emulate.cpp (the same bodies over the whole grid on the CPU, for tests;
// lsa/emulate.h).
//
// All kernels are gathers: each output element is owned by one thread (or, for the ghost
// gradients, one block with a fixed reduction tree), so there are no atomics and results are
// bitwise reproducible. Half types accumulate in float (at::opmath_type). Index arithmetic
// is 32-bit when every tensor fits, 64-bit otherwise.
//   forward: one thread per output (n, c, y, x), taps in row-major order
//   dV:      one thread per input (n, c, i, j), reading the outputs whose window covers it
//   dA:      one thread per (n, tap, y, x), channels in order (x fastest: coalesced)
//   dM, dD:  one block per (n, c, tap), strided partial sums + a shared-memory tree
// With the softmax fused (elsa_softmax_*): one thread per (n, y, x) computes the softmax of
// that pixel's k*k logits before the forward, and turns that pixel's dA into the logits'
// gradient (in place) after dA.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <array>
#include <cmath>
#include <tuple>

#include "elsa.h"
#include "lsa/dispatch.h"
#include "lsa/launch.h"

namespace lsa {
namespace elsa {
namespace kernels {

template <typename scalar_t, typename index_t>
struct Forward {
  GeometryT<index_t> g;
  index_t total;
  const scalar_t *v, *a, *mul, *add;
  scalar_t* out;

  LSA_HOST_DEVICE void operator()(const Thread& t) const {
    using acc_t = at::opmath_type<scalar_t>;
    const index_t kk = g.taps();
    LSA_KERNEL_LOOP(t, i, total) {
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
        const index_t iy = y * g.s + g.tap_offset(ky);
        if (iy < 0 || iy >= g.h) continue;
        for (index_t kx = 0; kx < g.k; ++kx) {
          const index_t ix = x * g.s + g.tap_offset(kx);
          if (ix < 0 || ix >= g.w) continue;
          const index_t tap = ky * g.k + kx;
          const acc_t f = acc_t(ap[tap * g.ho * g.wo]) * acc_t(mp[tap]) + acc_t(bp[tap]);
          acc += acc_t(vp[iy * g.w + ix]) * f;
        }
      }
      out[i] = static_cast<scalar_t>(acc);
    }
  }
};

template <typename scalar_t, typename index_t>
struct FeaturesGrad {
  GeometryT<index_t> g;
  index_t total;
  const scalar_t *go, *a, *mul, *add;
  scalar_t* dv;

  LSA_HOST_DEVICE void operator()(const Thread& t) const {
    using acc_t = at::opmath_type<scalar_t>;
    const index_t kk = g.taps();
    LSA_KERNEL_LOOP(t, i, total) {
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
        const index_t ty = iy - g.tap_offset(ky);  // = y * s for the output reading this input
        if (ty < 0 || ty % g.s != 0 || ty / g.s >= g.ho) continue;
        const index_t y = ty / g.s;
        for (index_t kx = 0; kx < g.k; ++kx) {
          const index_t tx = ix - g.tap_offset(kx);
          if (tx < 0 || tx % g.s != 0 || tx / g.s >= g.wo) continue;
          const index_t x = tx / g.s;
          const index_t tap = ky * g.k + kx;
          const index_t q = y * g.wo + x;
          const acc_t f = acc_t(ap[tap * g.ho * g.wo + q]) * acc_t(mp[tap]) + acc_t(bp[tap]);
          acc += acc_t(gp[q]) * f;
        }
      }
      dv[i] = static_cast<scalar_t>(acc);
    }
  }
};

template <typename scalar_t, typename index_t>
struct AttnGrad {
  GeometryT<index_t> g;
  index_t total;
  const scalar_t *go, *v, *mul;
  scalar_t* da;

  LSA_HOST_DEVICE void operator()(const Thread& t) const {
    using acc_t = at::opmath_type<scalar_t>;
    const index_t kk = g.taps();
    LSA_KERNEL_LOOP(t, i, total) {
      const index_t x = i % g.wo;
      const index_t y = (i / g.wo) % g.ho;
      const index_t tap = (i / (g.wo * g.ho)) % kk;
      const index_t n = i / (g.wo * g.ho * kk);
      const index_t iy = y * g.s + g.tap_offset(tap / g.k);
      const index_t ix = x * g.s + g.tap_offset(tap % g.k);
      acc_t acc = 0;
      if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) {
        const index_t plane_i = g.h * g.w, plane_o = g.ho * g.wo;
        const scalar_t* vp = v + n * g.cg * plane_i + iy * g.w + ix;
        const scalar_t* gp = go + n * g.cg * plane_o + y * g.wo + x;
        const scalar_t* mp = mul + n * g.cg * kk + tap;
        for (index_t c = 0; c < g.cg; ++c)
          acc += acc_t(mp[c * kk]) * acc_t(gp[c * plane_o]) * acc_t(vp[c * plane_i]);
      }
      da[i] = static_cast<scalar_t>(acc);
    }
  }
};

// One block per (n, c, tap): dM = sum G * V(shifted) * A, dD = sum G * V(shifted).
// Shared rows: 0 = dM partials, 1 = dD partials (lsa::cuda::block_reduce_kernel).
template <typename scalar_t, typename index_t>
struct GhostGrad {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr int kRows = 2;
  GeometryT<index_t> g;
  const scalar_t *go, *v, *a;
  scalar_t *dmul, *dadd;  // either may be null

  LSA_HOST_DEVICE void partial(const Thread& t, acc_t (*smem)[kThreads]) const {
    const index_t kk = g.taps();
    const index_t b = t.block;  // (n * Cg + c) * kk + tap
    const index_t tap = b % kk, p = b / kk, n = p / g.cg;
    const index_t oy = g.tap_offset(tap / g.k), ox = g.tap_offset(tap % g.k);
    int64_t y0, y1, x0, x1;
    valid_range(oy, g.s, g.h, g.ho, &y0, &y1);
    valid_range(ox, g.s, g.w, g.wo, &x0, &x1);
    const index_t ny = index_t(y1 - y0), nx = index_t(x1 - x0);
    const index_t plane_o = g.ho * g.wo;
    const scalar_t* gp = go + p * plane_o;
    const scalar_t* vp = v + p * g.h * g.w;
    const scalar_t* ap = a + (n * kk + tap) * plane_o;
    acc_t m = 0, d = 0;
    for (index_t j = t.thread; j < ny * nx; j += t.block_dim) {
      const index_t y = index_t(y0) + j / nx, x = index_t(x0) + j % nx;
      const index_t q = y * g.wo + x;
      const acc_t s = acc_t(gp[q]) * acc_t(vp[(y * g.s + oy) * g.w + x * g.s + ox]);
      d += s;
      m += s * acc_t(ap[q]);
    }
    smem[0][t.thread] = m;
    smem[1][t.thread] = d;
  }

  LSA_HOST_DEVICE void combine(unsigned int i, unsigned int half, acc_t (*smem)[kThreads]) const {
    smem[0][i] += smem[0][i + half];
    smem[1][i] += smem[1][i + half];
  }

  LSA_HOST_DEVICE void finish(unsigned int block, acc_t (*smem)[kThreads]) const {
    if (dmul != nullptr) dmul[block] = static_cast<scalar_t>(smem[0][0]);
    if (dadd != nullptr) dadd[block] = static_cast<scalar_t>(smem[1][0]);
  }
};

// One thread per pixel (n, y, x): p[n, :, y, x] = softmax(l[n, :, y, x]) over the taps.
template <typename scalar_t, typename index_t>
struct Softmax {
  index_t taps, plane, total;  // total = Nb * plane
  const scalar_t* l;
  scalar_t* p;

  LSA_HOST_DEVICE void operator()(const Thread& t) const {
    using acc_t = at::opmath_type<scalar_t>;
    LSA_KERNEL_LOOP(t, i, total) {
      const index_t base = (i / plane) * taps * plane + i % plane;
      acc_t mx = acc_t(l[base]);
      for (index_t k = 1; k < taps; ++k) {
        const acc_t x = acc_t(l[base + k * plane]);
        mx = x > mx ? x : mx;
      }
      acc_t sum = 0;
      for (index_t k = 0; k < taps; ++k) sum += std::exp(acc_t(l[base + k * plane]) - mx);
      for (index_t k = 0; k < taps; ++k)
        p[base + k * plane] =
            static_cast<scalar_t>(std::exp(acc_t(l[base + k * plane]) - mx) / sum);
    }
  }
};

// One thread per pixel (n, y, x), in place: d <- p * (d - sum_taps p * d).
template <typename scalar_t, typename index_t>
struct SoftmaxGrad {
  index_t taps, plane, total;
  const scalar_t* p;
  scalar_t* d;

  LSA_HOST_DEVICE void operator()(const Thread& t) const {
    using acc_t = at::opmath_type<scalar_t>;
    LSA_KERNEL_LOOP(t, i, total) {
      const index_t base = (i / plane) * taps * plane + i % plane;
      acc_t dot = 0;
      for (index_t k = 0; k < taps; ++k)
        dot += acc_t(p[base + k * plane]) * acc_t(d[base + k * plane]);
      for (index_t k = 0; k < taps; ++k) {
        const index_t j = base + k * plane;
        d[j] = static_cast<scalar_t>(acc_t(p[j]) * (acc_t(d[j]) - dot));
      }
    }
  }
};

}  // namespace kernels

// The op entry points over a launcher (cuda::Launcher or emulate::Launcher).

// (out, attn): with `softmax`, `attn` is softmax(logits = the `attn` argument) over the taps
// and the output uses it; without, the returned attn is undefined.
template <typename Launcher>
std::tuple<at::Tensor, at::Tensor> forward_on(const Launcher& launch, const at::Tensor& features,
                                              const at::Tensor& attn, const at::Tensor& ghost_mul,
                                              const at::Tensor& ghost_add, int64_t kernel_size,
                                              int64_t stride, int64_t dilation, bool softmax) {
  const char* fn = softmax ? "elsa_softmax_forward" : "elsa_forward";
  const Inputs in =
      check_inputs(fn, features, attn, ghost_mul, ghost_add, kernel_size, stride, dilation);
  const Geometry& g = in.g;
  at::Tensor out = at::empty({g.nb, g.cg, g.ho, g.wo}, features.options());
  at::Tensor probs = softmax ? at::empty_like(in.a) : at::Tensor();
  const int64_t total = out.numel(), pixels = g.nb * g.ho * g.wo;
  LSA_DISPATCH_FLOATING_TYPES(features.scalar_type(), "elsa_forward", [&] {
    LSA_DISPATCH_INDEX_TYPE(launch.index32({in.v.numel(), in.a.numel(), in.m.numel(), total}), [&] {
      const scalar_t* pa = in.a.const_data_ptr<scalar_t>();
      if (softmax && pixels > 0) {
        launch.grid(pixels, kernels::Softmax<scalar_t, index_t>{
                                index_t(g.taps()), index_t(g.ho * g.wo), index_t(pixels), pa,
                                probs.mutable_data_ptr<scalar_t>()});
        pa = probs.const_data_ptr<scalar_t>();
      }
      if (total > 0)
        launch.grid(total, kernels::Forward<scalar_t, index_t>{
                               g.cast<index_t>(), index_t(total), in.v.const_data_ptr<scalar_t>(),
                               pa, in.m.const_data_ptr<scalar_t>(), in.b.const_data_ptr<scalar_t>(),
                               out.mutable_data_ptr<scalar_t>()});
    });
  });
  return {out, probs};
}

template <typename Launcher>
Grads backward_on(const Launcher& launch, const at::Tensor& grad_out, const at::Tensor& features,
                  const at::Tensor& attn, const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                  int64_t kernel_size, int64_t stride, int64_t dilation, std::array<bool, 4> mask,
                  bool softmax) {
  // with `softmax`, attn is the softmax the forward returned and the second gradient is
  // the logits'
  const char* fn = softmax ? "elsa_softmax_backward" : "elsa_backward";
  const Inputs in =
      check_inputs(fn, features, attn, ghost_mul, ghost_add, kernel_size, stride, dilation);
  const Geometry& g = in.g;
  check_grad(fn, grad_out, features, g);
  bool empty_output = false;
  at::Tensor dv, da, dm, dd;
  std::tie(dv, da, dm, dd) = allocate_grads(g, features.options(), mask, &empty_output);
  if (!empty_output) {
    const at::Tensor go = grad_out.contiguous();
    LSA_DISPATCH_FLOATING_TYPES(features.scalar_type(), "elsa_backward", [&] {
      const bool small = launch.index32({in.v.numel(), in.a.numel(), in.m.numel(), go.numel()});
      LSA_DISPATCH_INDEX_TYPE(small, [&] {
        const GeometryT<index_t> gi = g.cast<index_t>();
        const scalar_t *pg = go.const_data_ptr<scalar_t>(), *pv = in.v.const_data_ptr<scalar_t>();
        const scalar_t *pa = in.a.const_data_ptr<scalar_t>(), *pm = in.m.const_data_ptr<scalar_t>();
        const scalar_t* pb = in.b.const_data_ptr<scalar_t>();
        if (mask[0])
          launch.grid(dv.numel(), kernels::FeaturesGrad<scalar_t, index_t>{
                                      gi, index_t(dv.numel()), pg, pa, pm, pb,
                                      dv.mutable_data_ptr<scalar_t>()});
        if (mask[1])
          launch.grid(da.numel(),
                      kernels::AttnGrad<scalar_t, index_t>{gi, index_t(da.numel()), pg, pv, pm,
                                                           da.mutable_data_ptr<scalar_t>()});
        const index_t pixels = index_t(g.nb * g.ho * g.wo);
        if (mask[1] && softmax)
          launch.grid(pixels, kernels::SoftmaxGrad<scalar_t, index_t>{
                                  index_t(g.taps()), index_t(g.ho * g.wo), pixels, pa,
                                  da.mutable_data_ptr<scalar_t>()});
        if (mask[2] || mask[3])
          launch.block_reduce(
              g.nb * g.cg * g.taps(),
              kernels::GhostGrad<scalar_t, index_t>{
                  gi, pg, pv, pa, mask[2] ? dm.mutable_data_ptr<scalar_t>() : nullptr,
                  mask[3] ? dd.mutable_data_ptr<scalar_t>() : nullptr});
      });
    });
  }
  const auto none = [&] { return at::empty({0}, features.options()); };
  return {dv, da, mask[2] ? dm : none(), mask[3] ? dd : none()};
}

}  // namespace elsa
}  // namespace lsa
