// Fused SAN pairwise attention: the CPU compute loops, included twice by san_fused_cpu.cpp
// (generic code and an AVX2+FMA build chosen at run time), each time in its own
// namespace LSA_SAN_FUSED_ISA. No include guard on purpose; the types it uses (Net,
// Window, GradLayout, kTile) and all headers come from the including file.
namespace LSA_SAN_FUSED_ISA {

// max(a, b) defined here (not std::max) so it inlines under this section's options.
template <typename T>
inline T vmax(T a, T b) {
  return a > b ? a : b;
}

// x[j], or 0 for j = -1 (zero padding); branch-free so gathers vectorise.
// The sources of tap k over a tile as maximal runs of consecutive real pixels: pixel p
// of run [p0, p1) reads source p + off. Zero-padded pixels belong to no run. Inner loops
// run over a run with contiguous loads/stores (vectorised) instead of gathers.
struct TapRuns {
  struct Run {
    int32_t p0, p1, off;
  };
  std::vector<Run> runs;
  std::vector<int32_t> begin;  // runs of tap k: [begin[k], begin[k + 1])
  void build(const int32_t* idx, int64_t K, int64_t len) {
    runs.clear();
    begin.assign(K + 1, 0);
    for (int64_t k = 0; k < K; ++k) {
      const int32_t* ik = idx + k * kTile;
      begin[k] = static_cast<int32_t>(runs.size());
      for (int32_t p = 0; p < len;) {
        if (ik[p] < 0) {
          ++p;
          continue;
        }
        int32_t e = p + 1;
        while (e < len && ik[e] == ik[p] + (e - p)) ++e;
        runs.push_back({p, e, ik[p] - p});
        p = e;
      }
    }
    begin[K] = static_cast<int32_t>(runs.size());
  }
  // f(p0, p1, off) for every run of tap k
  template <typename F>
  void each(int64_t k, const F& f) const {
    for (int32_t i = begin[k]; i < begin[k + 1]; ++i) f(runs[i].p0, runs[i].p1, runs[i].off);
  }
};
// kVec values of T as one GCC vector: the register block of matmul_rows.
constexpr int64_t kVec = 8;
template <typename T>
struct VecType;
template <>
struct VecType<float> {
  typedef float type __attribute__((vector_size(kVec * sizeof(float))));
};
template <>
struct VecType<double> {
  typedef double type __attribute__((vector_size(kVec * sizeof(double))));
};

// len rounded up to whole kVec blocks (<= kTile). The products between tile buffers run
// over this many pixels: the extra lanes hold stale finite values of earlier tiles, are
// never read back into a real lane or a sum, and spare matmul its scalar tail.
inline int64_t vec_len(int64_t len) { return (len + kVec - 1) / kVec * kVec; }

// R rows of matmul: per group of kVec pixels the R output vectors stay in registers
// while the input channels stream past (one load per channel shared by the R rows).
// The sum runs bias first, then the channels in order, as a scalar loop would.
template <int R, typename T>
void matmul_rows(T* LSA_RESTRICT out, const T* LSA_RESTRICT wt, int64_t si, int64_t sc,
                 const T* LSA_RESTRICT in, int64_t in_stride, const T* bias, int64_t cols,
                 int64_t len, int64_t out_stride) {
  using V = typename VecType<T>::type;
  int64_t p = 0;
  for (; p + kVec <= len; p += kVec) {
    V acc[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = V{} + (bias ? bias[r] : T(0));
    for (int64_t c = 0; c < cols; ++c) {
      V x;
      std::memcpy(&x, in + c * in_stride + p, sizeof x);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] += wt[r * si + c * sc] * x;
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) std::memcpy(out + r * out_stride + p, &acc[r], sizeof(V));
  }
  for (; p < len; ++p)
    for (int r = 0; r < R; ++r) {
      T acc = bias ? bias[r] : T(0);
      for (int64_t c = 0; c < cols; ++c) acc += wt[r * si + c * sc] * in[c * in_stride + p];
      out[r * out_stride + p] = acc;
    }
}

// out[i][p] = bias[i] + sum_c wt[i * si + c * sc] * in[c * in_stride + p] for p < len;
// rows of `out` are out_stride apart. Blocks of 8, 4, then single rows (matmul_rows).
template <typename T>
void matmul(T* LSA_RESTRICT out, const T* LSA_RESTRICT wt, int64_t si, int64_t sc,
            const T* LSA_RESTRICT in, int64_t in_stride, const T* bias, int64_t rows, int64_t cols,
            int64_t len, int64_t out_stride = kTile) {
  int64_t i = 0;
  for (; i + 8 <= rows; i += 8)
    matmul_rows<8>(out + i * out_stride, wt + i * si, si, sc, in, in_stride, bias ? bias + i : bias,
                   cols, len, out_stride);
  for (; i + 4 <= rows; i += 4)
    matmul_rows<4>(out + i * out_stride, wt + i * si, si, sc, in, in_stride, bias ? bias + i : bias,
                   cols, len, out_stride);
  for (; i < rows; ++i)
    matmul_rows<1>(out + i * out_stride, wt + i * si, si, sc, in, in_stride, bias ? bias + i : bias,
                   cols, len, out_stride);
}

// R x S entries of outer_accum_taps: R * S vector accumulators over the taps and the
// pixels (one load per row shared by S columns and vice versa), then one sum of the
// kVec lanes per entry, in a fixed order.
template <int R, int S, typename T>
void outer_block(T* LSA_RESTRICT g, int64_t g_stride, const T* LSA_RESTRICT a, int64_t as,
                 int64_t ak, const T* LSA_RESTRICT b, int64_t bs, int64_t bk, int64_t taps,
                 int64_t len) {
  using V = typename VecType<T>::type;
  V acc[R][S] = {};
  T tail[R][S] = {};
  for (int64_t k = 0; k < taps; ++k) {
    const T* a0 = a + k * ak;
    const T* b0 = b + k * bk;
    int64_t p = 0;
    for (; p + kVec <= len; p += kVec) {
      V x[R], y[S];
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) std::memcpy(&x[r], a0 + r * as + p, sizeof(V));
#pragma GCC unroll 4
      for (int c = 0; c < S; ++c) std::memcpy(&y[c], b0 + c * bs + p, sizeof(V));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int c = 0; c < S; ++c) acc[r][c] += x[r] * y[c];
    }
    for (; p < len; ++p)
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < S; ++c) tail[r][c] += a0[r * as + p] * b0[c * bs + p];
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < S; ++c) {
      T sum = tail[r][c];
      for (int64_t l = 0; l < kVec; ++l) sum += acc[r][c][l];
      g[r * g_stride + c] += sum;
    }
}

