// Fused SAN patchwise attention: the CPU compute loops, included by san_patchwise_cpu.cpp
// after san_fused_kernels.h in each ISA namespace (generic, avx2) like that header, whose
// tap runs, register-blocked products (matmul, outer_accum), aggregate_tile and band
// schedule (for_each_band) they use. Net<T> here has cr = CA = R * (K + 1) gamma input
// channels and cw = Cw * K conv2 rows. No include guard on purpose.
namespace LSA_SAN_FUSED_ISA {

// Scratch of one task: tap sources, and gamma's rows for one tile, [channels][kTile].
template <typename T>
struct PatchScratch {
  std::vector<int32_t> idx;
  TapRuns runs;
  std::vector<T> t, a, z, w, dw, dz, da;
  PatchScratch(const Net<T>& net, int64_t K, bool backward)
      : idx(K * kTile),
        t(backward ? net.cr * kTile : 0),
        a(net.cr * kTile),
        z(net.m * kTile),
        w(net.cw * kTile),
        dw(backward ? net.cw * kTile : 0),
        dz(backward ? net.m * kTile : 0),
        da(backward ? net.cr * kTile : 0) {}
  void index(const Window& win, int64_t q0, int64_t len) {
    win.tap_indices(q0, len, idx.data());
    runs.build(idx.data(), win.K, len);
  }
};

// gamma's input for a tile, t [CA][kTile]: rows c < R the centre u1[c, q], row
// R + c * K + k the source of tap k in u2[c] (0 for zero padding), read through the runs.
template <typename T>
void gamma_input(const Window& win, int64_t R, const T* u1n, const T* u2n, int64_t q0, int64_t len,
                 const TapRuns& tr, T* t) {
  for (int64_t c = 0; c < R; ++c)
    std::copy(u1n + c * win.HW + q0, u1n + c * win.HW + q0 + len, t + c * kTile);
  for (int64_t c = 0; c < R; ++c)
    for (int64_t k = 0; k < win.K; ++k) {
      T* LSA_RESTRICT row = t + (R + c * win.K + k) * kTile;
      std::fill(row, row + len, T(0));
      tr.each(k, [&](int32_t p0, int32_t p1, int32_t off) {
        const T* LSA_RESTRICT xs = u2n + c * win.HW + off;
        for (int32_t p = p0; p < p1; ++p) row[p] = xs[p];
      });
    }
}

// a = relu(s1 * t + t1) row by row, [CA][kTile] (t may alias a).
template <typename T>
void bn_relu(const Net<T>& net, const T* t, int64_t len, T* a) {
  for (int64_t c = 0; c < net.cr; ++c) {
    const T s = net.s1[c], b = net.t1[c];
    for (int64_t p = 0; p < len; ++p) a[c * kTile + p] = vmax(s * t[c * kTile + p] + b, T(0));
  }
}

// The forward of a tile up to the aggregation weights: s.a, s.z (post-ReLU) and s.w
// ([Cw * K][kTile]). With `keep_t`, gamma's input stays in s.t (backward).
template <typename T>
void patch_weights(const Net<T>& net, const Window& win, int64_t R, const T* u1n, const T* u2n,
                   int64_t q0, int64_t len, PatchScratch<T>& s, bool keep_t) {
  s.index(win, q0, len);
  T* t = keep_t ? s.t.data() : s.a.data();
  gamma_input(win, R, u1n, u2n, q0, len, s.runs, t);
  bn_relu(net, t, len, s.a.data());
  matmul(s.z.data(), net.w1, net.cr, int64_t(1), s.a.data(), kTile, net.b1, net.m, net.cr, len);
  relu_rows(s.z.data(), net.m, len);
  matmul(s.w.data(), net.w2, net.m, int64_t(1), s.z.data(), kTile, net.b2, net.cw, net.m, len);
}

// Gradient of a = relu(s1 * t + t1) for a tile given da [CA][kTile] (overwritten):
// accumulates ds1, dt1; adds to du1 at the tile's pixels and to du2 at the taps' sources.
template <typename T>
void gamma_input_backward(const Net<T>& net, const Window& win, int64_t R, int64_t q0, int64_t len,
                          const TapRuns& tr, const T* t, const T* a, T* da, T* ds1, T* dt1, T* du1n,
                          T* du2n) {
  for (int64_t c = 0; c < net.cr; ++c) {
    T* LSA_RESTRICT d = da + c * kTile;
    const T* tc = t + c * kTile;
    const T* ac = a + c * kTile;
    T gs = 0, gt = 0;
    for (int64_t p = 0; p < len; ++p) {
      const T g = ac[p] > T(0) ? d[p] : T(0);
      gs += g * tc[p];
      gt += g;
      d[p] = net.s1[c] * g;
    }
    ds1[c] += gs;
    dt1[c] += gt;
  }
  for (int64_t c = 0; c < R; ++c) {
    T* LSA_RESTRICT g1 = du1n + c * win.HW + q0;
    for (int64_t p = 0; p < len; ++p) g1[p] += da[c * kTile + p];
    for (int64_t k = 0; k < win.K; ++k) {
      const T* LSA_RESTRICT d = da + (R + c * win.K + k) * kTile;
      tr.each(k, [&](int32_t p0, int32_t p1, int32_t off) {
        T* LSA_RESTRICT g2 = du2n + c * win.HW + off;
        for (int32_t p = p0; p < p1; ++p) g2[p] += d[p];
      });
    }
  }
}

// Gradient of h = weight1 @ a for a tile given dh [M][kTile]: accumulates dw1 (and db1
// when given), then the gradients of gamma's input (gamma_input_backward).
template <typename T>
void hidden_backward(const Net<T>& net, const Window& win, int64_t R, int64_t q0, int64_t len,
                     PatchScratch<T>& s, const T* dh, T* db1, T* dw1, T* ds1, T* dt1, T* du1n,
                     T* du2n) {
  if (db1 != nullptr)
    for (int64_t m = 0; m < net.m; ++m)
      for (int64_t p = 0; p < len; ++p) db1[m] += dh[m * kTile + p];
  outer_accum(dw1, dh, kTile, s.a.data(), net.m, net.cr, len);
  matmul(s.da.data(), net.w1, int64_t(1), net.cr, dh, kTile, static_cast<const T*>(nullptr), net.cr,
         net.m, len);
  gamma_input_backward(net, win, R, q0, len, s.runs, s.t.data(), s.a.data(), s.da.data(), ds1, dt1,
                       du1n, du2n);
}

// ---------------------------------------------------------------------------------------

template <typename T>
void patch_forward_kernel(const Window& win, const Net<T>& net, int64_t R, int64_t C, const T* u1,
                          const T* u2, const T* v, T* y) {
  const int64_t tiles = num_tiles(win), HW = win.HW, K = win.K;
  at::parallel_for(0, win.g.n * tiles, 1, [&](int64_t begin, int64_t end) {
    PatchScratch<T> s(net, K, false);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / tiles, q0 = (t % tiles) * kTile, len = std::min(kTile, HW - q0);
      patch_weights(net, win, R, u1 + n * R * HW, u2 + n * R * HW, q0, len, s, false);
      aggregate_tile(s.runs, s.w.data(), net.cw / K, K, C, HW, v + n * C * HW, q0, len,
                     y + n * C * HW);
    }
  });
}

