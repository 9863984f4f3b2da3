// Fused SAN attention on CPU: what the pairwise and patchwise kernels share. A work unit
// is a tile of up to kTile consecutive pixels (flattened h*W + w) of one image; Window
// gives every tile's tap sources, Net the folded weight MLP, GradLayout the per-task
// parameter-gradient partials (reduced in task order). Included by san_fused_cpu.cpp
// and san_patchwise_cpu.cpp, each with its own copy (internal linkage); the compute
// loops they both use are san_fused_kernels.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "lsa/cpu_isa.h"
#include "lsa/san_cpu.h"

namespace lsa {
namespace san_fused {
namespace {

constexpr int64_t kTile = 64;  // pixels per tile (buffers are [channels][kTile])

template <typename T>
struct Net {
  const T *s1, *t1, *w1, *b1, *w2, *b2;  // all but s1, t1 null in the moments ops
  int64_t cr, m, cw;
};

struct Window {
  SanGeometry g;
  SanAxis rows, cols;
  int64_t K, HW;
  explicit Window(const SanGeometry& g_)
      : g(g_),
        rows(g.h, g.kh, 1, g.ph, g.dh, g.ho, g.mode),
        cols(g.w, g.kw, 1, g.pw, g.dw, g.wo, g.mode),
        K(g.kh * g.kw),
        HW(g.h * g.w) {}
  // idx[k * kTile + p] = source pixel of tap k for pixel q0 + p (-1: zero padding).
  void tap_indices(int64_t q0, int64_t len, int32_t* idx) const {
    for (int64_t th = 0; th < g.kh; ++th)
      for (int64_t tw = 0; tw < g.kw; ++tw) {
        int32_t* out = idx + (th * g.kw + tw) * kTile;
        for (int64_t p = 0; p < len; ++p) {
          const int64_t q = q0 + p, r = rows.at(th, q / g.w), c = cols.at(tw, q % g.w);
          out[p] = (r < 0 || c < 0) ? -1 : static_cast<int32_t>(r * g.w + c);
        }
      }
  }
};

template <typename T>
Net<T> make_net(const at::Tensor& s1, const at::Tensor& t1, const at::Tensor* w1,
                const at::Tensor* b1, const at::Tensor* w2, const at::Tensor* b2, int64_t cw) {
  return {s1.const_data_ptr<T>(),
          t1.const_data_ptr<T>(),
          w1 ? w1->const_data_ptr<T>() : nullptr,
          b1 ? b1->const_data_ptr<T>() : nullptr,
          w2 ? w2->const_data_ptr<T>() : nullptr,
          b2 ? b2->const_data_ptr<T>() : nullptr,
          s1.size(0),
          w1 ? w1->size(0) : 0,
          cw};
}

int64_t num_tiles(const Window& win) { return (win.HW + kTile - 1) / kTile; }

int64_t num_bands(const Window& win) {
  const int64_t rows = std::max<int64_t>(2 * std::max(win.g.ph, win.g.pw), 1);
  return win.g.n * ((win.g.h + rows - 1) / rows);
}

// Parameter-gradient partials of one task, laid out [ds1 | dt1 | dw1 | db1 | dw2 | db2].
struct GradLayout {
  int64_t s1, t1, w1, b1, w2, b2, size;
  GradLayout(int64_t cr, int64_t m, int64_t cw)
      : s1(0),
        t1(cr),
        w1(2 * cr),
        b1(2 * cr + m * cr),
        w2(b1 + m),
        b2(w2 + cw * m),
        size(b2 + cw) {}
};

// Sums the per-task partials in task order into the gradient tensors.
template <typename T>
void reduce_partials(const std::vector<T>& partials, const GradLayout& lay,
                     std::initializer_list<std::pair<at::Tensor*, int64_t>> outs) {
  const int64_t tasks = static_cast<int64_t>(partials.size()) / lay.size;
  for (const auto& o : outs) {
    T* dst = o.first->mutable_data_ptr<T>();
    const int64_t len = o.first->numel();
    std::fill(dst, dst + len, T(0));
    for (int64_t t = 0; t < tasks; ++t)
      for (int64_t i = 0; i < len; ++i) dst[i] += partials[t * lay.size + o.second + i];
  }
}

}  // namespace
}  // namespace san_fused
}  // namespace lsa