// g[i * cols + c] += sum_{k < taps} sum_{p < len} a[i * as + k * ak + p] * b[c * bs + k * bk + p]
// (a gradient of a 1x1 conv over the taps of a tile at once; blocks of outer_block).
template <typename T>
void outer_accum_taps(T* LSA_RESTRICT g, const T* LSA_RESTRICT a, int64_t as, int64_t ak,
                      const T* LSA_RESTRICT b, int64_t bs, int64_t bk, int64_t rows, int64_t cols,
                      int64_t taps, int64_t len) {
  constexpr int R = sizeof(T) == 4 ? 4 : 2, S = 2;
  int64_t i = 0;
  for (; i + R <= rows; i += R) {
    int64_t c = 0;
    for (; c + S <= cols; c += S)
      outer_block<R, S>(g + i * cols + c, cols, a + i * as, as, ak, b + c * bs, bs, bk, taps, len);
    for (; c < cols; ++c)
      outer_block<R, 1>(g + i * cols + c, cols, a + i * as, as, ak, b + c * bs, bs, bk, taps, len);
  }
  for (; i < rows; ++i)
    for (int64_t c = 0; c < cols; ++c)
      outer_block<1, 1>(g + i * cols + c, cols, a + i * as, as, ak, b + c * bs, bs, bk, taps, len);
}

