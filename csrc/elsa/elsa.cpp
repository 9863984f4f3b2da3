// ELSA op schemas and the input checks shared by the CPU and CUDA kernels.
#include "elsa.h"

#include <ATen/ExpandUtils.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "lsa/checks.h"

namespace lsa {
namespace elsa {

Inputs check_inputs(const char* fn, const at::Tensor& features, const at::Tensor& attn,
                    const at::Tensor& ghost_mul, const at::Tensor& ghost_add, int64_t kernel_size,
                    int64_t stride, int64_t dilation) {
  TORCH_CHECK_VALUE(kernel_size >= 1 && kernel_size % 2 == 1, fn,
                    ": kernel_size must be a positive odd int, got ", kernel_size);
  TORCH_CHECK_VALUE(stride >= 1, fn, ": stride must be >= 1, got ", stride);
  TORCH_CHECK_VALUE(dilation >= 1, fn, ": dilation must be >= 1, got ", dilation);
  check_float_tensor(fn, "features", features, 4);
  check_float_tensor(fn, "attn", attn, 4);
  TORCH_CHECK_VALUE(ghost_mul.defined() && ghost_add.defined(), fn, ": the ghosts must be defined");
  check_same_device_dtype(fn, "features", features, "attn", attn);
  check_same_device_dtype(fn, "features", features, "ghost_mul", ghost_mul);
  check_same_device_dtype(fn, "features", features, "ghost_add", ghost_add);
  Geometry g;
  g.nb = features.size(0);
  g.cg = features.size(1);
  g.h = features.size(2);
  g.w = features.size(3);
  g.k = kernel_size;
  g.s = stride;
  g.d = dilation;
  g.ho = g.h / stride;
  g.wo = g.w / stride;
  TORCH_CHECK_VALUE(attn.sizes() == at::IntArrayRef({g.nb, g.k * g.k, g.ho, g.wo}), fn,
                    ": attn must have shape (Nb, k*k, H/s, W/s) = (", g.nb, ", ", g.k * g.k, ", ",
                    g.ho, ", ", g.wo, "), got ", attn.sizes());
  const std::array<int64_t, 4> ghost{g.nb, g.cg, g.k, g.k};
  TORCH_CHECK_VALUE(at::is_expandable_to(ghost_mul.sizes(), ghost), fn, ": ghost_mul of shape ",
                    ghost_mul.sizes(),
                    " is not broadcastable to (Nb, Cg, k, k) = ", at::IntArrayRef(ghost));
  TORCH_CHECK_VALUE(at::is_expandable_to(ghost_add.sizes(), ghost), fn, ": ghost_add of shape ",
                    ghost_add.sizes(),
                    " is not broadcastable to (Nb, Cg, k, k) = ", at::IntArrayRef(ghost));
  return {g, features.contiguous(), attn.contiguous(), ghost_mul.expand(ghost).contiguous(),
          ghost_add.expand(ghost).contiguous()};
}

void check_grad(const char* fn, const at::Tensor& grad_out, const at::Tensor& features,
                const Geometry& g) {
  check_float_tensor(fn, "grad_out", grad_out, 4);
  check_same_device_dtype(fn, "features", features, "grad_out", grad_out);
  TORCH_CHECK_VALUE(grad_out.sizes() == at::IntArrayRef({g.nb, g.cg, g.ho, g.wo}), fn,
                    ": grad_out must have the output shape (", g.nb, ", ", g.cg, ", ", g.ho, ", ",
                    g.wo, "), got ", grad_out.sizes());
}

Grads allocate_grads(const Geometry& g, const at::TensorOptions& opts, std::array<bool, 4> mask,
                     bool* empty_output) {
  *empty_output = g.nb * g.cg * g.ho * g.wo == 0;  // no output: every gradient is zero
  const auto make = [&](bool need, at::IntArrayRef size) {
    if (!need) return at::empty({0}, opts);
    return *empty_output ? at::zeros(size, opts) : at::empty(size, opts);
  };
  const bool need_md = mask[2] || mask[3];
  return {make(mask[0], {g.nb, g.cg, g.h, g.w}), make(mask[1], {g.nb, g.taps(), g.ho, g.wo}),
          make(need_md, {g.nb, g.cg, g.k, g.k}), make(need_md, {g.nb, g.cg, g.k, g.k})};
}

}  // namespace elsa
}  // namespace lsa

TORCH_LIBRARY_FRAGMENT(lsa, m) {
  // ghost_mul and ghost_add may be any shape broadcastable to (Nb, Cg, k, k).
  m.def(
      "elsa_forward(Tensor features, Tensor attn, Tensor ghost_mul, Tensor ghost_add, "
      "int kernel_size, int stride, int dilation) -> Tensor");
  // Gradients of (features, attn, ghost_mul, ghost_add), the ghost ones of shape
  // (Nb, Cg, k, k); output_mask selects which are computed (the others are returned as
  // zero-size tensors).
  m.def(
      "elsa_backward(Tensor grad_out, Tensor features, Tensor attn, Tensor ghost_mul, "
      "Tensor ghost_add, int kernel_size, int stride, int dilation, bool[4] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // The same with the softmax over the k*k taps fused in: `logits` (Nb, k*k, H/s, W/s) are
  // turned into attn = softmax(logits, dim=1), which is returned with the output (the
  // backward reads it); the backward takes that attn and returns the logits' gradient
  // in place of attn's.
  m.def(
      "elsa_softmax_forward(Tensor features, Tensor logits, Tensor ghost_mul, Tensor ghost_add, "
      "int kernel_size, int stride, int dilation) -> (Tensor, Tensor)");
  m.def(
      "elsa_softmax_backward(Tensor grad_out, Tensor features, Tensor attn, Tensor ghost_mul, "
      "Tensor ghost_add, int kernel_size, int stride, int dilation, bool[4] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}
