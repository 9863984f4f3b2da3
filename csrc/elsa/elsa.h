// ELSA local attention with a ghost head: declarations shared by the CPU and CUDA kernels.
//
//   out[n,c,y,x] = sum_{ky,kx} V[n,c,y*s+off(ky),x*s+off(kx)]
//                  * (A[n,ky*k+kx,y,x] * M[n,c,ky,kx] + D[n,c,ky,kx]),  off(t) = (t - k/2) * d
//
// V (Nb, Cg, H, W), A (Nb, k*k, H/s, W/s), M and D (Nb, Cg, k, k); zero padding; output
// (Nb, Cg, H/s, W/s) (floor). The Python wrapper lsa/ops/elsa.py broadcasts M and D.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>

#if defined(__CUDACC__)
#define LSA_ELSA_HD __host__ __device__
#else
#define LSA_ELSA_HD
#endif

namespace lsa {
namespace elsa {

// Sizes of one call, validated by check_inputs.
struct Geometry {
  int64_t nb, cg, h, w, ho, wo, k, s, d;
  int64_t taps() const { return k * k; }
  int64_t tap_offset(int64_t t) const { return (t - k / 2) * d; }
};

// Validates shapes/dtypes/devices of the forward inputs (errors name the values).
Geometry check_inputs(const char* fn, const at::Tensor& features, const at::Tensor& attn,
                      const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                      int64_t kernel_size, int64_t stride, int64_t dilation);

// Also checks grad_out against the output shape and the inputs' device/dtype.
void check_grad(const char* fn, const at::Tensor& grad_out, const at::Tensor& features,
                const Geometry& g);

// Outputs y in [lo, hi) of a line of length `lo_len` whose input index y*s + off lies in [0, len).
LSA_ELSA_HD inline void valid_range(int64_t off, int64_t s, int64_t len, int64_t out_len,
                                    int64_t* lo, int64_t* hi) {
  const int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
  const int64_t last = len - 1 - off;  // largest admissible y*s
  int64_t h = last < 0 ? 0 : last / s + 1;
  h = h < out_len ? h : out_len;
  *lo = l;
  *hi = h > l ? h : l;
}

}  // namespace elsa
}  // namespace lsa