// g[i * cols + c] += sum_p a[i * a_stride + p] * b[c * kTile + p] (one tap)
template <typename T>
void outer_accum(T* LSA_RESTRICT g, const T* LSA_RESTRICT a, int64_t a_stride,
                 const T* LSA_RESTRICT b, int64_t rows, int64_t cols, int64_t len) {
  outer_accum_taps(g, a, a_stride, int64_t(0), b, kTile, int64_t(0), rows, cols, int64_t(1), len);
}

// g[i] += sum_{k < taps} sum_{p < len} x[i * xs + k * xk + p] (a bias gradient over a tile)
template <typename T>
void sum_rows(T* g, const T* x, int64_t xs, int64_t xk, int64_t rows, int64_t taps, int64_t len) {
  for (int64_t i = 0; i < rows; ++i) {
    T sum = 0;
    for (int64_t k = 0; k < taps; ++k)
      for (int64_t p = 0; p < len; ++p) sum += x[i * xs + k * xk + p];
    g[i] += sum;
  }
}

template <typename T>
void relu_rows(T* x, int64_t rows, int64_t len) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t p = 0; p < len; ++p) x[i * kTile + p] = vmax(x[i * kTile + p], T(0));
}

// r[p] = x1[p] - x2[source of tap k of p] (0 for zero padding) over a tile.
template <typename T>
void relation_row(const T* LSA_RESTRICT x1, const T* x2, int64_t len, const TapRuns& tr, int64_t k,
                  T* LSA_RESTRICT r) {
  for (int64_t p = 0; p < len; ++p) r[p] = x1[p];
  tr.each(k, [&](int32_t p0, int32_t p1, int32_t off) {
    const T* LSA_RESTRICT xs = x2 + off;
    for (int32_t p = p0; p < p1; ++p) r[p] -= xs[p];
  });
}

// Relation of tap k for the tile, a = relu(s1 * r + t1), [Cr][kTile].
template <typename T>
void relation(const Net<T>& net, const Window& win, const T* u1n, const T* u2n, int64_t q0,
              int64_t len, const TapRuns& tr, int64_t k, T* a) {
  for (int64_t c = 0; c < net.cr; ++c) {
    relation_row(u1n + c * win.HW + q0, u2n + c * win.HW, len, tr, k, a + c * kTile);
    const T s = net.s1[c], t = net.t1[c];
    T* ac = a + c * kTile;
    for (int64_t p = 0; p < len; ++p) ac[p] = vmax(s * ac[p] + t, T(0));
  }
}

// exp(x) on kVec lanes for x <= 0 (softmax after subtracting the maximum): x = n ln2 + r,
// |r| <= ln2 / 2, exp(r) by its Taylor polynomial of degree 13 (truncation < 1e-17
// relative), times 2^n built in the exponent bits; results below the smallest normal
// number are 0. Within a few ulp of std::exp, and vectorised (std::exp is a call per
// value). In place.
template <typename T>
struct ExpBits;
template <>
struct ExpBits<double> {
  typedef int64_t I;
  static constexpr int kMant = 52, kBias = 1023;
  static constexpr double kMin = -745.0;
};
template <>
struct ExpBits<float> {
  typedef int32_t I;
  static constexpr int kMant = 23, kBias = 127;
  static constexpr float kMin = -104.0f;
};
template <typename T>
inline void vexp_nonpos(typename VecType<T>::type& x) {
  using V = typename VecType<T>::type;
  using B = ExpBits<T>;
  typedef typename B::I IV __attribute__((vector_size(kVec * sizeof(typename B::I))));
  x = x < B::kMin ? V{} + B::kMin : x;
  // n = round(x / ln2) for x <= 0 (truncation of a non-negative number is its floor)
  const IV n = -__builtin_convertvector(T(0.5) - x * T(1.4426950408889634), IV);
  const V nf = __builtin_convertvector(n, V);
  const V r = (x - nf * T(0.693145751953125)) - nf * T(1.42860682030941723212e-6);
  V e = V{} + T(1.0 / 6227020800.0);  // 1/13!
  constexpr double kInv[] = {1.0 / 479001600.0,
                             1.0 / 39916800.0,
                             1.0 / 3628800.0,
                             1.0 / 362880.0,
                             1.0 / 40320.0,
                             1.0 / 5040.0,
                             1.0 / 720.0,
                             1.0 / 120.0,
                             1.0 / 24.0,
                             1.0 / 6.0,
                             0.5,
                             1.0,
                             1.0};
#pragma GCC unroll 13
  for (int i = 0; i < 13; ++i) e = e * r + T(kInv[i]);
  const IV normal = n > IV{} + (1 - B::kBias);
  const IV bits = ((normal ? n : IV{}) + B::kBias) << B::kMant;
  V scale;
  std::memcpy(&scale, &bits, sizeof scale);
  x = normal ? e * scale : V{};
}

