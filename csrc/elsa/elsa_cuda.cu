// ELSA on CUDA: the kernels of elsa_kernels.h on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "elsa_kernels.h"
#include "lsa/cuda_utils.cuh"

namespace lsa {
namespace elsa {
namespace {

at::Tensor forward_cuda(const at::Tensor& features, const at::Tensor& attn,
                        const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                        int64_t kernel_size, int64_t stride, int64_t dilation) {
  const c10::cuda::CUDAGuard guard(features.device());
  return std::get<0>(forward_on(cuda::Launcher{}, features, attn, ghost_mul, ghost_add, kernel_size,
                                stride, dilation, false));
}

std::tuple<at::Tensor, at::Tensor> softmax_forward_cuda(
    const at::Tensor& features, const at::Tensor& logits, const at::Tensor& ghost_mul,
    const at::Tensor& ghost_add, int64_t kernel_size, int64_t stride, int64_t dilation) {
  const c10::cuda::CUDAGuard guard(features.device());
  return forward_on(cuda::Launcher{}, features, logits, ghost_mul, ghost_add, kernel_size, stride,
                    dilation, true);
}

Grads backward_cuda(const at::Tensor& grad_out, const at::Tensor& features, const at::Tensor& attn,
                    const at::Tensor& ghost_mul, const at::Tensor& ghost_add, int64_t kernel_size,
                    int64_t stride, int64_t dilation, std::array<bool, 4> mask) {
  const c10::cuda::CUDAGuard guard(features.device());
  return backward_on(cuda::Launcher{}, grad_out, features, attn, ghost_mul, ghost_add, kernel_size,
                     stride, dilation, mask, false);
}

Grads softmax_backward_cuda(const at::Tensor& grad_out, const at::Tensor& features,
                            const at::Tensor& attn, const at::Tensor& ghost_mul,
                            const at::Tensor& ghost_add, int64_t kernel_size, int64_t stride,
                            int64_t dilation, std::array<bool, 4> mask) {
  const c10::cuda::CUDAGuard guard(features.device());
  return backward_on(cuda::Launcher{}, grad_out, features, attn, ghost_mul, ghost_add, kernel_size,
                     stride, dilation, mask, true);
}

}  // namespace
}  // namespace elsa
}  // namespace lsa

TORCH_LIBRARY_IMPL(lsa, CUDA, m) {
  m.impl("elsa_forward", &lsa::elsa::forward_cuda);
  m.impl("elsa_backward", &lsa::elsa::backward_cuda);
  m.impl("elsa_softmax_forward", &lsa::elsa::softmax_forward_cuda);
  m.impl("elsa_softmax_backward", &lsa::elsa::softmax_backward_cuda);
}
