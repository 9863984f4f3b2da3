// Fused SAN pairwise attention, CPU kernels (float32, float64), at::parallel_for.
//
// Work unit: a tile of up to kTile consecutive pixels (flattened h*W + w) of one image.
// For each tap the tile's relation rows, gamma's hidden rows and logits are computed
// in small per-task buffers ([channels][tile] so the matrix products vectorise along
// the pixels); only (N, C, H, W)-sized tensors are read or written.
//
// Forward:     tasks = tiles; no shared writes.
// Statistics:  tasks = tiles; per-task partial sums (double), added in task order.
// Backward:    recomputes the forward of a tile, then scatters into grad u2 / grad value
//              at the taps' source pixels. Tasks are bands of B >= 2 * padding output
//              rows, run in two phases (even bands, then odd bands): the source rows of
//              two bands of one phase never overlap, so the scatters need no atomics and
//              every element receives its terms in a fixed order. Parameter gradients
//              are per-task partials added in task order. Results therefore do not
//              depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "lsa/san_cpu.h"
#include "san_fused.h"

namespace lsa {
namespace san_fused {
namespace {

constexpr int64_t kTile = 64;  // pixels per tile (buffers are [channels][kTile])

template <typename T>
struct Net {
  const T *s1, *t1, *w1, *b1, *w2, *b2;  // b1, w2, b2 may be null (statistics ops)
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
  void tap_indices(int64_t q0, int64_t len, int64_t* idx) const {
    for (int64_t th = 0; th < g.kh; ++th)
      for (int64_t tw = 0; tw < g.kw; ++tw) {
        int64_t* out = idx + (th * g.kw + tw) * kTile;
        for (int64_t p = 0; p < len; ++p) {
          const int64_t q = q0 + p, r = rows.at(th, q / g.w), c = cols.at(tw, q % g.w);
          out[p] = (r < 0 || c < 0) ? -1 : r * g.w + c;
        }
      }
  }
};

// out[i][p] = bias[i] + sum_c wt[i * si + c * sc] * in[c * in_stride + p] for p < len;
// rows of `out` are kTile apart. Four output rows per pass share each input load.
template <typename T>
void matmul(T* LSA_RESTRICT out, const T* LSA_RESTRICT wt, int64_t si, int64_t sc,
            const T* LSA_RESTRICT in, int64_t in_stride, const T* bias, int64_t rows,
            int64_t cols, int64_t len) {
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) {
    T* LSA_RESTRICT o0 = out + i * kTile;
    T* LSA_RESTRICT o1 = o0 + kTile;
    T* LSA_RESTRICT o2 = o1 + kTile;
    T* LSA_RESTRICT o3 = o2 + kTile;
    for (int64_t p = 0; p < len; ++p) {
      o0[p] = bias ? bias[i] : T(0);
      o1[p] = bias ? bias[i + 1] : T(0);
      o2[p] = bias ? bias[i + 2] : T(0);
      o3[p] = bias ? bias[i + 3] : T(0);
    }
    for (int64_t c = 0; c < cols; ++c) {
      const T w0 = wt[i * si + c * sc], w1 = wt[(i + 1) * si + c * sc];
      const T w2 = wt[(i + 2) * si + c * sc], w3 = wt[(i + 3) * si + c * sc];
      const T* LSA_RESTRICT x = in + c * in_stride;
      for (int64_t p = 0; p < len; ++p) {
        o0[p] += w0 * x[p];
        o1[p] += w1 * x[p];
        o2[p] += w2 * x[p];
        o3[p] += w3 * x[p];
      }
    }
  }
  for (; i < rows; ++i) {
    T* LSA_RESTRICT o = out + i * kTile;
    for (int64_t p = 0; p < len; ++p) o[p] = bias ? bias[i] : T(0);
    for (int64_t c = 0; c < cols; ++c) {
      const T w = wt[i * si + c * sc];
      const T* LSA_RESTRICT x = in + c * in_stride;
      for (int64_t p = 0; p < len; ++p) o[p] += w * x[p];
    }
  }
}

// g[i * cols + c] += sum_p a[i * a_stride + p] * b[c * kTile + p]
template <typename T>
void outer_accum(T* LSA_RESTRICT g, const T* LSA_RESTRICT a, int64_t a_stride,
                 const T* LSA_RESTRICT b, int64_t rows, int64_t cols, int64_t len) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* ai = a + i * a_stride;
    for (int64_t c = 0; c < cols; ++c) {
      const T* bc = b + c * kTile;
      T s = 0;
      for (int64_t p = 0; p < len; ++p) s += ai[p] * bc[p];
      g[i * cols + c] += s;
    }
  }
}

