// Test-only ops: the CUDA kernels of subtraction_kernels.h run on the CPU over the whole
// launch grid (lsa/emulate.h). Same arguments as the real ops plus `index_bits` (32/64)
// and `max_blocks` (grid cap; small values exercise the grid-stride loops).
#include <torch/library.h>

#include <tuple>

#include "lsa/emulate.h"
#include "subtraction_kernels.h"

namespace lsa {
namespace subtraction {
namespace {

at::Tensor forward_emulated(const at::Tensor& input1, const at::Tensor& input2,
                            at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode,
                            int64_t index_bits, int64_t max_blocks) {
  return forward_on(emulate::Launcher(index_bits, max_blocks), input1, input2, kernel_size, stride,
                    padding, dilation, pad_mode);
}

std::tuple<at::Tensor, at::Tensor> backward_emulated(
    const at::Tensor& grad_output, at::IntArrayRef input_size, at::IntArrayRef kernel_size,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode,
    int64_t index_bits, int64_t max_blocks) {
  return backward_on(emulate::Launcher(index_bits, max_blocks), grad_output, input_size,
                     kernel_size, stride, padding, dilation, pad_mode);
}

}  // namespace
}  // namespace subtraction
}  // namespace lsa

TORCH_LIBRARY_FRAGMENT(lsa, m) {
  m.def(
      "_emulate_cuda_subtraction2_forward(Tensor input1, Tensor input2, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, int pad_mode, int index_bits, "
      "int max_blocks) -> Tensor");
  m.def(
      "_emulate_cuda_subtraction2_backward(Tensor grad_output, int[4] input_size, "
      "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, int pad_mode, "
      "int index_bits, int max_blocks) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(lsa, CPU, m) {
  m.impl("_emulate_cuda_subtraction2_forward", &lsa::subtraction::forward_emulated);
  m.impl("_emulate_cuda_subtraction2_backward", &lsa::subtraction::backward_emulated);
}
