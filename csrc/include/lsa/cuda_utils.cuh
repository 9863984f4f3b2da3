// CUDA launch helpers shared by lsa's kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>

namespace lsa {
namespace cuda {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

inline unsigned int num_blocks(int64_t n) {
  return static_cast<unsigned int>(std::max<int64_t>(
      1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks)));
}

// True if every tensor is small enough for 32-bit indexing in grid-stride loops
// (numel + the grid size must stay below INT_MAX).
inline bool fits_int32(std::initializer_list<int64_t> numels) {
  const int64_t limit = INT_MAX - kMaxBlocks * kThreads;
  for (int64_t n : numels)
    if (n > limit) return false;
  return true;
}

}  // namespace cuda
}  // namespace lsa

// Grid-stride loop over [0, n) with an index of type `index_t`.
#define LSA_CUDA_KERNEL_LOOP(i, n)                                                      \
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<index_t>(blockDim.x) * gridDim.x)

// Runs the lambda-like block with `index_t` = int32_t if `small` else int64_t.
#define LSA_DISPATCH_INDEX_TYPE(small, ...) \
  [&] {                                     \
    if (small) {                            \
      using index_t = int32_t;              \
      return __VA_ARGS__();                 \
    } else {                                \
      using index_t = int64_t;              \
      return __VA_ARGS__();                 \
    }                                       \
  }()
