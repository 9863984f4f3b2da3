// dtype dispatch used by lsa's kernels: fp32, fp64, fp16 and bf16.
#pragma once

#include <ATen/Dispatch.h>

// Calls the lambda with `scalar_t` bound to float, double, at::Half or at::BFloat16.
// Kernels accumulate in `at::opmath_type<scalar_t>` (float for the 16-bit types).
#define LSA_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...)                                          \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, TYPE, NAME, \
                                  __VA_ARGS__)