// Softmax over the K taps of logits [Cw][K][kTile], in place.
template <typename T>
void softmax_taps(T* l, int64_t cw, int64_t K, int64_t len) {
  using V = typename VecType<T>::type;
  T mx[kTile], sum[kTile];
  for (int64_t j = 0; j < cw; ++j) {
    T* lj = l + j * K * kTile;
    std::fill(mx, mx + kTile, -std::numeric_limits<T>::infinity());
    std::fill(sum, sum + kTile, T(0));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < len; ++p) mx[p] = vmax(mx[p], lj[k * kTile + p]);
    for (int64_t k = 0; k < K; ++k) {
      T* lk = lj + k * kTile;
      int64_t p = 0;
      for (; p + kVec <= len; p += kVec) {
        V x, m, s;
        std::memcpy(&x, lk + p, sizeof x);
        std::memcpy(&m, mx + p, sizeof m);
        std::memcpy(&s, sum + p, sizeof s);
        x -= m;
        vexp_nonpos<T>(x);
        std::memcpy(lk + p, &x, sizeof x);
        s += x;
        std::memcpy(sum + p, &s, sizeof s);
      }
      for (; p < len; ++p) {
        const T e = std::exp(lk[p] - mx[p]);
        lk[p] = e;
        sum[p] += e;
      }
    }
    for (int64_t p = 0; p < len; ++p) sum[p] = T(1) / sum[p];
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < len; ++p) lj[k * kTile + p] *= sum[p];
  }
}

// Scratch of one task (sized once per parallel chunk).
template <typename T>
struct Scratch {
  std::vector<int32_t> idx;
  TapRuns runs;
  std::vector<T> r, a, z, logits, grad_logits, dz, da;
  Scratch(const Net<T>& net, int64_t K, bool backward)
      : idx(K * kTile),
        r(net.cr * kTile),
        a((backward ? K : 1) * net.cr * kTile),
        z((backward ? K : 1) * net.m * kTile),
        logits(net.cw * K * kTile),
        grad_logits(backward ? net.cw * K * kTile : 0),
        dz(net.m * kTile),
        da(net.cr * kTile) {}
  void index(const Window& win, int64_t q0, int64_t len) {
    win.tap_indices(q0, len, idx.data());
    runs.build(idx.data(), win.K, len);
  }
};

// Forward of the MLP for tap k of a tile: a, z (post-ReLU) and the logits row block.
template <typename T>
void mlp_tap(const Net<T>& net, const Window& win, const T* u1n, const T* u2n, int64_t q0,
             int64_t len, const TapRuns& tr, int64_t k, T* a, T* z, T* logits_k) {
  relation(net, win, u1n, u2n, q0, len, tr, k, a);
  const int64_t lv = vec_len(len);
  matmul(z, net.w1, net.cr, int64_t(1), a, kTile, net.b1, net.m, net.cr, lv);
  relu_rows(z, net.m, lv);
  // logits_k rows are K * kTile apart
  matmul(logits_k, net.w2, net.m, int64_t(1), z, kTile, net.b2, net.cw, net.m, lv, win.K * kTile);
}

