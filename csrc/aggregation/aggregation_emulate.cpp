// Test-only ops: the CUDA kernels of aggregation_kernels.h run on the CPU over the whole
// launch grid (lsa/emulate.h). Same arguments as the real ops plus `index_bits` (32/64)
// and `max_blocks` (grid cap; small values exercise the grid-stride loops).
#include <torch/library.h>

#include "aggregation_kernels.h"
#include "lsa/emulate.h"

namespace lsa {
namespace aggregation {
namespace {

at::Tensor forward_emulated(const at::Tensor& input, const at::Tensor& weight,
                            at::IntArrayRef kernel_size, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode,
                            int64_t index_bits, int64_t max_blocks) {
  return forward_on(emulate::Launcher(index_bits, max_blocks), input, weight, kernel_size, stride,
                    padding, dilation, pad_mode);
}

at::Tensor backward_input_emulated(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& weight, at::IntArrayRef kernel_size,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, int64_t pad_mode, int64_t index_bits,
                                   int64_t max_blocks) {
  return backward_input_on(emulate::Launcher(index_bits, max_blocks), grad_output, input, weight,
                           kernel_size, stride, padding, dilation, pad_mode);
}

at::Tensor backward_weight_emulated(const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& weight, at::IntArrayRef kernel_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, int64_t pad_mode, int64_t index_bits,
                                    int64_t max_blocks) {
  return backward_weight_on(emulate::Launcher(index_bits, max_blocks), grad_output, input, weight,
                            kernel_size, stride, padding, dilation, pad_mode);
}

}  // namespace
}  // namespace aggregation
}  // namespace lsa

TORCH_LIBRARY_FRAGMENT(lsa, m) {
  m.def(
      "_emulate_cuda_aggregation_forward(Tensor input, Tensor weight, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, int pad_mode, int index_bits, "
      "int max_blocks) -> Tensor");
  m.def(
      "_emulate_cuda_aggregation_backward_input(Tensor grad_output, Tensor input, "
      "Tensor weight, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "int pad_mode, int index_bits, int max_blocks) -> Tensor");
  m.def(
      "_emulate_cuda_aggregation_backward_weight(Tensor grad_output, Tensor input, "
      "Tensor weight, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "int pad_mode, int index_bits, int max_blocks) -> Tensor");
}

TORCH_LIBRARY_IMPL(lsa, CPU, m) {
  m.impl("_emulate_cuda_aggregation_forward", &lsa::aggregation::forward_emulated);
  m.impl("_emulate_cuda_aggregation_backward_input", &lsa::aggregation::backward_input_emulated);
  m.impl("_emulate_cuda_aggregation_backward_weight", &lsa::aggregation::backward_weight_emulated);
}
