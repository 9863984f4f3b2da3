// Fused SAN pairwise attention: op schemas and the input checks of the kernels.
#include "san_fused.h"

#include <torch/library.h>

namespace lsa {
namespace san_fused {

void check_vector(const char* fn, const char* name, const at::Tensor& t, const at::Tensor& like,
                  int64_t len) {
  check_float_tensor(fn, name, t, 1);
  check_same_device_dtype(fn, "u1", like, name, t);
  TORCH_CHECK(t.size(0) == len, fn, ": ", name, " must have ", len, " entries, got ", t.size(0));
}

void check_matrix(const char* fn, const char* name, const at::Tensor& t, const at::Tensor& like,
                  int64_t rows, int64_t cols) {
  check_float_tensor(fn, name, t, 2);
  check_same_device_dtype(fn, "u1", like, name, t);
  TORCH_CHECK((rows < 0 || t.size(0) == rows) && t.size(1) == cols, fn, ": ", name,
              " must have shape (", rows, ", ", cols, "), got ", t.sizes());
}

int64_t check_value(const char* fn, const SanGeometry& g, const at::Tensor& u1,
                    const at::Tensor* value, const at::Tensor* grad_output, int64_t cw) {
  if (value == nullptr) return 0;
  check_float_tensor(fn, "value", *value, 4);
  check_same_device_dtype(fn, "u1", u1, "value", *value);
  const int64_t c = value->size(1);
  TORCH_CHECK(value->size(0) == g.n && value->size(2) == g.h && value->size(3) == g.w, fn,
              ": value must have shape (", g.n, ", C, ", g.h, ", ", g.w, "), got ", value->sizes());
  TORCH_CHECK(cw > 0 && c % cw == 0, fn, ": value channels C=", c,
              " must be a multiple of the weight channels Cw=", cw);
  if (grad_output != nullptr) {
    check_float_tensor(fn, "grad_output", *grad_output, 4);
    check_same_device_dtype(fn, "u1", u1, "grad_output", *grad_output);
    TORCH_CHECK(grad_output->sizes() == at::IntArrayRef({g.n, c, g.h, g.w}), fn,
                ": grad_output must have shape (", g.n, ", ", c, ", ", g.h, ", ", g.w, "), got ",
                grad_output->sizes());
  }
  return c;
}

SanGeometry check_inputs(const char* fn, const at::Tensor& u1, const at::Tensor& u2,
                         const at::Tensor& scale1, const at::Tensor& shift1,
                         const at::Tensor* weight1, const at::Tensor* bias1,
                         const at::Tensor* weight2, const at::Tensor* bias2,
                         const at::Tensor* value, const at::Tensor* grad_output,
                         int64_t kernel_size, int64_t dilation, int64_t pad_mode, Dims* dims) {
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, fn,
              ": kernel_size must be a positive odd int, got ", kernel_size);
  TORCH_CHECK(dilation >= 1, fn, ": dilation must be >= 1, got ", dilation);
  const int64_t k = kernel_size, p = dilation * (kernel_size - 1) / 2;
  const SanGeometry g =
      san_geometry(fn, u1, {k, k}, {1, 1}, {p, p}, {dilation, dilation}, pad_mode);
  TORCH_CHECK(g.h * g.w < (int64_t(1) << 31), fn, ": H*W must be < 2^31, got ", g.h, "*", g.w);
  TORCH_CHECK(u1.scalar_type() == at::kFloat || u1.scalar_type() == at::kDouble, fn,
              ": dtype must be float32 or float64, got ", u1.scalar_type());
  check_float_tensor(fn, "u2", u2, 4);
  check_same_device_dtype(fn, "u1", u1, "u2", u2);
  TORCH_CHECK(u2.sizes() == u1.sizes(), fn, ": u2 must have the shape of u1 ", u1.sizes(), ", got ",
              u2.sizes());
  Dims d{g.c, 0, 0, 0};
  check_vector(fn, "scale1", scale1, u1, d.cr);
  check_vector(fn, "shift1", shift1, u1, d.cr);
  if (weight1 != nullptr) {
    check_matrix(fn, "weight1", *weight1, u1, -1, d.cr);
    d.m = weight1->size(0);
    TORCH_CHECK(d.m >= 1, fn, ": weight1 must have at least one row");
  }
  if (bias1 != nullptr) check_vector(fn, "bias1", *bias1, u1, d.m);
  if (weight2 != nullptr) {
    check_matrix(fn, "weight2", *weight2, u1, -1, d.m);
    d.cw = weight2->size(0);
    TORCH_CHECK(d.cw >= 1, fn, ": weight2 must have at least one row");
  }
  if (bias2 != nullptr) check_vector(fn, "bias2", *bias2, u1, d.cw);
  d.c = check_value(fn, g, u1, value, grad_output, d.cw);
  *dims = d;
  return g;
}

}  // namespace san_fused
}  // namespace lsa

TORCH_LIBRARY_FRAGMENT(lsa, m) {
  m.def(
      "san_pairwise_forward(Tensor u1, Tensor u2, Tensor value, Tensor scale1, Tensor shift1, "
      "Tensor weight1, Tensor bias1, Tensor weight2, Tensor bias2, int kernel_size, "
      "int dilation, int pad_mode) -> Tensor");
  m.def(
      "san_pairwise_backward(Tensor grad_output, Tensor u1, Tensor u2, Tensor value, "
      "Tensor scale1, Tensor shift1, Tensor weight1, Tensor bias1, Tensor weight2, "
      "Tensor bias2, int kernel_size, int dilation, int pad_mode) -> Tensor[]");
  m.def(
      "san_pairwise_moments(Tensor u1, Tensor u2, Tensor scale1, Tensor shift1, "
      "int kernel_size, int dilation, int pad_mode) -> Tensor");
  m.def(
      "san_pairwise_moments_backward(Tensor grad, Tensor u1, Tensor u2, Tensor scale1, "
      "Tensor shift1, int kernel_size, int dilation, int pad_mode) -> Tensor[]");
}