// The attention weights of a tile: idx and softmax(logits), [Cw][K][kTile]. With
// `keep` (backward) a and z of every tap are kept in s.a / s.z ([K][ch][kTile]).
template <typename T>
void tile_weights(const Net<T>& net, const Window& win, const T* u1n, const T* u2n, int64_t q0,
                  int64_t len, Scratch<T>& s, bool keep) {
  s.index(win, q0, len);
  for (int64_t k = 0; k < win.K; ++k) {
    T* a = s.a.data() + (keep ? k * net.cr * kTile : 0);
    T* z = s.z.data() + (keep ? k * net.m * kTile : 0);
    mlp_tap(net, win, u1n, u2n, q0, len, s.runs, k, a, z, s.logits.data() + k * kTile);
  }
  softmax_taps(s.logits.data(), net.cw, win.K, len);
}

// Gradient through a = relu(s1 * r + t1) for tap k of a tile, given da = d(loss)/da
// [Cr][kTile]: accumulates ds1, dt1; adds to du1 at the tile pixels and subtracts from
// du2 at the source pixels.
template <typename T>
void relation_backward(const Net<T>& net, const Window& win, const T* u1n, const T* u2n, int64_t q0,
                       int64_t len, int64_t k, const T* da, const T* a, Scratch<T>& s, T* ds1,
                       T* dt1, T* du1n, T* du2n) {
  T* r = s.r.data();
  for (int64_t c = 0; c < net.cr; ++c) {
    relation_row(u1n + c * win.HW + q0, u2n + c * win.HW, len, s.runs, k, r);
    T* g1 = du1n + c * win.HW + q0;
    T* g2 = du2n + c * win.HW;
    const T sc = net.s1[c];
    T gs = 0, gt = 0;
    for (int64_t p = 0; p < len; ++p) {
      const T d = a[c * kTile + p] > T(0) ? da[c * kTile + p] : T(0);
      gs += d * r[p];
      gt += d;
      r[p] = sc * d;
    }
    ds1[c] += gs;
    dt1[c] += gt;
    for (int64_t p = 0; p < len; ++p) g1[p] += r[p];
    s.runs.each(k, [&](int32_t p0, int32_t p1, int32_t off) {
      T* LSA_RESTRICT gs2 = g2 + off;
      for (int32_t p = p0; p < p1; ++p) gs2[p] -= r[p];
    });
  }
}

// Aggregation backward over a tile: dP[j][k][p] += sum_c g_c[p] x_c[src], and the
// scatter dx_c[src] += P[j][k][p] g_c[p], for the channels c = j + i * cw (i < groups) of
// weight channel j; src = source of tap k for pixel p; x, dx, g are (C, HW) maps (g
// starting at the tile). Per block of kVec pixels the dP and P vectors stay in registers
// while the channels of j stream past; every sum keeps the channel order.
template <typename T>
void aggregation_backward(const TapRuns& tr, const T* P, int64_t groups, int64_t cw, int64_t K,
                          int64_t HW, const T* g, const T* x, T* dP, T* dx) {
  using V = typename VecType<T>::type;
  const int64_t cstep = cw * HW;
  for (int64_t j = 0; j < cw; ++j)
    for (int64_t k = 0; k < K; ++k) {
      T* LSA_RESTRICT dpk = dP + (j * K + k) * kTile;
      const T* LSA_RESTRICT pk = P + (j * K + k) * kTile;
      tr.each(k, [&](int32_t p0, int32_t p1, int32_t off) {
        const T* gj = g + j * HW;
        const T* xj = x + j * HW + off;
        T* dxj = dx + j * HW + off;
        int32_t p = p0;
        for (; p + kVec <= p1; p += kVec) {
          V acc, pv;
          std::memcpy(&acc, dpk + p, sizeof acc);
          std::memcpy(&pv, pk + p, sizeof pv);
          for (int64_t i = 0; i < groups; ++i) {
            V gv, xv, dxv;
            std::memcpy(&gv, gj + i * cstep + p, sizeof gv);
            std::memcpy(&xv, xj + i * cstep + p, sizeof xv);
            std::memcpy(&dxv, dxj + i * cstep + p, sizeof dxv);
            acc += gv * xv;
            dxv += pv * gv;
            std::memcpy(dxj + i * cstep + p, &dxv, sizeof dxv);
          }
          std::memcpy(dpk + p, &acc, sizeof acc);
        }
        for (; p < p1; ++p) {
          T acc = dpk[p];
          for (int64_t i = 0; i < groups; ++i) {
            const T gv = gj[i * cstep + p];
            acc += gv * xj[i * cstep + p];
            dxj[i * cstep + p] += pk[p] * gv;
          }
          dpk[p] = acc;
        }
      });
    }
}

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

