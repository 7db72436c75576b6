// dW and dB (spec §5.3) without atomics: one SIMD-group owns one weight (or bias) element.
// Lane l sums the destination pixels l, l + 32, ... of every image in a fixed order, then the
// lanes combine with simd_sum, so results are reproducible run to run. `p` describes X in the
// source role and dY in the destination role. fc_accumulate adds to the buffer (batches).
#include "convt_kernel.h"

template <typename TX, typename TY>
inline void convt_backward_weights_impl(device const TX* x, device const TY* dy, device float* dw,
                                        constant ConvtParams& p, uint3 tg, uint lane) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, kh = fc_kernel_h;
    const int ig = p.in_per_group, og = p.out_per_group;
    const long taps = long(kh) * kw;
    const long element = long(tg.x);  // OHWI index
    const int icl = int(element % ig);
    const long tap = (element / ig) % taps;
    const int oc = int(element / (long(ig) * taps));
    const int ky = int(tap / kw), kx = int(tap % kw), g = oc / og;
    // Destination rows/columns this tap reaches: a phase of the stride.
    const long ey = long(p.first_tap_y) + long(fc_dilation_y) * ky;
    const long ex = long(p.first_tap_x) + long(fc_dilation_x) * kx;
    const long yy0 = convt_first_phase(ey, sy), xx0 = convt_first_phase(ex, sx);
    const long rows = yy0 < p.clip_h ? (p.clip_h - yy0 + sy - 1) / sy : 0;
    const long cols = xx0 < p.clip_w ? (p.clip_w - xx0 + sx - 1) / sx : 0;
    const long per_image = rows * cols;
    float sum = 0.0f;
    for (long n = 0; n < p.num_images; ++n) {
        for (long q = lane; q < per_image; q += CONVT_SIMD) {
            const long yy = yy0 + (q / cols) * sy, xx = xx0 + (q % cols) * sx;
            const long iy = (ey + yy) / sy, ix = (ex + xx) / sx;
            if (iy >= p.src_h || ix >= p.src_w) continue;
            const float d = float(dy[p.dst_base + n * p.dst_stride_n + long(oc) * p.dst_stride_c +
                                     (p.clip_y + yy) * p.dst_stride_h + (p.clip_x + xx) * p.dst_stride_w]);
            const float v = float(x[p.src_base + n * p.src_stride_n + long(g * ig + icl) * p.src_stride_c +
                                    iy * p.src_stride_h + ix * p.src_stride_w]);
            sum = fma(d, v, sum);
        }
    }
    sum = simd_sum(sum);
    if (lane == 0) dw[element] = fc_accumulate ? dw[element] + sum : sum;
}

template <typename TY>
inline void convt_backward_bias_impl(device const TY* dy, device float* db, constant ConvtParams& p,
                                     uint3 tg, uint lane) {
    const long oc = long(tg.x);
    const long per_image = long(p.clip_h) * p.clip_w;
    float sum = 0.0f;
    for (long n = 0; n < p.num_images; ++n)
        for (long q = lane; q < per_image; q += CONVT_SIMD)
            sum += float(dy[p.dst_base + n * p.dst_stride_n + oc * p.dst_stride_c +
                            (p.clip_y + q / p.clip_w) * p.dst_stride_h +
                            (p.clip_x + q % p.clip_w) * p.dst_stride_w]);
    sum = simd_sum(sum);
    if (lane == 0) db[oc] = fc_accumulate ? db[oc] + sum : sum;
}

#define CONVT_BACKWARD_WEIGHTS_ENTRY(NAME, TX, TY)                                              \
    kernel void NAME(device const TX* x [[buffer(0)]], device const TY* dy [[buffer(1)]],      \
                     device float* dw [[buffer(2)]], constant ConvtParams& p [[buffer(3)]],     \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint lane [[thread_index_in_simdgroup]]) {                                 \
        convt_backward_weights_impl<TX, TY>(x, dy, dw, p, tg, lane);                            \
    }

#define CONVT_BACKWARD_BIAS_ENTRY(NAME, TY)                                                     \
    kernel void NAME(device const TY* dy [[buffer(0)]], device float* db [[buffer(1)]],        \
                     constant ConvtParams& p [[buffer(2)]],                                     \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint lane [[thread_index_in_simdgroup]]) {                                 \
        convt_backward_bias_impl<TY>(dy, db, p, tg, lane);                                      \
    }

CONVT_BACKWARD_WEIGHTS_ENTRY(convt_backward_weights_f32_f32, float, float)
CONVT_BACKWARD_WEIGHTS_ENTRY(convt_backward_weights_f32_f16, float, half)
CONVT_BACKWARD_WEIGHTS_ENTRY(convt_backward_weights_f16_f32, half, float)
CONVT_BACKWARD_WEIGHTS_ENTRY(convt_backward_weights_f16_f16, half, half)
CONVT_BACKWARD_BIAS_ENTRY(convt_backward_bias_f32, float)
CONVT_BACKWARD_BIAS_ENTRY(convt_backward_bias_f16, half)
