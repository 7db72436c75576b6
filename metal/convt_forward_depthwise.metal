// Forward transposed convolution for depthwise layers (one input and one output channel per
// group): a thread per destination column and CONVT_DW_ROWS rows of one phase, 64 columns per
// threadgroup, weights read directly (a few taps, shared by the whole group through the cache). No threadgroup memory and
// no barriers: the shape is bound by memory traffic, not arithmetic, once the index maths is
// 32-bit and visits only the taps that land (convt_taps). Same tap order and rounding as
// convt_forward.metal, so results match it exactly.
#include "convt_kernel.h"

#define CONVT_DW_ROWS 4  // rows a thread: the tap search is paid once for all of them

template <typename TS, typename TD>
inline void convt_forward_depthwise_impl(device const TS* src, device TD* dst,
                                         device const float* weights, device const float* bias,
                                         device const float* slopes, constant ConvtParams& p,
                                         uint3 tg, uint3 t, uint3 tpg) {
    const int kw = fc_kernel_w, kh = fc_kernel_h, sy = fc_stride_y;
    const int xx = int(tg.x * tpg.x + t.x);
    if (xx >= p.clip_w) return;  // no barriers below
    // Threadgroup row tg.y: phase tg.y % ny of a band of sy * CONVT_DW_ROWS rows; this thread's
    // rows are yy, yy + sy, ...: the same taps, one source row further each.
    const int ny = int(convt_phases(sy, p.clip_h));
    const int yy = int(tg.y) / ny * sy * CONVT_DW_ROWS + int(tg.y) % ny;
    const int g = int(tg.z % uint(p.groups));
    const long n = long(tg.z / uint(p.groups));
    const long src_img = p.src_base + n * p.src_stride_n + long(g) * p.src_stride_c;
    const long dst_img = p.dst_base + n * p.dst_stride_n + long(g) * p.dst_stride_c +
                         long(p.clip_x + xx) * p.dst_stride_w;
    const float b = fc_has_bias ? bias[g] : 0.0f;
    const float slope = fc_neuron == CONVT_NEURON_PRELU ? slopes[g] : 0.0f;
    // Only the taps that land on source pixels: (kh / sy) x (kw / sx) of them, in order.
    const ConvtTaps ty = convt_taps(p.first_tap_y + yy, sy, fc_dilation_y, kh);
    const ConvtTaps tx = convt_taps(p.first_tap_x + xx, fc_stride_x, fc_dilation_x, kw);
    const int w0 = g * kh * kw;
    for (int r = 0; r < CONVT_DW_ROWS; ++r) {
        const int y = yy + r * sy;
        if (y >= p.clip_h) break;
        float acc = fc_half_acc ? float(half(b)) : b;
        for (int ky = ty.first, iy = ty.src + r; ky < kh && iy < p.src_h;
             ky += ty.step, iy += ty.src_step) {
            if (iy < 0) continue;
            const long row = src_img + long(iy) * p.src_stride_h;
            for (int kx = tx.first, ix = tx.src; kx < kw && ix < p.src_w;
                 kx += tx.step, ix += tx.src_step) {
                if (ix < 0) continue;
                const float v = float(src[row + long(ix) * p.src_stride_w]);
                const float w = weights[w0 + ky * kw + kx];
                acc = fc_half_acc ? float(half(fma(v, w, acc))) : fma(v, w, acc);
            }
        }
        dst[dst_img + long(p.clip_y + y) * p.dst_stride_h] =
            TD(convt_neuron(fc_neuron, acc, p.neuron_a, p.neuron_b, p.neuron_c, slope));
    }
}

#define CONVT_FORWARD_DEPTHWISE_ENTRY(NAME, TS, TD)                                            \
    kernel void NAME(device const TS* src [[buffer(0)]], device TD* dst [[buffer(1)]],         \
                     device const float* weights [[buffer(2)]],                                 \
                     device const float* bias [[buffer(3)]],                                    \
                     device const float* slopes [[buffer(4)]],                                  \
                     constant ConvtParams& p [[buffer(5)]],                                     \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint3 t [[thread_position_in_threadgroup]],                                \
                     uint3 tpg [[threads_per_threadgroup]]) {                                   \
        convt_forward_depthwise_impl<TS, TD>(src, dst, weights, bias, slopes, p, tg, t, tpg);   \
    }

CONVT_FORWARD_DEPTHWISE_ENTRY(convt_forward_depthwise_f32_f32, float, float)
CONVT_FORWARD_DEPTHWISE_ENTRY(convt_forward_depthwise_f32_f16, float, half)
CONVT_FORWARD_DEPTHWISE_ENTRY(convt_forward_depthwise_f16_f32, half, float)
CONVT_FORWARD_DEPTHWISE_ENTRY(convt_forward_depthwise_f16_f16, half, half)
