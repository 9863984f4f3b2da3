// Fused SAN patchwise attention: argument checks shared by the CPU and CUDA kernels.
//
// Per output pixel q, with R relation channels, K = k * k taps (source j_k = tap k of q,
// reflect or zero padding) and CA = R * (K + 1) gamma input channels:
//   t  = [u1[:, q]; u2[c, j_k] at row R + c * K + k]   (zero padding reads 0)
//   a  = relu(scale1 * t + shift1)                     (gamma's BN1 + ReLU, folded)
//   z  = relu(weight1 @ a + bias1)                     (conv1 with BN2 folded, ReLU)
//   w  = weight2 @ z + bias2                           (conv2: Cw * K rows, row j * K + k)
//   y[c, q] = sum_k w[(c % Cw) * K + k] * value[c, j_k] (SAN aggregation, no softmax)
// The moments op returns the sums over (N, H*W) of h = weight1 @ a and of h * h, (2, M):
// gamma's BN2 statistics in training mode.
#pragma once

#include <ATen/core/Tensor.h>

#include "lsa/san.h"

namespace lsa {
namespace san_patchwise {

struct Dims {
  int64_t r, ca, m, cw, c;  // relation, gamma input, hidden, weight and value channels
};

// Checks u1/u2 (N, R, H, W), scale1/shift1 (CA), weight1 (M, CA) and, when given,
// bias1 (M), weight2 (Cw * K, M), bias2 (Cw * K), value (N, C, H, W) with C % Cw == 0 and
// grad_output (N, C, H, W). Returns the "same" window geometry: stride 1, padding
// dilation * (kernel_size - 1) / 2; kernel_size must be odd.
SanGeometry check_inputs(const char* fn, const at::Tensor& u1, const at::Tensor& u2,
                         const at::Tensor& scale1, const at::Tensor& shift1,
                         const at::Tensor& weight1, const at::Tensor* bias1,
                         const at::Tensor* weight2, const at::Tensor* bias2,
                         const at::Tensor* value, const at::Tensor* grad_output,
                         int64_t kernel_size, int64_t dilation, int64_t pad_mode, Dims* dims);

}  // namespace san_patchwise
}  // namespace lsa
