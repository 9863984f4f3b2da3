// SAN subtraction2 (and subtraction = subtraction2(x, x)): checks shared by the
// CPU and CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include "lsa/san.h"

namespace lsa {
namespace subtraction {

// Checks input1 and input2 (N, C, H, W) of one shape; returns the geometry.
SanGeometry check_inputs(const char* fn, const at::Tensor& input1, const at::Tensor& input2,
                         at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode);

// Checks grad_output (N, C, kh*kw, Ho*Wo) against the forward input size (N, C, H, W).
SanGeometry check_backward_inputs(const char* fn, const at::Tensor& grad_output,
                                  at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t pad_mode);

}  // namespace subtraction
}  // namespace lsa