template <typename T>
void relu_rows(T* x, int64_t rows, int64_t len) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t p = 0; p < len; ++p) x[i * kTile + p] = std::max(x[i * kTile + p], T(0));
}

// Relation of tap k for the tile: r (optional) and a = relu(s1 * r + s1), [Cr][kTile].
template <typename T>
void relation(const Net<T>& net, const Window& win, const T* u1n, const T* u2n, int64_t q0,
              int64_t len, const int64_t* idx, T* r, T* a) {
  for (int64_t c = 0; c < net.cr; ++c) {
    const T* x1 = u1n + c * win.HW + q0;
    const T* x2 = u2n + c * win.HW;
    const T s = net.s1[c], t = net.t1[c];
    for (int64_t p = 0; p < len; ++p) {
      const T rr = x1[p] - (idx[p] >= 0 ? x2[idx[p]] : T(0));
      if (r) r[c * kTile + p] = rr;
      a[c * kTile + p] = std::max(s * rr + t, T(0));
    }
  }
}

// Softmax over the K taps of logits [Cw][K][kTile], in place.
template <typename T>
void softmax_taps(T* l, int64_t cw, int64_t K, int64_t len) {
  std::vector<T> mx(kTile), sum(kTile);
  for (int64_t j = 0; j < cw; ++j) {
    T* lj = l + j * K * kTile;
    std::fill(mx.begin(), mx.end(), -std::numeric_limits<T>::infinity());
    std::fill(sum.begin(), sum.end(), T(0));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < len; ++p) mx[p] = std::max(mx[p], lj[k * kTile + p]);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < len; ++p) {
        const T e = std::exp(lj[k * kTile + p] - mx[p]);
        lj[k * kTile + p] = e;
        sum[p] += e;
      }
    for (int64_t p = 0; p < len; ++p) sum[p] = T(1) / sum[p];
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < len; ++p) lj[k * kTile + p] *= sum[p];
  }
}

// Scratch of one task (sized once per parallel chunk).
template <typename T>
struct Scratch {
  std::vector<int64_t> idx;
  std::vector<T> r, a, z, logits, grad_logits, dz, da;
  Scratch(const Net<T>& net, int64_t K, bool backward)
      : idx(K * kTile), r(net.cr * kTile), a((backward ? K : 1) * net.cr * kTile),
        z((backward ? K : 1) * net.m * kTile), logits(net.cw * K * kTile),
        grad_logits(backward ? net.cw * K * kTile : 0), dz(net.m * kTile), da(net.cr * kTile) {}
};

// Forward of the MLP for tap k of a tile: a, z (post-ReLU) and the logits row block.
template <typename T>
void mlp_tap(const Net<T>& net, const Window& win, const T* u1n, const T* u2n, int64_t q0,
             int64_t len, const int64_t* idx, T* a, T* z, T* logits_k) {
  relation(net, win, u1n, u2n, q0, len, idx, static_cast<T*>(nullptr), a);
  matmul(z, net.w1, net.cr, int64_t(1), a, kTile, net.b1, net.m, net.cr, len);
  relu_rows(z, net.m, len);
  // logits_k rows are K * kTile apart: write through a contiguous block, then copy.
  for (int64_t j = 0; j < net.cw; ++j) {
    T* out = logits_k + j * win.K * kTile;
    const T* wj = net.w2 + j * net.m;
    for (int64_t p = 0; p < len; ++p) out[p] = net.b2[j];
    for (int64_t mm = 0; mm < net.m; ++mm) {
      const T w = wj[mm];
      const T* zm = z + mm * kTile;
      for (int64_t p = 0; p < len; ++p) out[p] += w * zm[p];
    }
  }
}

