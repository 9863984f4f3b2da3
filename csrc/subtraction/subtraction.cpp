// SAN subtraction2: op schemas and the input checks shared by the CPU and CUDA kernels.
// (subtraction(x) is subtraction2(x, x); autograd adds the two input gradients.)
#include "subtraction.h"

#include <torch/library.h>

namespace lsa {
namespace subtraction {

SanGeometry check_inputs(const char* fn, const at::Tensor& input1, const at::Tensor& input2,
                         at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode) {
  const SanGeometry g = san_geometry(fn, input1, kernel_size, stride, padding, dilation, pad_mode);
  check_float_tensor(fn, "input2", input2, 4);
  check_same_device_dtype(fn, "input1", input1, "input2", input2);
  TORCH_CHECK_VALUE(input2.sizes() == input1.sizes(), fn,
                    ": input1 and input2 must have one shape, got ", input1.sizes(), " and ",
                    input2.sizes());
  return g;
}

SanGeometry check_backward_inputs(const char* fn, const at::Tensor& grad_output,
                                  at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                  at::IntArrayRef stride, at::IntArrayRef padding,
                                  at::IntArrayRef dilation, int64_t pad_mode) {
  check_float_tensor(fn, "grad_output", grad_output, 4);
  const SanGeometry g =
      san_geometry(fn, input_size, kernel_size, stride, padding, dilation, pad_mode);
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef({g.n, g.c, g.taps(), g.positions()}), fn,
                    ": grad_output must have shape (", g.n, ", ", g.c, ", ", g.taps(), ", ",
                    g.positions(), "), got ", grad_output.sizes());
  return g;
}

}  // namespace subtraction
}  // namespace lsa

TORCH_LIBRARY_FRAGMENT(lsa, m) {
  m.def(
      "subtraction2_forward(Tensor input1, Tensor input2, int[2] kernel_size, int[2] stride, "
      "int[2] padding, int[2] dilation, int pad_mode) -> Tensor");
  // Only the size (N, C, H, W) of the forward inputs is needed: the backward keeps no input.
  m.def(
      "subtraction2_backward(Tensor grad_output, SymInt[4] input_size, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, int pad_mode) -> (Tensor, Tensor)");
}
