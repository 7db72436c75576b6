// Kernels for the simulation's own tests: one that uses barriers and SIMD-group operations
// correctly, and deliberately wrong ones whose misuse must be reported, not hang. Built into
// the simulation only, never into the shipped kernel library.
#include "convt_kernel.h"

kernel void convt_test_simd_and_barrier(device float* out [[buffer(0)]],
                                        uint tid [[thread_index_in_threadgroup]],
                                        uint lane [[thread_index_in_simdgroup]],
                                        uint3 tg [[threadgroup_position_in_grid]]) {
    threadgroup float shared[64];
    shared[tid] = float(tid);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    const float neighbour = shared[(tid + 1) % 64];
    const float lanes = simd_sum(float(lane));         // 0 + 1 + ... + 31 = 496
    const float first = simd_broadcast(neighbour, 0);  // lane 0's neighbour
    out[tg.x * 64 + tid] = neighbour + lanes * 1000.0f + first * 1000000.0f;
}

kernel void convt_test_barrier_after_return(device float* out [[buffer(0)]],
                                            uint tid [[thread_index_in_threadgroup]]) {
    if (tid == 3) return;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[tid] = 1.0f;
}

kernel void convt_test_divergent_barrier(device float* out [[buffer(0)]],
                                         uint tid [[thread_index_in_threadgroup]]) {
    if (tid % 2 == 0) {
        threadgroup_barrier(mem_flags::mem_threadgroup);
    } else {
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    out[tid] = 1.0f;
}

kernel void convt_test_partial_simd(device float* out [[buffer(0)]],
                                    uint lane [[thread_index_in_simdgroup]],
                                    uint tid [[thread_index_in_threadgroup]]) {
    float v = 1.0f;
    if (lane < 16) v = simd_sum(v);
    out[tid] = v;
}

kernel void convt_test_simd_broadcast_out_of_range(device float* out [[buffer(0)]],
                                                   uint tid [[thread_index_in_threadgroup]]) {
    out[tid] = simd_broadcast(1.0f, 40);
}
