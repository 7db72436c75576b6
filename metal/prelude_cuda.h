// CUDA prelude: compiles MSL kernels with nvcc (cpp/src/cuda). MSL's address-space words become
// macros, which would break CUDA's own __device__/__shared__/__constant__ (they expand through
// `device`, `shared` and `constant`), so those are redefined after the CUDA headers. Names CUDA
// already owns (min, max) are renamed by macro to functions that match prelude_host.h, so the
// simulation and the GPU compute the same thing.
#ifndef CONVT_PRELUDE_CUDA_H
#define CONVT_PRELUDE_CUDA_H

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#undef __device__
#undef __shared__
#undef __constant__
#define __device__ __attribute__((__device__))
#define __shared__ __attribute__((__shared__))
#define __constant__ __attribute__((__constant__))

// MSL entry points become device functions; tools/gen_glue.py --target cuda wraps each in a
// __global__ function that maps the built-in attributes onto blockIdx/threadIdx.
#define kernel static __device__ __forceinline__
#define device
#define constant const
#define threadgroup __shared__
#define thread
#define inline __device__ inline

typedef unsigned int uint;
typedef unsigned short ushort;
typedef unsigned char uchar;
// half: cuda_fp16.h's __half (float conversions both ways, as in MSL).

enum class mem_flags { mem_none, mem_device, mem_threadgroup };

template <typename T>
__device__ __forceinline__ T convt_min(T a, T b) {
    return a < b ? a : b;
}
template <typename T>
__device__ __forceinline__ T convt_max(T a, T b) {
    return a > b ? a : b;
}
template <typename T>
__device__ __forceinline__ T convt_clamp(T x, T lo, T hi) {
    return convt_min(convt_max(x, lo), hi);
}
#define min convt_min
#define max convt_max
#define clamp convt_clamp

#define threadgroup_barrier(flags) __syncthreads()

// SIMD-group = warp (32 lanes on both). MSL requires the whole SIMD-group to reach these, as the
// simulation checks, so the full mask is right.
template <typename T>
__device__ __forceinline__ T convt_simd_sum(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}
template <typename T>
__device__ __forceinline__ T convt_simd_max(T v) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const T o = __shfl_xor_sync(0xffffffffu, v, offset);
        v = v > o ? v : o;
    }
    return v;
}
#define simd_sum(x) convt_simd_sum(x)
#define simd_max(x) convt_simd_max(x)
#define simd_broadcast(x, lane) __shfl_sync(0xffffffffu, (x), (lane))

// Function constants are launch arguments here: the glue copies them into this block-shared
// table before calling the kernel, so reading one is a shared-memory load.
#define CONVT_FC_COUNT 16
static __shared__ int convt_fc_values[CONVT_FC_COUNT];
#define CONVT_FC(type, index) (static_cast<type>(convt_fc_values[index]))

#endif  // CONVT_PRELUDE_CUDA_H