// SAN aggregation of one tile: y[c, q0 + p] = sum_k w[(c % cw) * K + k][p] * x[c, j_k]
// (j_k = source of tap k of pixel q0 + p) for the C channels of one image; vn and yn
// point at the image, w is [cw][K][kTile].
template <typename T>
void aggregate_tile(const TapRuns& tr, const T* w, int64_t cw, int64_t K, int64_t C, int64_t HW,
                    const T* vn, int64_t q0, int64_t len, T* yn) {
  T acc[kTile];
  for (int64_t c = 0; c < C; ++c) {
    const T* x = vn + c * HW;
    const T* wj = w + (c % cw) * K * kTile;
    std::fill(acc, acc + kTile, T(0));
    for (int64_t k = 0; k < K; ++k) {
      const T* wk = wj + k * kTile;
      tr.each(k, [&](int32_t p0, int32_t p1, int32_t off) {
        const T* LSA_RESTRICT xs = x + off;
        for (int32_t p = p0; p < p1; ++p) acc[p] += wk[p] * xs[p];
      });
    }
    std::copy(acc, acc + len, yn + c * HW + q0);
  }
}

// ---------------------------------------------------------------------------------------

template <typename T>
void forward_kernel(const Window& win, const Net<T>& net, int64_t C, const T* u1, const T* u2,
                    const T* v, T* y) {
  const int64_t tiles = num_tiles(win), HW = win.HW, Cr = net.cr, K = win.K;
  at::parallel_for(0, win.g.n * tiles, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> s(net, K, false);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / tiles, q0 = (t % tiles) * kTile, len = std::min(kTile, HW - q0);
      tile_weights(net, win, u1 + n * Cr * HW, u2 + n * Cr * HW, q0, len, s, false);
      aggregate_tile(s.runs, s.logits.data(), net.cw, K, C, HW, v + n * C * HW, q0, len,
                     y + n * C * HW);
    }
  });
}

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
      aggregation_backward(s.runs, P, C / Cw, Cw, K, HW, gy + n * C * HW + q0, v + n * C * HW, dP,
                           dv + n * C * HW);
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
      // gamma's layers backward. dl is [Cw][K][kTile], a [K][Cr][kTile], z [K][M][kTile].
      // The weight gradients are taken over all taps of the tile at once (outer_accum_taps);
      // z is overwritten by dz (masked by the ReLU) once dW2 has used it. dl and dz are 0
      // in the lanes p >= len, so the outer products may run over vec_len(len) lanes.
      const T* dl = dP;
      T* z = s.z.data();
      const T* a = s.a.data();
      const int64_t lv = vec_len(len);
      sum_rows(part + lay.b2, dl, K * kTile, kTile, Cw, K, len);
      outer_accum_taps(part + lay.w2, dl, K * kTile, kTile, z, kTile, M * kTile, Cw, M, K, lv);
      for (int64_t k = 0; k < K; ++k) {
        T* dz = s.dz.data();
        T* zk = z + k * M * kTile;
        matmul(dz, net.w2, int64_t(1), M, dl + k * kTile, K * kTile, static_cast<const T*>(nullptr),
               M, Cw, lv);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t p = 0; p < kTile; ++p) {
            const int64_t e = i * kTile + p;
            zk[e] = p < len && zk[e] > T(0) ? dz[e] : T(0);
          }
        matmul(s.da.data(), net.w1, int64_t(1), Cr, zk, kTile, static_cast<const T*>(nullptr), Cr,
               M, lv);
        relation_backward(net, win, u1n, u2n, q0, len, k, s.da.data(), a + k * Cr * kTile, s,
                          part + lay.s1, part + lay.t1, du1n, du2n);
      }
      sum_rows(part + lay.b1, z, kTile, M * kTile, M, K, len);
      outer_accum_taps(part + lay.w1, z, kTile, M * kTile, a, kTile, Cr * kTile, M, Cr, K, lv);
    }
  });
}

