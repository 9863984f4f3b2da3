// ELSA local attention with a ghost head: declarations shared by the CPU and CUDA kernels.
//
//   out[n,c,y,x] = sum_{ky,kx} V[n,c,y*s+off(ky),x*s+off(kx)]
//                  * (A[n,ky*k+kx,y,x] * M[n,c,ky,kx] + D[n,c,ky,kx]),  off(t) = (t - k/2) * d
//
// V (Nb, Cg, H, W), A (Nb, k*k, H/s, W/s), M and D broadcastable to (Nb, Cg, k, k); zero
// padding; output (Nb, Cg, H/s, W/s) (floor).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <tuple>

#include "lsa/macros.h"

namespace lsa {
namespace elsa {

// Sizes of one call, validated by check_inputs. `I` is the index type: int64_t on the
// host, int32_t in CUDA kernels when sizes allow.
template <typename I>
struct GeometryT {
  I nb, cg, h, w, ho, wo, k, s, d;
  LSA_HOST_DEVICE I taps() const { return k * k; }
  LSA_HOST_DEVICE I tap_offset(I t) const { return (t - k / 2) * d; }
  template <typename J>
  GeometryT<J> cast() const {
    return {J(nb), J(cg), J(h), J(w), J(ho), J(wo), J(k), J(s), J(d)};
  }
};
using Geometry = GeometryT<int64_t>;

// The validated inputs of one call: contiguous, the ghosts expanded to (Nb, Cg, k, k).
struct Inputs {
  Geometry g;
  at::Tensor v, a, m, b;
};

// Validates shapes/dtypes/devices of the forward inputs (errors name the values).
Inputs check_inputs(const char* fn, const at::Tensor& features, const at::Tensor& attn,
                    const at::Tensor& ghost_mul, const at::Tensor& ghost_add, int64_t kernel_size,
                    int64_t stride, int64_t dilation);

// Also checks grad_out against the output shape and the inputs' device/dtype.
void check_grad(const char* fn, const at::Tensor& grad_out, const at::Tensor& features,
                const Geometry& g);

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The gradients of (features, attn, ghost_mul, ghost_add) selected by `mask` (others are
// zero-size); zero-filled when the output is empty, else uninitialised (`*empty_output`
// says which). dM and dD are allocated together when either is asked for.
Grads allocate_grads(const Geometry& g, const at::TensorOptions& opts, std::array<bool, 4> mask,
                     bool* empty_output);

// Outputs y in [lo, hi) of a line of length `len` whose input index y*s + off lies in [0, len).
LSA_HOST_DEVICE void valid_range(int64_t off, int64_t s, int64_t len, int64_t out_len, int64_t* lo,
                                 int64_t* hi) {
  const int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
  const int64_t last = len - 1 - off;  // largest admissible y*s
  int64_t h = last < 0 ? 0 : last / s + 1;
  h = h < out_len ? h : out_len;
  *lo = l;
  *hi = h > l ? h : l;
}

}  // namespace elsa
}  // namespace lsa
