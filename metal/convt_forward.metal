// Forward transposed convolution (spec §1.2), by phase decomposition: a threadgroup owns a tile
// of 64 destination pixels that share one stride phase (8x8, or 64x1 for one-row images), so every thread of the group
// visits exactly the taps that land on real source pixels, and 4 output channels. Weights are
// staged through threadgroup memory, 16 input channels at a time.
#include "convt_kernel.h"

template <typename TS, typename TD, typename Tile>
inline void convt_forward_impl(device const TS* src, device TD* dst, device const float* weights,
                               device const float* bias, device const float* slopes,
                               constant ConvtParams& p, uint3 tg, uint3 t, uint3 tpg,
                               Tile wtile) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, kh = fc_kernel_h;
    const int ig = p.in_per_group, og = p.out_per_group;
    const int oc_blocks = (og + CONVT_CH_BLOCK - 1) / CONVT_CH_BLOCK;
    // Only phases that reach the clip get threadgroups: a huge stride makes no empty ones.
    const int nx = int(convt_phases(sx, p.clip_w)), ny = int(convt_phases(sy, p.clip_h));
    const uint phases = uint(nx) * uint(ny);
    uint z = tg.z;
    const int phase = int(z % phases);
    z /= phases;
    const int ob = int(z % uint(oc_blocks));
    z /= uint(oc_blocks);
    const int g = int(z % uint(p.groups));
    const long n = long(z / uint(p.groups));
    const int py = phase / nx, px = phase % nx;
    const long j = long(tg.y) * tpg.y + t.y, i = long(tg.x) * tpg.x + t.x;
    const long yy = py + long(sy) * j, xx = px + long(sx) * i;
    const bool inside = yy < p.clip_h && xx < p.clip_w;
    const int lid = int(t.y * tpg.x + t.x);  // tpg.x * tpg.y == CONVT_THREADS
    const int oc0 = ob * CONVT_CH_BLOCK;
    const long src_img = p.src_base + n * p.src_stride_n + long(g) * ig * p.src_stride_c;

    float acc[CONVT_CH_BLOCK];
    for (int o = 0; o < CONVT_CH_BLOCK; ++o) {
        const float b = (fc_has_bias && oc0 + o < og) ? bias[g * og + oc0 + o] : 0.0f;
        acc[o] = fc_half_acc ? float(half(b)) : b;
    }
    for (int ky = 0; ky < kh; ++ky) {
        const long ey0 = long(p.first_tap_y) + py + long(fc_dilation_y) * ky;
        if (ey0 - convt_floor_div(ey0, sy) * sy != 0) continue;  // tap misses this phase's rows
        const long iy = convt_floor_div(ey0, sy) + j;
        for (int kx = 0; kx < kw; ++kx) {
            const long ex0 = long(p.first_tap_x) + px + long(fc_dilation_x) * kx;
            if (ex0 - convt_floor_div(ex0, sx) * sx != 0) continue;
            const long ix = convt_floor_div(ex0, sx) + i;
            const bool valid = inside && iy >= 0 && iy < p.src_h && ix >= 0 && ix < p.src_w;
            const long src_px = src_img + iy * p.src_stride_h + ix * p.src_stride_w;
            for (int c0 = 0; c0 < ig; c0 += CONVT_K_CHUNK) {
                const int wo = lid / CONVT_K_CHUNK, wc = lid % CONVT_K_CHUNK;
                wtile[lid] = (oc0 + wo < og && c0 + wc < ig)
                                 ? weights[((long(g * og + oc0 + wo) * kh + ky) * kw + kx) * ig + c0 + wc]
                                 : 0.0f;
                threadgroup_barrier(mem_flags::mem_threadgroup);
                if (valid) {
                    const int cn = min(CONVT_K_CHUNK, ig - c0);
                    for (int c = 0; c < cn; ++c) {
                        const float x = float(src[src_px + long(c0 + c) * p.src_stride_c]);
                        for (int o = 0; o < CONVT_CH_BLOCK; ++o) {
                            const float w = wtile[o * CONVT_K_CHUNK + c];
                            acc[o] = fc_half_acc ? float(half(fma(x, w, acc[o]))) : fma(x, w, acc[o]);
                        }
                    }
                }
                threadgroup_barrier(mem_flags::mem_threadgroup);
            }
        }
    }
    if (!inside) return;
    const long dst_px = p.dst_base + n * p.dst_stride_n + (p.clip_y + yy) * p.dst_stride_h +
                        (p.clip_x + xx) * p.dst_stride_w;
    for (int o = 0; o < CONVT_CH_BLOCK; ++o) {
        const int oc = g * og + oc0 + o;
        if (oc0 + o >= og) break;
        const float slope = fc_neuron == CONVT_NEURON_PRELU ? slopes[oc] : 0.0f;
        dst[dst_px + long(oc) * p.dst_stride_c] =
            TD(convt_neuron(fc_neuron, acc[o], p.neuron_a, p.neuron_b, p.neuron_c, slope));
    }
}

#define CONVT_FORWARD_ENTRY(NAME, TS, TD)                                                     \
    kernel void NAME(device const TS* src [[buffer(0)]], device TD* dst [[buffer(1)]],         \
                     device const float* weights [[buffer(2)]],                                 \
                     device const float* bias [[buffer(3)]],                                    \
                     device const float* slopes [[buffer(4)]],                                  \
                     constant ConvtParams& p [[buffer(5)]],                                     \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint3 t [[thread_position_in_threadgroup]],                                \
                     uint3 tpg [[threads_per_threadgroup]]) {                                   \
        threadgroup float wtile[CONVT_THREADS];                                                 \
        convt_forward_impl<TS, TD>(src, dst, weights, bias, slopes, p, tg, t, tpg, wtile);      \
    }

CONVT_FORWARD_ENTRY(convt_forward_f32_f32, float, float)
CONVT_FORWARD_ENTRY(convt_forward_f32_f16, float, half)
CONVT_FORWARD_ENTRY(convt_forward_f16_f32, half, float)
CONVT_FORWARD_ENTRY(convt_forward_f16_f16, half, half)