// The attention weights of a tile: idx and softmax(logits), [Cw][K][kTile]. With
// `keep` (backward) a and z of every tap are kept in s.a / s.z ([K][ch][kTile]).
template <typename T>
void tile_weights(const Net<T>& net, const Window& win, const T* u1n, const T* u2n, int64_t q0,
                  int64_t len, Scratch<T>& s, bool keep) {
  win.tap_indices(q0, len, s.idx.data());
  for (int64_t k = 0; k < win.K; ++k) {
    T* a = s.a.data() + (keep ? k * net.cr * kTile : 0);
    T* z = s.z.data() + (keep ? k * net.m * kTile : 0);
    mlp_tap(net, win, u1n, u2n, q0, len, s.idx.data() + k * kTile, a, z,
            s.logits.data() + k * kTile);
  }
  softmax_taps(s.logits.data(), net.cw, win.K, len);
}

// Gradient of gamma's first layer for one tap, given dz = d(loss)/d(conv1 output)
// [M][kTile] (already masked by the ReLU that follows it) and a [Cr][kTile].
// Accumulates db1 (if non-null), dw1, ds1, dt1; adds to du1 at the tile pixels and
// subtracts from du2 at the source pixels.
template <typename T>
void layer1_backward(const Net<T>& net, const Window& win, const T* u1n, const T* u2n,
                     int64_t q0, int64_t len, const int64_t* idx, const T* dz, const T* a,
                     Scratch<T>& s, T* db1, T* dw1, T* ds1, T* dt1, T* du1n, T* du2n) {
  if (db1)
    for (int64_t mm = 0; mm < net.m; ++mm)
      for (int64_t p = 0; p < len; ++p) db1[mm] += dz[mm * kTile + p];
  outer_accum(dw1, dz, kTile, a, net.m, net.cr, len);
  T* da = s.da.data();
  matmul(da, net.w1, int64_t(1), net.cr, dz, kTile, static_cast<const T*>(nullptr), net.cr,
         net.m, len);
  T* r = s.r.data();
  for (int64_t c = 0; c < net.cr; ++c) {
    const T* x1 = u1n + c * win.HW + q0;
    const T* x2 = u2n + c * win.HW;
    T* g1 = du1n + c * win.HW + q0;
    T* g2 = du2n + c * win.HW;
    const T sc = net.s1[c];
    T gs = 0, gt = 0;
    for (int64_t p = 0; p < len; ++p) {
      const T d = a[c * kTile + p] > T(0) ? da[c * kTile + p] : T(0);
      const T rr = x1[p] - (idx[p] >= 0 ? x2[idx[p]] : T(0));
      gs += d * rr;
      gt += d;
      r[p] = sc * d;
    }
    ds1[c] += gs;
    dt1[c] += gt;
    for (int64_t p = 0; p < len; ++p) {
      g1[p] += r[p];
      if (idx[p] >= 0) g2[idx[p]] -= r[p];
    }
  }
}

template <typename T>
Net<T> make_net(const at::Tensor& s1, const at::Tensor& t1, const at::Tensor& w1,
                const at::Tensor* b1, const at::Tensor* w2, const at::Tensor* b2, int64_t cw) {
  return {s1.const_data_ptr<T>(), t1.const_data_ptr<T>(), w1.const_data_ptr<T>(),
          b1 ? b1->const_data_ptr<T>() : nullptr, w2 ? w2->const_data_ptr<T>() : nullptr,
          b2 ? b2->const_data_ptr<T>() : nullptr, s1.size(0), w1.size(0), cw};
}

int64_t num_tiles(const Window& win) { return (win.HW + kTile - 1) / kTile; }

