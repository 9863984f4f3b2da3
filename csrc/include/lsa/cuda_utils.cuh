// The CUDA launcher of lsa's kernels (see lsa/launch.h for the kernel convention).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <initializer_list>

#include "lsa/launch.h"

namespace lsa {
namespace cuda {

template <typename F>
__global__ void __launch_bounds__(kThreads) grid_kernel(const F f) {
  f(Thread{blockIdx.x, threadIdx.x, blockDim.x, gridDim.x});
}

// One block per item; F::partial fills slot `thread` of its shared rows, a fixed tree adds
// them (F::combine), thread 0 writes the block's result (F::finish). Deterministic.
template <typename F>
__global__ void __launch_bounds__(kThreads) block_reduce_kernel(const F f) {
  __shared__ typename F::acc_t smem[F::kRows][kThreads];
  const Thread t{blockIdx.x, threadIdx.x, blockDim.x, gridDim.x};
  f.partial(t, smem);
  __syncthreads();
  for (unsigned int half = kThreads / 2; half > 0; half /= 2) {
    if (t.thread < half) f.combine(t.thread, half, smem);
    __syncthreads();
  }
  if (t.thread == 0) f.finish(t.block, smem);
}

// Launches on the current stream; 32-bit indexing whenever the sizes allow it.
struct Launcher {
  bool index32(std::initializer_list<int64_t> numels) const { return fits_int32(numels); }

  template <typename F>
  void grid(int64_t total, const F& f) const {
    grid_kernel<<<num_blocks(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename F>
  void block_reduce(int64_t blocks, const F& f) const {
    block_reduce_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0,
                          c10::cuda::getCurrentCUDAStream()>>>(f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace cuda
}  // namespace lsa
