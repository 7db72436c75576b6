// The one argument of every generated CUDA kernel (tools/gen_glue.py --target cuda): buffer
// pointers by [[buffer(n)]] index, function constants, the set-bytes argument (ConvtParams), and
// the threadgroup range of this launch (grids larger than CUDA's y/z limits go out in chunks).
// Plain C++: included by the backend (host compiler) and by the generated .cu (nvcc).
#pragma once

#include <stdint.h>

#define CONVT_CUDA_MAX_BUFFERS 8
#define CONVT_CUDA_MAX_CONSTANTS 16
#define CONVT_CUDA_BYTES 256

struct ConvtCudaLaunch {
    const void* buffers[CONVT_CUDA_MAX_BUFFERS];
    int32_t constants[CONVT_CUDA_MAX_CONSTANTS];
    uint32_t group_offset[3];  // added to blockIdx: threadgroup_position_in_grid
    uint32_t grid[3];          // threadgroups_per_grid of the whole dispatch
    alignas(16) unsigned char bytes[CONVT_CUDA_BYTES];  // the [[buffer(n)]] reference argument
};

/// The __global__ function for an MSL entry point, or null (defined in the generated glue).
const void* convt_cuda_find_kernel(const char* name);
