// SAN aggregation on CUDA: the kernels of aggregation_kernels.h on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "aggregation_kernels.h"
#include "lsa/cuda_utils.cuh"

namespace lsa {
namespace aggregation {
namespace {

at::Tensor forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                        at::IntArrayRef kernel_size, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode) {
  const c10::cuda::CUDAGuard guard(input.device());
  return forward_on(cuda::Launcher{}, input, weight, kernel_size, stride, padding, dilation,
                    pad_mode);
}

at::Tensor backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                               const at::Tensor& weight, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t pad_mode) {
  const c10::cuda::CUDAGuard guard(input.device());
  return backward_input_on(cuda::Launcher{}, grad_output, input, weight, kernel_size, stride,
                           padding, dilation, pad_mode);
}

at::Tensor backward_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                const at::Tensor& weight, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, int64_t pad_mode) {
  const c10::cuda::CUDAGuard guard(input.device());
  return backward_weight_on(cuda::Launcher{}, grad_output, input, weight, kernel_size, stride,
                            padding, dilation, pad_mode);
}

}  // namespace
}  // namespace aggregation
}  // namespace lsa

TORCH_LIBRARY_IMPL(lsa, CUDA, m) {
  m.impl("aggregation_forward", &lsa::aggregation::forward_cuda);
  m.impl("aggregation_backward_input", &lsa::aggregation::backward_input_cuda);
  m.impl("aggregation_backward_weight", &lsa::aggregation::backward_weight_cuda);
}
