// SAN subtraction2: op schemas and the input checks shared by the CPU and CUDA kernels.
// (subtraction(x) is subtraction2(x, x); autograd adds the two input gradients.)
#include "subtraction.h"

#include <torch/library.h>

namespace lsa {
namespace subtraction {

SanGeometry check_inputs(const char* fn, const at::Tensor& input1, const at::Tensor& other,
                         at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode,
                         bool other_is_grad) {
  const SanGeometry g =
      san_geometry(fn, input1, kernel_size, stride, padding, dilation, pad_mode);
  const char* name = other_is_grad ? "grad_output" : "input2";
  check_float_tensor(fn, name, other, 4);
  check_same_device_dtype(fn, "input", input1, name, other);
  if (other_is_grad) {
    TORCH_CHECK(other.sizes() == at::IntArrayRef({g.n, g.c, g.taps(), g.positions()}), fn,
                ": grad_output must have shape (", g.n, ", ", g.c, ", ", g.taps(), ", ",
                g.positions(), "), got ", other.sizes());
  } else {
    TORCH_CHECK(other.sizes() == input1.sizes(), fn,
                ": input1 and input2 must have one shape, got ", input1.sizes(), " and ",
                other.sizes());
  }
  return g;
}

}  // namespace subtraction
}  // namespace lsa

TORCH_LIBRARY_FRAGMENT(lsa, m) {
  m.def(
      "subtraction2_forward(Tensor input1, Tensor input2, int[2] kernel_size, int[2] stride, "
      "int[2] padding, int[2] dilation, int pad_mode) -> Tensor");
  // `input` (input1 of the forward) only gives the shape of the two gradients.
  m.def(
      "subtraction2_backward(Tensor grad_output, Tensor input, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, int pad_mode) -> (Tensor, Tensor)");
}
