// CPU helpers of the SAN kernels: per-axis source tables with a clipped interior.
#pragma once

#include <algorithm>
#include <vector>

#include "lsa/san.h"

namespace lsa {

// For one axis: source index of every (tap, output) pair, and per tap the range
// [lo, hi) of outputs whose virtual position is inside [0, L), where the source is
// the affine o*s + offset(t). Inner loops run the interior branch-free and use the
// table only for the few border outputs.
struct SanAxis {
  int64_t k, s, p, d, out_len;
  std::vector<int64_t> src;     // k * out_len, -1 = skip (zeros padding)
  std::vector<int64_t> lo, hi;  // per tap

  SanAxis(int64_t L, int64_t k_, int64_t s_, int64_t p_, int64_t d_, int64_t out_len_, int64_t mode)
      : k(k_), s(s_), p(p_), d(d_), out_len(out_len_), src(k_ * out_len_), lo(k_), hi(k_) {
    for (int64_t t = 0; t < k; ++t) {
      lo[t] = out_len;
      hi[t] = 0;
      for (int64_t o = 0; o < out_len; ++o) {
        const int64_t v = offset(t) + o * s;
        src[t * out_len + o] = san_source(v, L, mode);
        if (v >= 0 && v < L) {
          lo[t] = std::min(lo[t], o);
          hi[t] = o + 1;
        }
      }
      if (lo[t] > hi[t]) lo[t] = hi[t] = 0;  // no interior
    }
  }
  int64_t offset(int64_t t) const { return t * d - p; }
  int64_t at(int64_t t, int64_t o) const { return src[t * out_len + o]; }
};

}  // namespace lsa

namespace lsa {

// acc[o] += a[o] * x[source(t, o)] over one output row (skipped sources add nothing).
template <typename scalar_t, typename acc_t>
inline void san_fma_row(acc_t* LSA_RESTRICT acc, const scalar_t* LSA_RESTRICT a,
                        const scalar_t* LSA_RESTRICT x, const SanAxis& ax, int64_t t) {
  const int64_t lo = ax.lo[t], hi = ax.hi[t], off = ax.offset(t), s = ax.s, n = ax.out_len;
  const int64_t* src = ax.src.data() + t * n;
  for (int64_t o = 0; o < lo; ++o)
    if (src[o] >= 0) acc[o] += acc_t(a[o]) * acc_t(x[src[o]]);
  if (s == 1) {
    for (int64_t o = lo; o < hi; ++o) acc[o] += acc_t(a[o]) * acc_t(x[o + off]);
  } else {
    for (int64_t o = lo; o < hi; ++o) acc[o] += acc_t(a[o]) * acc_t(x[o * s + off]);
  }
  for (int64_t o = hi; o < n; ++o)
    if (src[o] >= 0) acc[o] += acc_t(a[o]) * acc_t(x[src[o]]);
}

// dx[source(t, o)] += a[o] * b[o] over one output row (the transpose of san_fma_row);
// with `b == nullptr`, dx[source(t, o)] -= a[o].
template <typename scalar_t, typename acc_t>
inline void san_scatter_row(acc_t* LSA_RESTRICT dx, const scalar_t* LSA_RESTRICT a,
                            const scalar_t* LSA_RESTRICT b, const SanAxis& ax, int64_t t) {
  const int64_t lo = ax.lo[t], hi = ax.hi[t], off = ax.offset(t), s = ax.s, n = ax.out_len;
  const int64_t* src = ax.src.data() + t * n;
  auto term = [&](int64_t o) { return b ? acc_t(a[o]) * acc_t(b[o]) : -acc_t(a[o]); };
  for (int64_t o = 0; o < lo; ++o)
    if (src[o] >= 0) dx[src[o]] += term(o);
  if (b && s == 1) {
    for (int64_t o = lo; o < hi; ++o) dx[o + off] += acc_t(a[o]) * acc_t(b[o]);
  } else if (s == 1) {
    for (int64_t o = lo; o < hi; ++o) dx[o + off] -= acc_t(a[o]);
  } else {
    for (int64_t o = lo; o < hi; ++o) dx[o * s + off] += term(o);
  }
  for (int64_t o = hi; o < n; ++o)
    if (src[o] >= 0) dx[src[o]] += term(o);
}

}  // namespace lsa