template <typename T>
void patch_backward_kernel(const Window& win, const Net<T>& net, int64_t R, int64_t C, const T* gy,
                           const T* u1, const T* u2, const T* v, T* du1, T* du2, T* dv,
                           std::vector<T>& partials, const GradLayout& lay) {
  const int64_t HW = win.HW, K = win.K, M = net.m, Cw = net.cw / K;
  partials.assign(num_bands(win) * lay.size, T(0));
  for_each_band(win, [&](int64_t n, int64_t qb, int64_t qe, int64_t task) {
    PatchScratch<T> s(net, K, true);
    T* part = partials.data() + task * lay.size;
    for (int64_t q0 = qb; q0 < qe; q0 += kTile) {
      const int64_t len = std::min(kTile, qe - q0);
      patch_weights(net, win, R, u1 + n * R * HW, u2 + n * R * HW, q0, len, s, true);
      const T* w = s.w.data();
      T* dw = s.dw.data();
      std::fill(s.dw.begin(), s.dw.end(), T(0));
      // aggregation backward: dw (gather) and grad value (scatter)
      for (int64_t c = 0; c < C; ++c) {
        const T* x = v + (n * C + c) * HW;
        const T* g = gy + (n * C + c) * HW + q0;
        T* dx = dv + (n * C + c) * HW;
        const int64_t row = (c % Cw) * K;
        for (int64_t k = 0; k < K; ++k) {
          T* dwk = dw + (row + k) * kTile;
          const T* wk = w + (row + k) * kTile;
          s.runs.each(k, [&](int32_t p0, int32_t p1, int32_t off) {
            const T* LSA_RESTRICT xs = x + off;
            T* LSA_RESTRICT dxs = dx + off;
            for (int32_t p = p0; p < p1; ++p) {
              dwk[p] += g[p] * xs[p];
              dxs[p] += wk[p] * g[p];
            }
          });
        }
      }
      for (int64_t o = 0; o < net.cw; ++o)
        for (int64_t p = 0; p < len; ++p) part[lay.b2 + o] += dw[o * kTile + p];
      outer_accum(part + lay.w2, dw, kTile, s.z.data(), net.cw, M, len);
      T* dz = s.dz.data();
      matmul(dz, net.w2, int64_t(1), M, dw, kTile, static_cast<const T*>(nullptr), M, net.cw, len);
      for (int64_t i = 0; i < M * kTile; ++i)
        if (!(s.z[i] > T(0))) dz[i] = T(0);
      hidden_backward(net, win, R, q0, len, s, dz, part + lay.b1, part + lay.w1, part + lay.s1,
                      part + lay.t1, du1 + n * R * HW, du2 + n * R * HW);
    }
  });
}

