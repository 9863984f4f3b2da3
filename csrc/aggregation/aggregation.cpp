// SAN aggregation: op schemas and the input checks shared by the CPU and CUDA kernels.
#include "aggregation.h"

#include <torch/library.h>

namespace lsa {
namespace aggregation {

SanGeometry check_inputs(const char* fn, const at::Tensor& input, const at::Tensor& weight,
                         at::IntArrayRef kernel_size, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t pad_mode,
                         int64_t* cw, const at::Tensor* grad_output) {
  const SanGeometry g = san_geometry(fn, input, kernel_size, stride, padding, dilation, pad_mode);
  check_float_tensor(fn, "weight", weight, 4);
  check_same_device_dtype(fn, "input", input, "weight", weight);
  const int64_t c_w = weight.size(1);
  TORCH_CHECK_VALUE(weight.size(0) == g.n, fn, ": weight batch ", weight.size(0),
                    " != input batch ", g.n);
  TORCH_CHECK_VALUE(c_w > 0 && g.c % c_w == 0, fn, ": input channels C=", g.c,
                    " must be a multiple of the weight channels Cw=", c_w);
  TORCH_CHECK_VALUE(weight.size(2) == g.taps(), fn,
                    ": weight taps weight.shape[2]=", weight.size(2), " != kernel area ", g.kh, "*",
                    g.kw, "=", g.taps());
  TORCH_CHECK_VALUE(weight.size(3) == g.positions(), fn,
                    ": weight positions weight.shape[3]=", weight.size(3), " != Ho*Wo=", g.ho, "*",
                    g.wo, "=", g.positions(), " for input size (", g.h, ", ", g.w, ")");
  if (grad_output != nullptr) {
    check_float_tensor(fn, "grad_output", *grad_output, 4);
    check_same_device_dtype(fn, "input", input, "grad_output", *grad_output);
    TORCH_CHECK_VALUE(grad_output->sizes() == at::IntArrayRef({g.n, g.c, g.ho, g.wo}), fn,
                      ": grad_output must have shape (", g.n, ", ", g.c, ", ", g.ho, ", ", g.wo,
                      "), got ", grad_output->sizes());
  }
  *cw = c_w;
  return g;
}

}  // namespace aggregation
}  // namespace lsa

TORCH_LIBRARY_FRAGMENT(lsa, m) {
  m.def(
      "aggregation_forward(Tensor input, Tensor weight, int[2] kernel_size, int[2] stride, "
      "int[2] padding, int[2] dilation, int pad_mode) -> Tensor");
  m.def(
      "aggregation_backward_input(Tensor grad_output, Tensor input, Tensor weight, "
      "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, int pad_mode) "
      "-> Tensor");
  m.def(
      "aggregation_backward_weight(Tensor grad_output, Tensor input, Tensor weight, "
      "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, int pad_mode) "
      "-> Tensor");
}
