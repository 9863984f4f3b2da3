// Input checks shared by the ops' C++ entry points: the one home of every op check (the
// Python wrappers only normalise arguments). Messages name the values; bad values raise
// ValueError in Python (TORCH_CHECK_VALUE), bad dtypes TypeError (TORCH_CHECK_TYPE).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace lsa {

// `t` is a defined floating tensor with `ndim` dimensions.
inline void check_float_tensor(const char* fn, const char* name, const at::Tensor& t,
                               int64_t ndim) {
  TORCH_CHECK_VALUE(t.defined(), fn, ": ", name, " is undefined");
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), fn, ": ", name,
                   " must be a floating tensor (float32/float64/float16/bfloat16), got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == ndim, fn, ": ", name, " must be ", ndim, "-D, got shape ",
                    t.sizes());
}

// `b` is on the device and of the dtype of `a`.
inline void check_same_device_dtype(const char* fn, const char* name_a, const at::Tensor& a,
                                    const char* name_b, const at::Tensor& b) {
  TORCH_CHECK(a.device() == b.device(), fn, ": all inputs must be on one device, got ", name_a,
              " on ", a.device(), " and ", name_b, " on ", b.device());
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), fn, ": all inputs must have one dtype, got ",
                   name_a, " ", a.scalar_type(), " and ", name_b, " ", b.scalar_type());
}

}  // namespace lsa
