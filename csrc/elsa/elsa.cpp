// ELSA op schemas and the input checks shared by the CPU and CUDA kernels.
#include "elsa.h"

#include <torch/library.h>

namespace lsa {
namespace elsa {

namespace {

void check_float(const char* fn, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), fn, ": ", name,
              " must be a floating tensor, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 4, fn, ": ", name, " must be 4-D, got shape ", t.sizes());
}

}  // namespace

Geometry check_inputs(const char* fn, const at::Tensor& features, const at::Tensor& attn,
                      const at::Tensor& ghost_mul, const at::Tensor& ghost_add,
                      int64_t kernel_size, int64_t stride, int64_t dilation) {
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, fn,
              ": kernel_size must be a positive odd int, got ", kernel_size);
  TORCH_CHECK(stride >= 1, fn, ": stride must be >= 1, got ", stride);
  TORCH_CHECK(dilation >= 1, fn, ": dilation must be >= 1, got ", dilation);
  check_float(fn, "features", features);
  check_float(fn, "attn", attn);
  check_float(fn, "ghost_mul", ghost_mul);
  check_float(fn, "ghost_add", ghost_add);
  for (const at::Tensor* t : {&attn, &ghost_mul, &ghost_add}) {
    TORCH_CHECK(t->device() == features.device(), fn,
                ": all inputs must be on one device, got features on ", features.device(),
                " and another input on ", t->device());
    TORCH_CHECK(t->scalar_type() == features.scalar_type(), fn,
                ": all inputs must have one dtype, got features ", features.scalar_type(),
                " and another input ", t->scalar_type());
  }
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
  TORCH_CHECK(attn.sizes() == at::IntArrayRef({g.nb, g.k * g.k, g.ho, g.wo}), fn,
              ": attn must have shape (Nb, k*k, H/s, W/s) = (", g.nb, ", ", g.k * g.k, ", ",
              g.ho, ", ", g.wo, "), got ", attn.sizes());
  const std::array<int64_t, 4> ghost{g.nb, g.cg, g.k, g.k};
  TORCH_CHECK(ghost_mul.sizes() == at::IntArrayRef(ghost), fn,
              ": ghost_mul must have shape (Nb, Cg, k, k) = ", at::IntArrayRef(ghost), ", got ",
              ghost_mul.sizes());
  TORCH_CHECK(ghost_add.sizes() == at::IntArrayRef(ghost), fn,
              ": ghost_add must have shape (Nb, Cg, k, k) = ", at::IntArrayRef(ghost), ", got ",
              ghost_add.sizes());
  return g;
}

void check_grad(const char* fn, const at::Tensor& grad_out, const at::Tensor& features,
                const Geometry& g) {
  check_float(fn, "grad_out", grad_out);
  TORCH_CHECK(grad_out.device() == features.device(), fn, ": grad_out is on ",
              grad_out.device(), " but features on ", features.device());
  TORCH_CHECK(grad_out.scalar_type() == features.scalar_type(), fn, ": grad_out has dtype ",
              grad_out.scalar_type(), " but features ", features.scalar_type());
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({g.nb, g.cg, g.ho, g.wo}), fn,
              ": grad_out must have the output shape (", g.nb, ", ", g.cg, ", ", g.ho, ", ", g.wo,
              "), got ", grad_out.sizes());
}

}  // namespace elsa
}  // namespace lsa

TORCH_LIBRARY_FRAGMENT(lsa, m) {
  m.def(
      "elsa_forward(Tensor features, Tensor attn, Tensor ghost_mul, Tensor ghost_add, "
      "int kernel_size, int stride, int dilation) -> Tensor");
  // Gradients of (features, attn, ghost_mul, ghost_add); output_mask selects which are
  // computed (the others are returned as zero-size tensors).
  m.def(
      "elsa_backward(Tensor grad_out, Tensor features, Tensor attn, Tensor ghost_mul, "
      "Tensor ghost_add, int kernel_size, int stride, int dilation, bool[4] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}
