// CPU grid emulation of lsa's CUDA kernels: runs the very per-thread bodies of the .cu
// files (the functors of csrc/<op>/<op>_kernels.h) for every block and thread of the
// launch grid, sequentially, with the same block/thread counts and grid-stride loops.
// Exposed as the test-only ops lsa::_emulate_cuda_<op>_*; see docs/ops.md.
#pragma once

#include <c10/util/Exception.h>

#include <initializer_list>
#include <vector>

#include "lsa/launch.h"

namespace lsa {
namespace emulate {

// `index_bits` (32 or 64) forces the index type the CUDA dispatch would pick by size;
// `max_blocks` caps the grid (1 makes every thread loop over many items).
struct Launcher {
  int64_t index_bits = 64;
  int64_t max_blocks = kMaxBlocks;

  Launcher(int64_t bits, int64_t blocks) : index_bits(bits), max_blocks(blocks) {
    TORCH_CHECK(bits == 32 || bits == 64, "emulate_cuda: index_bits must be 32 or 64, got ", bits);
    TORCH_CHECK(blocks >= 1, "emulate_cuda: max_blocks must be >= 1, got ", blocks);
  }

  bool index32(std::initializer_list<int64_t> numels) const {
    TORCH_CHECK(index_bits == 64 || fits_int32(numels),
                "emulate_cuda: the tensors are too large for 32-bit indexing");
    return index_bits == 32;
  }

  template <typename F>
  void grid(int64_t total, const F& f) const {
    const unsigned int blocks = num_blocks(total, max_blocks);
    for (unsigned int b = 0; b < blocks; ++b)
      for (unsigned int t = 0; t < kThreads; ++t) f(Thread{b, t, kThreads, blocks});
  }

  // The schedule of cuda::block_reduce_kernel, barrier by barrier.
  template <typename F>
  void block_reduce(int64_t blocks, const F& f) const {
    std::vector<typename F::acc_t> smem(F::kRows * kThreads);
    auto* rows = reinterpret_cast<typename F::acc_t(*)[kThreads]>(smem.data());
    const unsigned int grid = static_cast<unsigned int>(blocks);
    for (unsigned int b = 0; b < grid; ++b) {
      for (unsigned int t = 0; t < kThreads; ++t) f.partial(Thread{b, t, kThreads, grid}, rows);
      for (unsigned int half = kThreads / 2; half > 0; half /= 2)
        for (unsigned int t = 0; t < half; ++t) f.combine(t, half, rows);
      f.finish(b, rows);
    }
  }
};

}  // namespace emulate
}  // namespace lsa
