// SAN aggregation: argument checks shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include "lsa/san.h"

namespace lsa {
namespace aggregation {

// Checks input (N, C, H, W), weight (N, Cw, kh*kw, Ho*Wo) and, if given, grad_output
// (N, C, Ho, Wo); returns the geometry. `*cw` receives Cw.
SanGeometry check_inputs(const char* fn, const at::Tensor& input, const at::Tensor& weight,
                         at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode,
                         int64_t* cw, const at::Tensor* grad_output = nullptr);

}  // namespace aggregation
}  // namespace lsa
