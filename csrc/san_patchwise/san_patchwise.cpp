// Fused SAN patchwise attention: op schemas and the input checks of the kernels.
#include "san_patchwise.h"

#include <torch/library.h>

#include "../san_fused/san_fused.h"

namespace lsa {
namespace san_patchwise {

SanGeometry check_inputs(const char* fn, const at::Tensor& u1, const at::Tensor& u2,
                         const at::Tensor& scale1, const at::Tensor& shift1,
                         const at::Tensor& weight1, const at::Tensor* bias1,
                         const at::Tensor* weight2, const at::Tensor* bias2,
                         const at::Tensor* value, const at::Tensor* grad_output,
                         int64_t kernel_size, int64_t dilation, int64_t pad_mode, Dims* dims) {
  // u1, u2 and the geometry as in the pairwise op (its scale1 and shift1 checks are
  // against the relation channels: give it dummies of that length)
  san_fused::Dims pd{};
  const int64_t r = u1.dim() == 4 ? u1.size(1) : 0;
  const at::Tensor dummy = u1.defined() ? u1.new_empty({r}) : u1;
  const SanGeometry g =
      san_fused::check_inputs(fn, u1, u2, dummy, dummy, nullptr, nullptr, nullptr, nullptr, nullptr,
                              nullptr, kernel_size, dilation, pad_mode, &pd);
  const int64_t K = kernel_size * kernel_size;
  Dims d{r, r * (K + 1), 0, 0, 0};
  san_fused::check_vector(fn, "scale1", scale1, u1, d.ca);
  san_fused::check_vector(fn, "shift1", shift1, u1, d.ca);
  san_fused::check_matrix(fn, "weight1", weight1, u1, -1, d.ca);
  d.m = weight1.size(0);
  TORCH_CHECK(d.m >= 1, fn, ": weight1 must have at least one row");
  if (bias1 != nullptr) san_fused::check_vector(fn, "bias1", *bias1, u1, d.m);
  if (weight2 != nullptr) {
    san_fused::check_matrix(fn, "weight2", *weight2, u1, -1, d.m);
    TORCH_CHECK(weight2->size(0) >= K && weight2->size(0) % K == 0, fn,
                ": weight2 rows must be a positive multiple of K=", K, ", got ", weight2->size(0));
    d.cw = weight2->size(0) / K;
  }
  if (bias2 != nullptr) san_fused::check_vector(fn, "bias2", *bias2, u1, d.cw * K);
  d.c = san_fused::check_value(fn, g, u1, value, grad_output, d.cw);
  *dims = d;
  return g;
}

}  // namespace san_patchwise
}  // namespace lsa

TORCH_LIBRARY_FRAGMENT(lsa, m) {
  m.def(
      "san_patchwise_forward(Tensor u1, Tensor u2, Tensor value, Tensor scale1, Tensor shift1, "
      "Tensor weight1, Tensor bias1, Tensor weight2, Tensor bias2, int kernel_size, "
      "int dilation, int pad_mode) -> Tensor");
  m.def(
      "san_patchwise_backward(Tensor grad_output, Tensor u1, Tensor u2, Tensor value, "
      "Tensor scale1, Tensor shift1, Tensor weight1, Tensor bias1, Tensor weight2, "
      "Tensor bias2, int kernel_size, int dilation, int pad_mode) -> Tensor[]");
  m.def(
      "san_patchwise_moments(Tensor u1, Tensor u2, Tensor scale1, Tensor shift1, "
      "Tensor weight1, int kernel_size, int dilation, int pad_mode) -> Tensor");
  m.def(
      "san_patchwise_moments_backward(Tensor grad, Tensor u1, Tensor u2, Tensor scale1, "
      "Tensor shift1, Tensor weight1, int kernel_size, int dilation, int pad_mode) -> Tensor[]");
}