// Runs fn(n, q_begin, q_end, task) over bands of >= 2 * padding rows, even bands of
// every image first, then odd bands (see the file comment). `task` numbers the bands.
template <typename F>
void for_each_band(const Window& win, const F& fn) {
  const int64_t rows = std::max<int64_t>(2 * std::max(win.g.ph, win.g.pw), 1);
  const int64_t bands = (win.g.h + rows - 1) / rows;
  for (int64_t phase = 0; phase < 2; ++phase) {
    const int64_t per_image = (bands - phase + 1) / 2;
    at::parallel_for(0, win.g.n * per_image, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / per_image, b = 2 * (t % per_image) + phase;
        const int64_t h0 = b * rows, h1 = std::min(win.g.h, h0 + rows);
        fn(n, h0 * win.g.w, h1 * win.g.w, n * bands + b);
      }
    });
  }
}

int64_t num_bands(const Window& win) {
  const int64_t rows = std::max<int64_t>(2 * std::max(win.g.ph, win.g.pw), 1);
  return win.g.n * ((win.g.h + rows - 1) / rows);
}

// ---------------------------------------------------------------------------------------

template <typename T>
void forward_kernel(const Window& win, const Net<T>& net, int64_t C, const T* u1, const T* u2,
                    const T* v, T* y) {
  const int64_t tiles = num_tiles(win), HW = win.HW, Cr = net.cr, K = win.K;
  at::parallel_for(0, win.g.n * tiles, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> s(net, K, false);
    std::vector<T> acc(kTile);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / tiles, q0 = (t % tiles) * kTile, len = std::min(kTile, HW - q0);
      tile_weights(net, win, u1 + n * Cr * HW, u2 + n * Cr * HW, q0, len, s, false);
      for (int64_t c = 0; c < C; ++c) {
        const T* x = v + (n * C + c) * HW;
        const T* wj = s.logits.data() + (c % net.cw) * K * kTile;
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t k = 0; k < K; ++k) {
          const int64_t* idx = s.idx.data() + k * kTile;
          const T* wk = wj + k * kTile;
          for (int64_t p = 0; p < len; ++p)
            if (idx[p] >= 0) acc[p] += wk[p] * x[idx[p]];
        }
        std::copy(acc.begin(), acc.begin() + len, y + (n * C + c) * HW + q0);
      }
    }
  });
}

// Parameter-gradient partials of one task, laid out [ds1 | dt1 | dw1 | db1 | dw2 | db2].
struct GradLayout {
  int64_t s1, t1, w1, b1, w2, b2, size;
  GradLayout(int64_t cr, int64_t m, int64_t cw)
      : s1(0), t1(cr), w1(2 * cr), b1(2 * cr + m * cr), w2(b1 + m), b2(w2 + cw * m),
        size(b2 + cw) {}
};

