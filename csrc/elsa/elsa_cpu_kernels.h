// ELSA CPU compute loops (see elsa_cpu.cpp), included twice by elsa_cpu.cpp (generic code
// and an AVX2+FMA build chosen at run time), each time in its own namespace LSA_ELSA_ISA.
// No include guard on purpose; the types and helpers it uses (Geometry, Window, window,
// block_rows, Scratch, the flags) and all headers come from the including file.
namespace LSA_ELSA_ISA {

// The logits' gradient of `count` pixels from the softmax p[t * stride + q] and its
// gradient d[t * count + q]: out[t * stride + q] = p * (d - sum_t p * d).
template <typename scalar_t, typename acc_t>
void softmax_grad_pixels(int64_t taps, int64_t stride, int64_t count,
                         const scalar_t* LSA_RESTRICT p, const acc_t* LSA_RESTRICT d,
                         acc_t* LSA_RESTRICT dot, scalar_t* LSA_RESTRICT out) {
  for (int64_t q = 0; q < count; ++q) dot[q] = acc_t(0);
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t q = 0; q < count; ++q)
      dot[q] += static_cast<acc_t>(p[t * stride + q]) * d[t * count + q];
  for (int64_t t = 0; t < taps; ++t)
    for (int64_t q = 0; q < count; ++q)
      out[t * stride + q] = static_cast<scalar_t>(static_cast<acc_t>(p[t * stride + q]) *
                                                  (d[t * count + q] - dot[q]));
}

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

// One row block [r0, r1) of one sample's backward: adds its contributions to dV, the
// (Cg, k*k, Wo) partial rows of dM and dD, and computes the block's dA rows into sc.da.
template <typename scalar_t, typename acc_t, int F>
void backward_block(const Geometry& g, int64_t r0, int64_t r1, const scalar_t* LSA_RESTRICT go,
                    const scalar_t* LSA_RESTRICT v, const scalar_t* LSA_RESTRICT a,
                    const scalar_t* LSA_RESTRICT mul, const scalar_t* LSA_RESTRICT add,
                    Scratch<acc_t>& sc) {
  constexpr bool V = F & kDV, A = F & kDA, M = F & kDM, D = F & kDD;
  const int64_t plane_i = g.h * g.w, plane_o = g.ho * g.wo, kk = g.taps();
  const int64_t s = (F & kStride1) ? 1 : g.s;  // a constant 1 lets the x loop vectorise
  const int64_t count = (r1 - r0) * g.wo;
  if (A)
    for (int64_t i = 0; i < kk * count; ++i) sc.da[i] = acc_t(0);
  for (int64_t c = 0; c < g.cg; ++c) {
    const scalar_t* vc = v + c * plane_i;
    const scalar_t* gc = go + c * plane_o;
    acc_t* dvc = V ? sc.dv.data() + c * plane_i : nullptr;
    for (int64_t tap = 0; tap < kk; ++tap) {
      const Window t = window(g, tap, r0, r1);
      const acc_t m = static_cast<acc_t>(mul[c * kk + tap]);
      const acc_t b = static_cast<acc_t>(add[c * kk + tap]);
      acc_t* rm = M ? sc.rm.data() + (c * kk + tap) * g.wo : nullptr;
      acc_t* rd = D ? sc.rd.data() + (c * kk + tap) * g.wo : nullptr;
      for (int64_t y = t.y0; y < t.y1; ++y) {
        const int64_t in_off = (y * s + t.oy) * g.w + t.ox;
        const scalar_t* LSA_RESTRICT vr = vc + in_off;
        const scalar_t* LSA_RESTRICT ar = a + tap * plane_o + y * g.wo;
        const scalar_t* LSA_RESTRICT gr = gc + y * g.wo;
        acc_t* LSA_RESTRICT dvr = V ? dvc + in_off : nullptr;
        acc_t* LSA_RESTRICT dar = A ? sc.da.data() + tap * count + (y - r0) * g.wo : nullptr;
        for (int64_t x = t.x0; x < t.x1; ++x) {
          const acc_t gx = static_cast<acc_t>(gr[x]);
          const acc_t ax = static_cast<acc_t>(ar[x]);
          const acc_t vx = (A || M || D) ? static_cast<acc_t>(vr[x * s]) : acc_t(0);
          if (V) dvr[x * s] += gx * (ax * m + b);
          if (A) dar[x] += m * gx * vx;
          if (M) rm[x] += gx * vx * ax;
          if (D) rd[x] += gx * vx;
        }
      }
    }
  }
}

// The gradients of one sample n with the flags F (see backward_block; the first argument
// passes F); `softmax`: `a` is
// the softmax of the logits and `da` receives the logits' gradient.
template <typename scalar_t, typename acc_t, int F>
void backward_sample(std::integral_constant<int, F>, const Geometry& g, bool softmax,
                     const scalar_t* go, const scalar_t* v, const scalar_t* a, const scalar_t* mul,
                     const scalar_t* add, Scratch<acc_t>& sc, scalar_t* dv, scalar_t* da,
                     scalar_t* dmul, scalar_t* dadd) {
  constexpr bool V = F & kDV, A = F & kDA, M = F & kDM, D = F & kDD;
  const int64_t plane_i = g.h * g.w, plane_o = g.ho * g.wo, kk = g.taps();
  const int64_t rows = block_rows(g);
  if (V) std::fill(sc.dv.begin(), sc.dv.end(), acc_t(0));
  if (M) std::fill(sc.rm.begin(), sc.rm.end(), acc_t(0));
  if (D) std::fill(sc.rd.begin(), sc.rd.end(), acc_t(0));
  for (int64_t r0 = 0; r0 < g.ho; r0 += rows) {
    const int64_t r1 = std::min(r0 + rows, g.ho), count = (r1 - r0) * g.wo;
    backward_block<scalar_t, acc_t, F>(g, r0, r1, go, v, a, mul, add, sc);
    if (!A) continue;
    if (softmax) {
      softmax_grad_pixels(kk, plane_o, count, a + r0 * g.wo, sc.da.data(), sc.dot.data(),
                          da + r0 * g.wo);
    } else {
      for (int64_t t = 0; t < kk; ++t)
        for (int64_t q = 0; q < count; ++q)
          da[t * plane_o + r0 * g.wo + q] = static_cast<scalar_t>(sc.da[t * count + q]);
    }
  }
  if (V)
    for (int64_t i = 0; i < g.cg * plane_i; ++i) dv[i] = static_cast<scalar_t>(sc.dv[i]);
  if (M || D) {
    // dM and dD of (c, tap): the partial rows summed over the valid x, in order.
    for (int64_t ct = 0; ct < g.cg * kk; ++ct) {
      const Window t = window(g, ct % kk, 0, g.ho);
      acc_t sm = acc_t(0), sd = acc_t(0);
      for (int64_t x = t.x0; x < t.x1; ++x) {
        if (M) sm += sc.rm[ct * g.wo + x];
        if (D) sd += sc.rd[ct * g.wo + x];
      }
      if (M) dmul[ct] = static_cast<scalar_t>(sm);
      if (D) dadd[ct] = static_cast<scalar_t>(sd);
    }
  }
}

}  // namespace LSA_ELSA_ISA
