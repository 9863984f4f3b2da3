// SAN subtraction2 on CUDA: the kernels of subtraction_kernels.h on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "lsa/cuda_utils.cuh"
#include "subtraction_kernels.h"

namespace lsa {
namespace subtraction {
namespace {

at::Tensor forward_cuda(const at::Tensor& input1, const at::Tensor& input2,
                        at::IntArrayRef kernel_size, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode) {
  const c10::cuda::CUDAGuard guard(input1.device());
  return forward_on(cuda::Launcher{}, input1, input2, kernel_size, stride, padding, dilation,
                    pad_mode);
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_output,
                                                 at::IntArrayRef input_size,
                                                 at::IntArrayRef kernel_size,
                                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                                 at::IntArrayRef dilation, int64_t pad_mode) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  return backward_on(cuda::Launcher{}, grad_output, input_size, kernel_size, stride, padding,
                     dilation, pad_mode);
}

}  // namespace
}  // namespace subtraction
}  // namespace lsa

TORCH_LIBRARY_IMPL(lsa, CUDA, m) {
  m.impl("subtraction2_forward", &lsa::subtraction::forward_cuda);
  m.impl("subtraction2_backward", &lsa::subtraction::backward_cuda);
}