template <typename T>
void backward_kernel(const Window& win, const Net<T>& net, int64_t C, const T* gy, const T* u1,
                     const T* u2, const T* v, T* du1, T* du2, T* dv, std::vector<T>& partials,
                     const GradLayout& lay) {
  const int64_t HW = win.HW, Cr = net.cr, K = win.K, M = net.m, Cw = net.cw;
  partials.assign(num_bands(win) * lay.size, T(0));
  for_each_band(win, [&](int64_t n, int64_t qb, int64_t qe, int64_t task) {
    Scratch<T> s(net, K, true);
    T* part = partials.data() + task * lay.size;
    const T *u1n = u1 + n * Cr * HW, *u2n = u2 + n * Cr * HW;
    T *du1n = du1 + n * Cr * HW, *du2n = du2 + n * Cr * HW;
    for (int64_t q0 = qb; q0 < qe; q0 += kTile) {
      const int64_t len = std::min(kTile, qe - q0);
      tile_weights(net, win, u1n, u2n, q0, len, s, true);
      T* P = s.logits.data();
      T* dP = s.grad_logits.data();
      std::fill(s.grad_logits.begin(), s.grad_logits.end(), T(0));
      // aggregation backward: dP (gather) and grad value (scatter)
      for (int64_t c = 0; c < C; ++c) {
        const T* x = v + (n * C + c) * HW;
        const T* g = gy + (n * C + c) * HW + q0;
        T* dx = dv + (n * C + c) * HW;
        const int64_t j = c % Cw;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t* idx = s.idx.data() + k * kTile;
          T* dpk = dP + (j * K + k) * kTile;
          const T* pk = P + (j * K + k) * kTile;
          for (int64_t p = 0; p < len; ++p)
            if (idx[p] >= 0) {
              dpk[p] += g[p] * x[idx[p]];
              dx[idx[p]] += pk[p] * g[p];
            }
        }
      }
      // softmax backward, in place in dP: dl = P * (dP - sum_k P dP)
      for (int64_t j = 0; j < Cw; ++j) {
        T dot[kTile] = {};
        for (int64_t k = 0; k < K; ++k)
          for (int64_t p = 0; p < len; ++p)
            dot[p] += P[(j * K + k) * kTile + p] * dP[(j * K + k) * kTile + p];
        for (int64_t k = 0; k < K; ++k)
          for (int64_t p = 0; p < len; ++p) {
            const int64_t i = (j * K + k) * kTile + p;
            dP[i] = P[i] * (dP[i] - dot[p]);
          }
      }
      for (int64_t k = 0; k < K; ++k) {
        const T* dl = dP + k * kTile;  // rows j are K * kTile apart
        const T* a = s.a.data() + k * Cr * kTile;
        const T* z = s.z.data() + k * M * kTile;
        for (int64_t j = 0; j < Cw; ++j)
          for (int64_t p = 0; p < len; ++p) part[lay.b2 + j] += dl[j * K * kTile + p];
        outer_accum(part + lay.w2, dl, K * kTile, z, Cw, M, len);
        T* dz = s.dz.data();
        matmul(dz, net.w2, int64_t(1), M, dl, K * kTile, static_cast<const T*>(nullptr), M, Cw,
               len);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t p = 0; p < len; ++p)
            if (!(z[i * kTile + p] > T(0))) dz[i * kTile + p] = T(0);
        layer1_backward(net, win, u1n, u2n, q0, len, s.idx.data() + k * kTile, dz, a, s,
                        part + lay.b1, part + lay.w1, part + lay.s1, part + lay.t1, du1n, du2n);
      }
    }
  });
}

template <typename T>
void stats_kernel(const Window& win, const Net<T>& net, const T* u1, const T* u2, T* out) {
  const int64_t tiles = num_tiles(win), HW = win.HW, Cr = net.cr, M = net.m;
  std::vector<double> partials(win.g.n * tiles * 2 * M, 0.0);
  at::parallel_for(0, win.g.n * tiles, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> s(net, win.K, false);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / tiles, q0 = (t % tiles) * kTile, len = std::min(kTile, HW - q0);
      double* part = partials.data() + t * 2 * M;
      win.tap_indices(q0, len, s.idx.data());
      for (int64_t k = 0; k < win.K; ++k) {
        relation(net, win, u1 + n * Cr * HW, u2 + n * Cr * HW, q0, len,
                 s.idx.data() + k * kTile, static_cast<T*>(nullptr), s.a.data());
        matmul(s.z.data(), net.w1, Cr, int64_t(1), s.a.data(), kTile,
               static_cast<const T*>(nullptr), M, Cr, len);
        for (int64_t i = 0; i < M; ++i) {
          double sum = 0, sq = 0;
          for (int64_t p = 0; p < len; ++p) {
            const double zz = s.z[i * kTile + p];
            sum += zz;
            sq += zz * zz;
          }
          part[i] += sum;
          part[M + i] += sq;
        }
      }
    }
  });
  std::vector<double> total(2 * M, 0.0);
  for (int64_t t = 0; t < win.g.n * tiles; ++t)
    for (int64_t i = 0; i < 2 * M; ++i) total[i] += partials[t * 2 * M + i];
  for (int64_t i = 0; i < 2 * M; ++i) out[i] = static_cast<T>(total[i]);
}

