// Shared by every convt kernel: target selection, function constants, element access, neurons.
// Valid MSL (Apple's compiler), and C++ through prelude_host.h (simulation) or the CUDA prelude.
#ifndef CONVT_KERNEL_H
#define CONVT_KERNEL_H

#if defined(__METAL_VERSION__)
#include <metal_stdlib>
using namespace metal;
#endif

#include "convt_params.h"

// Function constants: the pipeline cache key on Metal, runtime values elsewhere.
#if defined(__METAL_VERSION__)
constant int fc_neuron [[function_constant(0)]];
constant bool fc_has_bias [[function_constant(1)]];
constant bool fc_half_acc [[function_constant(2)]];
constant int fc_kernel_w [[function_constant(3)]];
constant int fc_kernel_h [[function_constant(4)]];
constant int fc_stride_x [[function_constant(5)]];
constant int fc_stride_y [[function_constant(6)]];
constant int fc_dilation_x [[function_constant(7)]];
constant int fc_dilation_y [[function_constant(8)]];
constant bool fc_accumulate [[function_constant(9)]];  // gradients: add to what is there
constant int fc_splits [[function_constant(10)]];      // gradients: K slices summed in order
constant int fc_bias_splits [[function_constant(11)]];  // dB: its own slices
#else
#define fc_neuron CONVT_FC(int, 0)
#define fc_has_bias CONVT_FC(bool, 1)
#define fc_half_acc CONVT_FC(bool, 2)
#define fc_kernel_w CONVT_FC(int, 3)
#define fc_kernel_h CONVT_FC(int, 4)
#define fc_stride_x CONVT_FC(int, 5)
#define fc_stride_y CONVT_FC(int, 6)
#define fc_dilation_x CONVT_FC(int, 7)
#define fc_dilation_y CONVT_FC(int, 8)
#define fc_accumulate CONVT_FC(bool, 9)
#define fc_splits CONVT_FC(int, 10)
#define fc_bias_splits CONVT_FC(int, 11)
#endif

// Threadgroup shape shared by host code and kernels: 64 pixels (8x8, or 64x1 when the image has
// one row), 4 channels per thread.
#define CONVT_TILE 8
#define CONVT_THREADS (CONVT_TILE * CONVT_TILE)
#define CONVT_CH_BLOCK 4
#define CONVT_K_CHUNK 16
#define CONVT_SIMD 32

// nvcc unrolls loops with a run-time trip count 4x on its own, which can cost more registers
// than it saves (convt_backward_data_kxlanes: 114 -> 167, halving its threadgroups per SM).
#if defined(__CUDACC__)
#define CONVT_NO_UNROLL _Pragma("unroll 1")
#else
#define CONVT_NO_UNROLL
#endif

// A hint that the memory at p is read soon: CUDA prefetches its line into L1 (no register, no
// wait); MSL has no such instruction, so elsewhere it does nothing (CONVT_HAS_PREFETCH lets
// kernels skip the address maths).
#if defined(__CUDACC__)
#define CONVT_HAS_PREFETCH 1
template <typename T>
__device__ __forceinline__ void convt_prefetch(const T* p) {
    asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
}
#else
#define CONVT_HAS_PREFETCH 0
template <typename T>
inline void convt_prefetch(device const T*) {}
#endif

// Neuron codes (convt::NeuronType).
#define CONVT_NEURON_NONE 0
#define CONVT_NEURON_RELU 1
#define CONVT_NEURON_LINEAR 2
#define CONVT_NEURON_SIGMOID 3
#define CONVT_NEURON_HARD_SIGMOID 4
#define CONVT_NEURON_TANH 5
#define CONVT_NEURON_ABS 6
#define CONVT_NEURON_SOFTPLUS 7
#define CONVT_NEURON_SOFTSIGN 8
#define CONVT_NEURON_ELU 9
#define CONVT_NEURON_PRELU 10
#define CONVT_NEURON_RELUN 11
#define CONVT_NEURON_POWER 12
#define CONVT_NEURON_EXPONENTIAL 13
#define CONVT_NEURON_LOGARITHM 14
#define CONVT_NEURON_GELU 15

// erf is not in the MSL standard library: Abramowitz & Stegun 7.1.26 refined by one Newton
// step is overkill for fp32 outputs; 7.1.28 has |error| <= 3e-7.
inline float convt_erf(float x) {
    const float ax = fabs(x);
    const float t = 1.0f + ax * (0.0705230784f + ax * (0.0422820123f + ax * (0.0092705272f +
                    ax * (0.0001520143f + ax * (0.0002765672f + ax * 0.0000430638f)))));
    float t2 = t * t;
    float t4 = t2 * t2;
    float t8 = t4 * t4;
    const float r = 1.0f - 1.0f / (t8 * t8);
    return x < 0.0f ? -r : r;
}