// out (2, M): the sums over (N, H*W) of h = weight1 @ a and of h * h. Per tile each sum
// over the tile's pixels is taken in T and added to the tile's double partial; the
// partials are added in tile order.
template <typename T>
void patch_moments_kernel(const Window& win, const Net<T>& net, int64_t R, const T* u1, const T* u2,
                          T* out) {
  const int64_t tiles = num_tiles(win), HW = win.HW, M = net.m;
  std::vector<double> partials(win.g.n * tiles * 2 * M, 0.0);
  at::parallel_for(0, win.g.n * tiles, 1, [&](int64_t begin, int64_t end) {
    PatchScratch<T> s(net, win.K, false);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / tiles, q0 = (t % tiles) * kTile, len = std::min(kTile, HW - q0);
      s.index(win, q0, len);
      gamma_input(win, R, u1 + n * R * HW, u2 + n * R * HW, q0, len, s.runs, s.a.data());
      bn_relu(net, s.a.data(), len, s.a.data());
      matmul(s.z.data(), net.w1, net.cr, int64_t(1), s.a.data(), kTile,
             static_cast<const T*>(nullptr), M, net.cr, len);
      double* part = partials.data() + t * 2 * M;
      for (int64_t m = 0; m < M; ++m) {
        const T* LSA_RESTRICT h = s.z.data() + m * kTile;
        T sum = 0, sq = 0;
        for (int64_t p = 0; p < len; ++p) {
          sum += h[p];
          sq += h[p] * h[p];
        }
        part[m] = sum;
        part[M + m] = sq;
      }
    }
  });
  std::vector<double> total(2 * M, 0.0);
  for (int64_t t = 0; t < win.g.n * tiles; ++t)
    for (int64_t i = 0; i < 2 * M; ++i) total[i] += partials[t * 2 * M + i];
  for (int64_t i = 0; i < 2 * M; ++i) out[i] = static_cast<T>(total[i]);
}

// Backward of patch_moments_kernel for grad (2, M) = [g0; g1]: dh = g0 + 2 g1 h.
template <typename T>
void patch_moments_backward_kernel(const Window& win, const Net<T>& net, int64_t R, const T* grad,
                                   const T* u1, const T* u2, T* du1, T* du2,
                                   std::vector<T>& partials, const GradLayout& lay) {
  const int64_t HW = win.HW, M = net.m;
  partials.assign(num_bands(win) * lay.size, T(0));
  for_each_band(win, [&](int64_t n, int64_t qb, int64_t qe, int64_t task) {
    PatchScratch<T> s(net, win.K, true);
    T* part = partials.data() + task * lay.size;
    for (int64_t q0 = qb; q0 < qe; q0 += kTile) {
      const int64_t len = std::min(kTile, qe - q0);
      s.index(win, q0, len);
      gamma_input(win, R, u1 + n * R * HW, u2 + n * R * HW, q0, len, s.runs, s.t.data());
      bn_relu(net, s.t.data(), len, s.a.data());
      T* dh = s.dz.data();
      matmul(dh, net.w1, net.cr, int64_t(1), s.a.data(), kTile, static_cast<const T*>(nullptr), M,
             net.cr, len);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t p = 0; p < len; ++p)
          dh[m * kTile + p] = grad[m] + T(2) * grad[M + m] * dh[m * kTile + p];
      hidden_backward(net, win, R, q0, len, s, dh, static_cast<T*>(nullptr), part + lay.w1,
                      part + lay.s1, part + lay.t1, du1 + n * R * HW, du2 + n * R * HW);
    }
  });
}

}  // namespace LSA_SAN_FUSED_ISA