template <typename T>
void stats_backward_kernel(const Window& win, const Net<T>& net, const T* grad, const T* u1,
                           const T* u2, T* du1, T* du2, std::vector<T>& partials,
                           const GradLayout& lay) {
  const int64_t HW = win.HW, Cr = net.cr, M = net.m;
  partials.assign(num_bands(win) * lay.size, T(0));
  for_each_band(win, [&](int64_t n, int64_t qb, int64_t qe, int64_t task) {
    Scratch<T> s(net, win.K, false);
    T* part = partials.data() + task * lay.size;
    const T *u1n = u1 + n * Cr * HW, *u2n = u2 + n * Cr * HW;
    for (int64_t q0 = qb; q0 < qe; q0 += kTile) {
      const int64_t len = std::min(kTile, qe - q0);
      win.tap_indices(q0, len, s.idx.data());
      for (int64_t k = 0; k < win.K; ++k) {
        const int64_t* idx = s.idx.data() + k * kTile;
        relation(net, win, u1n, u2n, q0, len, idx, static_cast<T*>(nullptr), s.a.data());
        T* dz = s.dz.data();
        matmul(dz, net.w1, Cr, int64_t(1), s.a.data(), kTile, static_cast<const T*>(nullptr), M,
               Cr, len);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t p = 0; p < len; ++p)
            dz[i * kTile + p] = grad[i] + T(2) * grad[M + i] * dz[i * kTile + p];
        layer1_backward(net, win, u1n, u2n, q0, len, idx, dz, s.a.data(), s,
                        static_cast<T*>(nullptr), part + lay.w1, part + lay.s1, part + lay.t1,
                        du1 + n * Cr * HW, du2 + n * Cr * HW);
      }
    }
  });
}

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

// ---------------------------------------------------------------------------------------

at::Tensor forward_cpu(const at::Tensor& u1, const at::Tensor& u2, const at::Tensor& value,
                       const at::Tensor& scale1, const at::Tensor& shift1,
                       const at::Tensor& weight1, const at::Tensor& bias1,
                       const at::Tensor& weight2, const at::Tensor& bias2, int64_t kernel_size,
                       int64_t dilation, int64_t pad_mode) {
  Dims d{};
  const SanGeometry g =
      check_inputs("san_pairwise_forward", u1, u2, scale1, shift1, weight1, &bias1, &weight2,
                   &bias2, &value, nullptr, kernel_size, dilation, pad_mode, &d);
  const Window win(g);
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous(), v = value.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous(), w1 = weight1.contiguous();
  const at::Tensor b1 = bias1.contiguous(), w2 = weight2.contiguous(), b2 = bias2.contiguous();
  at::Tensor y = at::empty({g.n, d.c, g.h, g.w}, value.options());
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_pairwise_forward_cpu", [&] {
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, w1, &b1, &w2, &b2, d.cw);
    forward_kernel<scalar_t>(win, net, d.c, x1.const_data_ptr<scalar_t>(),
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
      check_inputs("san_pairwise_backward", u1, u2, scale1, shift1, weight1, &bias1, &weight2,
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
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, w1, &b1, &w2, &b2, d.cw);
    std::vector<scalar_t> partials;
    backward_kernel<scalar_t>(win, net, d.c, gy.const_data_ptr<scalar_t>(),
                              x1.const_data_ptr<scalar_t>(), x2.const_data_ptr<scalar_t>(),
                              v.const_data_ptr<scalar_t>(), du1.mutable_data_ptr<scalar_t>(),
                              du2.mutable_data_ptr<scalar_t>(), dv.mutable_data_ptr<scalar_t>(),
                              partials, lay);
    reduce_partials<scalar_t>(partials, lay,
                              {{&ds1, lay.s1}, {&dt1, lay.t1}, {&dw1, lay.w1}, {&db1, lay.b1},
                               {&dw2, lay.w2}, {&db2, lay.b2}});
  });
  return {du1, du2, dv, ds1, dt1, dw1, db1, dw2, db2};
}

