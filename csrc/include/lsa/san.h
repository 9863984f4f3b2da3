// SAN window geometry and index maps, shared by the aggregation and subtraction
// kernels on CPU and CUDA (semantics: docs/ops.md, lsa/ops/reference/san.py).
//
// Tap (th, tw) of output (h, w) reads the "virtual" input position
//   v_h = -ph + h*sh + th*dh,   v_w = -pw + w*sw + tw*dw,
// which `san_source` maps to a real index: identity inside [0, L); outside it is
// skipped (zeros, -1) or reflected once (reflect, ReflectionPad2d semantics; exact
// because the entry points require padding < L for reflect).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "lsa/checks.h"
#include "lsa/macros.h"

namespace lsa {

enum SanPadMode : int64_t { kSanZeros = 0, kSanReflect = 1 };

// `I` is the index type: int64_t on the host, int32_t in CUDA kernels when sizes allow.
template <typename I>
struct SanGeometryT {
  I n, c, h, w;  // input (N, C, H, W)
  I kh, kw, sh, sw, ph, pw, dh, dw;
  I ho, wo;  // output size
  I mode;    // SanPadMode
  LSA_HOST_DEVICE I taps() const { return kh * kw; }
  LSA_HOST_DEVICE I positions() const { return ho * wo; }
  template <typename J>
  SanGeometryT<J> cast() const {
    return {J(n),  J(c),  J(h),  J(w),  J(kh), J(kw), J(sh),  J(sw),
            J(ph), J(pw), J(dh), J(dw), J(ho), J(wo), J(mode)};
  }
};
using SanGeometry = SanGeometryT<int64_t>;

// Real index read by virtual position v on an axis of length L, or -1 (zeros padding).
template <typename I>
LSA_HOST_DEVICE I san_source(I v, I L, I mode) {
  if (v >= 0 && v < L) return v;
  if (mode == kSanZeros) return -1;
  if (v < 0) v = -v;
  if (v >= L) v = 2 * (L - 1) - v;
  return v;
}

// The virtual positions whose source is real index i (inverse of san_source):
// i itself and, for reflect, its mirror images -i and 2(L-1)-i. Returns how many
// were written to `out` (1 to 3). Used by the gather-form (CUDA) backward kernels.
template <typename I>
LSA_HOST_DEVICE int san_virtual_positions(I i, I L, I mode, I out[3]) {
  int n = 0;
  out[n++] = i;
  if (mode == kSanReflect) {
    if (i >= 1) out[n++] = -i;
    if (i <= L - 2) out[n++] = 2 * (L - 1) - i;
  }
  return n;
}

// The output index o whose tap t reads virtual position v, or -1 if there is none.
template <typename I>
LSA_HOST_DEVICE I san_output_of(I v, I t, I s, I p, I d, I out_len) {
  const I num = v + p - t * d;
  if (num < 0 || num % s != 0) return -1;
  const I o = num / s;
  return o < out_len ? o : -1;
}

inline int64_t san_out_len(int64_t L, int64_t k, int64_t s, int64_t p, int64_t d) {
  const int64_t num = L + 2 * p - (d * (k - 1) + 1);
  return num < 0 ? 0 : num / s + 1;
}

// Checks the window arguments against an input of size (N, C, H, W) and returns the
// geometry (the one home of these checks, including the reflect-padding fit).
inline SanGeometry san_geometry(const char* fn, at::IntArrayRef input_size,
                                at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t pad_mode) {
  TORCH_CHECK_VALUE(input_size.size() == 4, fn, ": the input size must be (N, C, H, W), got ",
                    input_size);
  TORCH_CHECK_VALUE(
      kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
      fn, ": kernel_size, stride, padding and dilation must be pairs, got ", kernel_size, ", ",
      stride, ", ", padding, ", ", dilation);
  TORCH_CHECK_VALUE(kernel_size[0] >= 1 && kernel_size[1] >= 1, fn,
                    ": kernel_size must be >= 1, got ", kernel_size);
  TORCH_CHECK_VALUE(stride[0] >= 1 && stride[1] >= 1, fn, ": stride must be >= 1, got ", stride);
  TORCH_CHECK_VALUE(padding[0] >= 0 && padding[1] >= 0, fn, ": padding must be >= 0, got ",
                    padding);
  TORCH_CHECK_VALUE(dilation[0] >= 1 && dilation[1] >= 1, fn, ": dilation must be >= 1, got ",
                    dilation);
  TORCH_CHECK_VALUE(pad_mode == kSanZeros || pad_mode == kSanReflect, fn,
                    ": pad_mode must be 0 (zeros) or 1 (reflect), got ", pad_mode);
  SanGeometry g;
  g.n = input_size[0];
  g.c = input_size[1];
  g.h = input_size[2];
  g.w = input_size[3];
  g.kh = kernel_size[0];
  g.kw = kernel_size[1];
  g.sh = stride[0];
  g.sw = stride[1];
  g.ph = padding[0];
  g.pw = padding[1];
  g.dh = dilation[0];
  g.dw = dilation[1];
  g.mode = pad_mode;
  g.ho = san_out_len(g.h, g.kh, g.sh, g.ph, g.dh);
  g.wo = san_out_len(g.w, g.kw, g.sw, g.pw, g.dw);
  TORCH_CHECK_VALUE(g.ho >= 1 && g.wo >= 1, fn, ": the window (kernel_size=", kernel_size,
                    ", dilation=", dilation, ", padding=", padding,
                    ") does not fit the input of size (", g.h, ", ", g.w, ")");
  TORCH_CHECK_VALUE(pad_mode != kSanReflect || (g.ph < g.h && g.pw < g.w), fn,
                    ": reflect padding needs padding < input size, got padding=", padding,
                    " for an input of size (", g.h, ", ", g.w, ")");
  return g;
}

// The same for a floating 4-D `input` tensor.
inline SanGeometry san_geometry(const char* fn, const at::Tensor& input,
                                at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t pad_mode) {
  check_float_tensor(fn, "input", input, 4);
  return san_geometry(fn, input.sizes(), kernel_size, stride, padding, dilation, pad_mode);
}

}  // namespace lsa