// out (Cr + 1, Cr): row 0 the sum of a, rows 1.. the sum of a a^T, over (N, K, H*W).
// Per tile and tap, each sum over the tile's pixels is taken in T, then added to the
// tile's double partial; the partials are added in tile order.
template <typename T>
void moments_kernel(const Window& win, const Net<T>& net, const T* u1, const T* u2, T* out) {
  const int64_t tiles = num_tiles(win), HW = win.HW, Cr = net.cr, size = (Cr + 1) * Cr;
  std::vector<double> partials(win.g.n * tiles * size, 0.0);
  at::parallel_for(0, win.g.n * tiles, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> s(net, win.K, false);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / tiles, q0 = (t % tiles) * kTile, len = std::min(kTile, HW - q0);
      double* part = partials.data() + t * size;
      s.index(win, q0, len);
      for (int64_t k = 0; k < win.K; ++k) {
        const T* a = s.a.data();
        relation(net, win, u1 + n * Cr * HW, u2 + n * Cr * HW, q0, len, s.runs, k, s.a.data());
        for (int64_t c = 0; c < Cr; ++c) {
          const T* LSA_RESTRICT ac = a + c * kTile;
          T sum = 0;
          for (int64_t p = 0; p < len; ++p) sum += ac[p];
          part[c] += sum;
          for (int64_t c2 = 0; c2 <= c; ++c2) {
            const T* LSA_RESTRICT a2 = a + c2 * kTile;
            T dot = 0;
            for (int64_t p = 0; p < len; ++p) dot += ac[p] * a2[p];
            part[Cr + c * Cr + c2] += dot;
          }
        }
      }
    }
  });
  std::vector<double> total(size, 0.0);
  for (int64_t t = 0; t < win.g.n * tiles; ++t)
    for (int64_t i = 0; i < size; ++i) total[i] += partials[t * size + i];
  for (int64_t c = 0; c < Cr; ++c) {
    out[c] = static_cast<T>(total[c]);
    for (int64_t c2 = 0; c2 <= c; ++c2)
      out[Cr + c * Cr + c2] = out[Cr + c2 * Cr + c] = static_cast<T>(total[Cr + c * Cr + c2]);
  }
}

// Backward of moments_kernel for grad (Cr + 1, Cr) = [g_a; G]: da = g_a + (G + G^T) a.
template <typename T>
void moments_backward_kernel(const Window& win, const Net<T>& net, const T* grad, const T* u1,
                             const T* u2, T* du1, T* du2, std::vector<T>& partials,
                             const GradLayout& lay) {
  const int64_t HW = win.HW, Cr = net.cr;
  std::vector<T> gsym(Cr * Cr);
  for (int64_t c = 0; c < Cr; ++c)
    for (int64_t c2 = 0; c2 < Cr; ++c2)
      gsym[c * Cr + c2] = grad[Cr + c * Cr + c2] + grad[Cr + c2 * Cr + c];
  partials.assign(num_bands(win) * lay.size, T(0));
  for_each_band(win, [&](int64_t n, int64_t qb, int64_t qe, int64_t task) {
    Scratch<T> s(net, win.K, false);
    T* part = partials.data() + task * lay.size;
    const T *u1n = u1 + n * Cr * HW, *u2n = u2 + n * Cr * HW;
    for (int64_t q0 = qb; q0 < qe; q0 += kTile) {
      const int64_t len = std::min(kTile, qe - q0);
      s.index(win, q0, len);
      for (int64_t k = 0; k < win.K; ++k) {
        relation(net, win, u1n, u2n, q0, len, s.runs, k, s.a.data());
        matmul(s.da.data(), gsym.data(), Cr, int64_t(1), s.a.data(), kTile, grad, Cr, Cr,
               vec_len(len));
        relation_backward(net, win, u1n, u2n, q0, len, k, s.da.data(), s.a.data(), s, part + lay.s1,
                          part + lay.t1, du1 + n * Cr * HW, du2 + n * Cr * HW);
      }
    }
  });
}

}  // namespace LSA_SAN_FUSED_ISA