at::Tensor stats_cpu(const at::Tensor& u1, const at::Tensor& u2, const at::Tensor& scale1,
                     const at::Tensor& shift1, const at::Tensor& weight1, int64_t kernel_size,
                     int64_t dilation, int64_t pad_mode) {
  Dims d{};
  const SanGeometry g =
      check_inputs("san_pairwise_stats", u1, u2, scale1, shift1, weight1, nullptr, nullptr,
                   nullptr, nullptr, nullptr, kernel_size, dilation, pad_mode, &d);
  const Window win(g);
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous(), w1 = weight1.contiguous();
  at::Tensor out = at::empty({2, d.m}, u1.options());
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_pairwise_stats_cpu", [&] {
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, w1, nullptr, nullptr, nullptr, 0);
    stats_kernel<scalar_t>(win, net, x1.const_data_ptr<scalar_t>(),
                           x2.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

std::vector<at::Tensor> stats_backward_cpu(const at::Tensor& grad, const at::Tensor& u1,
                                           const at::Tensor& u2, const at::Tensor& scale1,
                                           const at::Tensor& shift1, const at::Tensor& weight1,
                                           int64_t kernel_size, int64_t dilation,
                                           int64_t pad_mode) {
  Dims d{};
  const SanGeometry g =
      check_inputs("san_pairwise_stats_backward", u1, u2, scale1, shift1, weight1, nullptr,
                   nullptr, nullptr, nullptr, nullptr, kernel_size, dilation, pad_mode, &d);
  check_float_tensor("san_pairwise_stats_backward", "grad", grad, 2);
  TORCH_CHECK(grad.size(0) == 2 && grad.size(1) == d.m,
              "san_pairwise_stats_backward: grad must have shape (2, ", d.m, "), got ",
              grad.sizes());
  const Window win(g);
  const at::Tensor gr = grad.contiguous().to(u1.scalar_type());
  const at::Tensor x1 = u1.contiguous(), x2 = u2.contiguous();
  const at::Tensor s1 = scale1.contiguous(), t1 = shift1.contiguous(), w1 = weight1.contiguous();
  at::Tensor du1 = at::zeros_like(x1), du2 = at::zeros_like(x2);
  at::Tensor ds1 = at::empty_like(s1), dt1 = at::empty_like(t1), dw1 = at::empty_like(w1);
  const GradLayout lay(d.cr, d.m, 0);
  AT_DISPATCH_FLOATING_TYPES(u1.scalar_type(), "san_pairwise_stats_backward_cpu", [&] {
    const Net<scalar_t> net = make_net<scalar_t>(s1, t1, w1, nullptr, nullptr, nullptr, 0);
    std::vector<scalar_t> partials;
    stats_backward_kernel<scalar_t>(win, net, gr.const_data_ptr<scalar_t>(),
                                    x1.const_data_ptr<scalar_t>(), x2.const_data_ptr<scalar_t>(),
                                    du1.mutable_data_ptr<scalar_t>(),
                                    du2.mutable_data_ptr<scalar_t>(), partials, lay);
    reduce_partials<scalar_t>(partials, lay, {{&ds1, lay.s1}, {&dt1, lay.t1}, {&dw1, lay.w1}});
  });
  return {du1, du2, ds1, dt1, dw1};
}

}  // namespace
}  // namespace san_fused
}  // namespace lsa

TORCH_LIBRARY_IMPL(lsa, CPU, m) {
  m.impl("san_pairwise_forward", &lsa::san_fused::forward_cpu);
  m.impl("san_pairwise_backward", &lsa::san_fused::backward_cpu);
  m.impl("san_pairwise_stats", &lsa::san_fused::stats_cpu);
  m.impl("san_pairwise_stats_backward", &lsa::san_fused::stats_backward_cpu);
}
