// Small portability macros shared by lsa's C++ and CUDA sources.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LSA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LSA_HOST_DEVICE inline
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LSA_RESTRICT __restrict__
#else
#define LSA_RESTRICT
#endif
