// Launch geometry shared by the CUDA kernels and their CPU grid emulation.
//
// A kernel is a functor whose `LSA_HOST_DEVICE void operator()(const Thread&) const` is the
// per-thread body: the .cu file runs it on the GPU (lsa/cuda_utils.cuh), the emulation build
// runs exactly the same body on the CPU for every (block, thread) of the grid
// (lsa/emulate.h), so the index maps and accumulations of the CUDA code are tested without
// a GPU. Nothing here needs CUDA.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>

#include "lsa/macros.h"

namespace lsa {

constexpr int kThreads = 256;                     // threads per block of every lsa kernel
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // grid-stride loops cover the rest

// The CUDA built-ins of one thread (blockIdx.x, threadIdx.x, blockDim.x, gridDim.x).
struct Thread {
  unsigned int block, thread, block_dim, grid_dim;
};

// Blocks of kThreads for `n` work items, at most `max_blocks` (>= 1).
inline unsigned int num_blocks(int64_t n, int64_t max_blocks = kMaxBlocks) {
  return static_cast<unsigned int>(
      std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, max_blocks)));
}

// True if every tensor is small enough for 32-bit indexing in grid-stride loops
// (numel + the grid size must stay below INT_MAX).
inline bool fits_int32(std::initializer_list<int64_t> numels) {
  const int64_t limit = INT_MAX - kMaxBlocks * kThreads;
  for (int64_t n : numels)
    if (n > limit) return false;
  return true;
}

}  // namespace lsa

// Grid-stride loop of thread `t` over [0, n) with an index of type `index_t`.
#define LSA_KERNEL_LOOP(t, i, n)                                                       \
  for (index_t i = static_cast<index_t>(t.block) * static_cast<index_t>(t.block_dim) + \
                   static_cast<index_t>(t.thread);                                     \
       i < (n); i += static_cast<index_t>(t.block_dim) * static_cast<index_t>(t.grid_dim))

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
