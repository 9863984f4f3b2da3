// Test-only ops: the CUDA kernels of elsa_kernels.h run on the CPU over the whole launch
// grid (lsa/emulate.h). Same arguments as the real ops plus `index_bits` (32/64) and
// `max_blocks` (grid cap; small values exercise the grid-stride loops); the softmax ones
// emulate elsa_softmax_forward / elsa_softmax_backward.
#include <torch/library.h>

#include <array>
#include <tuple>

#include "elsa_kernels.h"
#include "lsa/emulate.h"

namespace lsa {
namespace elsa {
namespace {

at::Tensor forward_emulated(const at::Tensor& features, const at::Tensor& attn,
                            const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                            int64_t kernel_size, int64_t stride, int64_t dilation,
                            int64_t index_bits, int64_t max_blocks) {
  return std::get<0>(forward_on(emulate::Launcher(index_bits, max_blocks), features, attn,
                                ghost_mul, ghost_add, kernel_size, stride, dilation, false));
}

std::tuple<at::Tensor, at::Tensor> softmax_forward_emulated(
    const at::Tensor& features, const at::Tensor& logits, const at::Tensor& ghost_mul,
    const at::Tensor& ghost_add, int64_t kernel_size, int64_t stride, int64_t dilation,
    int64_t index_bits, int64_t max_blocks) {
  return forward_on(emulate::Launcher(index_bits, max_blocks), features, logits, ghost_mul,
                    ghost_add, kernel_size, stride, dilation, true);
}

Grads backward_emulated(const at::Tensor& grad_out, const at::Tensor& features,
                        const at::Tensor& attn, const at::Tensor& ghost_mul,
                        const at::Tensor& ghost_add, int64_t kernel_size, int64_t stride,
                        int64_t dilation, std::array<bool, 4> mask, int64_t index_bits,
                        int64_t max_blocks) {
  return backward_on(emulate::Launcher(index_bits, max_blocks), grad_out, features, attn, ghost_mul,
                     ghost_add, kernel_size, stride, dilation, mask, false);
}

Grads softmax_backward_emulated(const at::Tensor& grad_out, const at::Tensor& features,
                                const at::Tensor& attn, const at::Tensor& ghost_mul,
                                const at::Tensor& ghost_add, int64_t kernel_size, int64_t stride,
                                int64_t dilation, std::array<bool, 4> mask, int64_t index_bits,
                                int64_t max_blocks) {
  return backward_on(emulate::Launcher(index_bits, max_blocks), grad_out, features, attn, ghost_mul,
                     ghost_add, kernel_size, stride, dilation, mask, true);
}

}  // namespace
}  // namespace elsa
}  // namespace lsa

TORCH_LIBRARY_FRAGMENT(lsa, m) {
  m.def(
      "_emulate_cuda_elsa_forward(Tensor features, Tensor attn, Tensor ghost_mul, "
      "Tensor ghost_add, int kernel_size, int stride, int dilation, int index_bits, "
      "int max_blocks) -> Tensor");
  m.def(
      "_emulate_cuda_elsa_backward(Tensor grad_out, Tensor features, Tensor attn, "
      "Tensor ghost_mul, Tensor ghost_add, int kernel_size, int stride, int dilation, "
      "bool[4] output_mask, int index_bits, int max_blocks) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "_emulate_cuda_elsa_softmax_forward(Tensor features, Tensor logits, Tensor ghost_mul, "
      "Tensor ghost_add, int kernel_size, int stride, int dilation, int index_bits, "
      "int max_blocks) -> (Tensor, Tensor)");
  m.def(
      "_emulate_cuda_elsa_softmax_backward(Tensor grad_out, Tensor features, Tensor attn, "
      "Tensor ghost_mul, Tensor ghost_add, int kernel_size, int stride, int dilation, "
      "bool[4] output_mask, int index_bits, int max_blocks) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(lsa, CPU, m) {
  m.impl("_emulate_cuda_elsa_forward", &lsa::elsa::forward_emulated);
  m.impl("_emulate_cuda_elsa_backward", &lsa::elsa::backward_emulated);
  m.impl("_emulate_cuda_elsa_softmax_forward", &lsa::elsa::softmax_forward_emulated);
  m.impl("_emulate_cuda_elsa_softmax_backward", &lsa::elsa::softmax_backward_emulated);
}
