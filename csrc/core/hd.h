// Portability macros for code that is compiled both by the host compiler and by nvcc.
// Torch-free on purpose: these headers are unit-tested on the CPU by GoogleTest, and the
// very same source runs inside the CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define SENTRY_HD __host__ __device__
#define SENTRY_INLINE __forceinline__
#else
#define SENTRY_HD
#define SENTRY_INLINE inline __attribute__((always_inline))
#endif

#if defined(__CUDACC__) || defined(__clang__)
#define SENTRY_UNROLL _Pragma("unroll")
#else
#define SENTRY_UNROLL _Pragma("GCC unroll 16")
#endif
