// Fused SAN pairwise attention: argument checks shared by the CPU and CUDA kernels.
//
// Per output pixel q and tap k (source pixel j = tap k of q, reflect or zero padding):
//   r  = u1[:, q] - u2[:, j]                          (Cr relation channels)
//   a  = relu(scale1 * r + shift1)                    (gamma's BN1 + ReLU, folded)
//   z  = relu(weight1 @ a + bias1)                    (conv1 with BN2 folded, ReLU)
//   l  = weight2 @ z + bias2                          (conv2: Cw logits)
//   p  = softmax over the K taps of l                 (per weight channel)
//   y[c, q] = sum_k p[c % Cw, k] * value[c, j]        (SAN aggregation)
// The moments op returns, over (N, K, H*W), the sum of a (Cr) and the sum of a a^T
// (Cr x Cr): the statistics of gamma's BN2 input weight1 @ a in training mode follow
// from them as weight1 @ sum(a) and diag(weight1 sum(a a^T) weight1^T).
#pragma once

#include <ATen/core/Tensor.h>

#include "lsa/san.h"

namespace lsa {
namespace san_fused {

// `t` is a vector of `len` entries / a (rows, cols) matrix (rows < 0: any), on the device
// and of the dtype of `like` (u1).
void check_vector(const char* fn, const char* name, const at::Tensor& t, const at::Tensor& like,
                  int64_t len);
void check_matrix(const char* fn, const char* name, const at::Tensor& t, const at::Tensor& like,
                  int64_t rows, int64_t cols);

// Checks value (N, C, H, W) with C % cw == 0 against the geometry and, when given,
// grad_output (N, C, H, W); returns C (0 without value).
int64_t check_value(const char* fn, const SanGeometry& g, const at::Tensor& u1,
                    const at::Tensor* value, const at::Tensor* grad_output, int64_t cw);

struct Dims {
  int64_t cr, m, cw, c;  // relation, hidden, weight and value channels
};

// Checks u1/u2 (N, Cr, H, W), scale1/shift1 (Cr) and, when given, weight1 (M, Cr),
// bias1 (M), weight2 (Cw, M), bias2 (Cw), value (N, C, H, W) with C % Cw == 0 and
// grad_output (N, C, H, W). Returns the SAN "same" geometry: stride 1, padding
// dilation * (kernel_size - 1) / 2; kernel_size must be odd.
SanGeometry check_inputs(const char* fn, const at::Tensor& u1, const at::Tensor& u2,
                         const at::Tensor& scale1, const at::Tensor& shift1,
                         const at::Tensor* weight1, const at::Tensor* bias1,
                         const at::Tensor* weight2, const at::Tensor* bias2,
                         const at::Tensor* value, const at::Tensor* grad_output,
                         int64_t kernel_size, int64_t dilation, int64_t pad_mode, Dims* dims);

}  // namespace san_fused
}  // namespace lsa