// x clamped to [0, 1]; a NaN x is returned unchanged.
inline float convt_clamp01(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
// min(x, hi) that returns a NaN x unchanged.
inline float convt_min_keep_nan(float x, float hi) { return x > hi ? hi : x; }

inline float convt_neuron(int type, float v, float a, float b, float c, float slope) {
    switch (type) {
        case CONVT_NEURON_RELU: return v >= 0.0f ? v : a * v;
        case CONVT_NEURON_LINEAR: return a * v + b;
        case CONVT_NEURON_SIGMOID: return 1.0f / (1.0f + exp(-v));
        // Comparisons instead of clamp/min: MSL leaves min/clamp of a NaN undefined, and NaN must
        // stay NaN (the reference's np.clip/np.minimum propagate it).
        case CONVT_NEURON_HARD_SIGMOID: return convt_clamp01(a * v + b);
        case CONVT_NEURON_TANH: return a * tanh(b * v);
        case CONVT_NEURON_ABS: return fabs(v);
        case CONVT_NEURON_SOFTPLUS: return a * log(1.0f + exp(b * v));
        case CONVT_NEURON_SOFTSIGN: return v / (1.0f + fabs(v));
        case CONVT_NEURON_ELU: return v >= 0.0f ? v : a * (exp(v) - 1.0f);
        case CONVT_NEURON_PRELU: return v >= 0.0f ? v : slope * v;
        case CONVT_NEURON_RELUN: return convt_min_keep_nan(v >= 0.0f ? v : a * v, b);
        case CONVT_NEURON_POWER: return pow(a * v + b, c);
        case CONVT_NEURON_EXPONENTIAL: return c == -1.0f ? exp(a * v + b) : pow(c, a * v + b);
        case CONVT_NEURON_LOGARITHM:
            return c == -1.0f ? log(a * v + b) : log(a * v + b) / log(c);
        case CONVT_NEURON_GELU: return 0.5f * v * (1.0f + convt_erf(v * 0.70710678118654752f));
        default: return v;
    }
}

// Quotient of a >= 0 by b > 0: a 32-bit division when both fit (64-bit division is a long
// instruction sequence on GPUs, and these sit in inner loops).
inline long convt_div(long a, long b) {
    return ((a | b) >> 31) == 0 ? long(uint(a) / uint(b)) : a / b;
}

// Stride phases of an axis that land inside a clip of `size` pixels: min(stride, size).
inline long convt_phases(long stride, long size) { return stride < size ? stride : size; }

// Floor division for a positive divisor.
inline long convt_floor_div(long a, long b) {
    return a >= 0 ? convt_div(a, b) : -convt_div(-a + b - 1, b);
}

// Smallest q >= 0 such that e + q is a non-negative multiple of s: the first destination
// row/column (relative to the clip) that a tap whose first expanded coordinate is e reaches.
inline long convt_first_phase(long e, long s) {
    const long start = e < 0 ? -e : 0;
    const long r = (e + start) % s;
    return start + (r != 0 ? s - r : 0);
}

// 32-bit floor division for a positive divisor (indices of one image fit in 32 bits).
inline int convt_floor_div32(int a, int b) { return a >= 0 ? a / b : -((b - 1 - a) / b); }

// The taps of one axis that land on real source pixels for a destination coordinate whose
// first tap sits at expanded coordinate e0: taps first, first + step, ... (first >= k: none)
// read source coordinates src, src + src_step, ... Found once per thread, so the tap loops do
// no divisions and test no phases (64-bit index maths there made the depthwise kernel
// instruction-bound).
struct ConvtTaps {
    int first, src, step, src_step;
};

inline ConvtTaps convt_taps(int e0, int s, int d, int k) {
    const int dq = d / s, dr = d - dq * s;  // d = dq * s + dr
    int step = 1;                           // smallest step with step * d a multiple of s
    for (int r = dr; r != 0; ++step) r = r + dr >= s ? r + dr - s : r + dr;
    ConvtTaps t;
    t.step = step;
    t.src_step = (step * d) / s;
    int q = convt_floor_div32(e0, s), r = e0 - q * s;  // e0 + d * first = q * s + r
    int first = 0;
    while (r != 0 && first < step) {
        r += dr;
        q += dq;
        if (r >= s) {
            r -= s;
            ++q;
        }
        ++first;
    }
    t.first = r == 0 ? first : k;
    t.src = q;
    return t;
}

#endif  // CONVT_KERNEL_H
