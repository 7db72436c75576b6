// dX (spec §5.3): an ordinary strided convolution of dY with the same weights. A threadgroup
// owns a tile of 64 source pixels (8x8, or 64x1 for one-row images) and 4 input channels; weights go through threadgroup
// memory, 16 output channels at a time. `p` describes dX in the source role and dY in the
// destination role.
#include "convt_kernel.h"

template <typename TY, typename TX, typename Tile>
inline void convt_backward_data_impl(device const TY* dy, device TX* dx,
                                     device const float* weights, constant ConvtParams& p,
                                     uint3 tg, uint3 t, uint3 tpg, Tile wtile) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, kh = fc_kernel_h;
    const int ig = p.in_per_group, og = p.out_per_group;
    const int ic_blocks = (ig + CONVT_CH_BLOCK - 1) / CONVT_CH_BLOCK;
    uint z = tg.z;
    const int ib = int(z % uint(ic_blocks));
    z /= uint(ic_blocks);
    const int g = int(z % uint(p.groups));
    const long n = long(z / uint(p.groups));
    const long iy = long(tg.y) * tpg.y + t.y, ix = long(tg.x) * tpg.x + t.x;
    const bool inside = iy < p.src_h && ix < p.src_w;
    const int lid = int(t.y * tpg.x + t.x);  // tpg.x * tpg.y == CONVT_THREADS
    const int ic0 = ib * CONVT_CH_BLOCK;
    const long dy_img = p.dst_base + n * p.dst_stride_n + long(g) * og * p.dst_stride_c;

    float acc[CONVT_CH_BLOCK];
    for (int c = 0; c < CONVT_CH_BLOCK; ++c) acc[c] = 0.0f;
    for (int ky = 0; ky < kh; ++ky) {
        const long yy = iy * sy - p.first_tap_y - long(fc_dilation_y) * ky;
        for (int kx = 0; kx < kw; ++kx) {
            const long xx = ix * sx - p.first_tap_x - long(fc_dilation_x) * kx;
            const bool valid = inside && yy >= 0 && yy < p.clip_h && xx >= 0 && xx < p.clip_w;
            const long dy_px = dy_img + (p.clip_y + yy) * p.dst_stride_h + (p.clip_x + xx) * p.dst_stride_w;
            for (int o0 = 0; o0 < og; o0 += CONVT_K_CHUNK) {
                const int wo = lid / CONVT_CH_BLOCK, wc = lid % CONVT_CH_BLOCK;
                wtile[lid] = (o0 + wo < og && ic0 + wc < ig)
                                 ? weights[((long(g * og + o0 + wo) * kh + ky) * kw + kx) * ig + ic0 + wc]
                                 : 0.0f;
                threadgroup_barrier(mem_flags::mem_threadgroup);
                if (valid) {
                    const int on = min(CONVT_K_CHUNK, og - o0);
                    for (int o = 0; o < on; ++o) {
                        const float d = float(dy[dy_px + long(o0 + o) * p.dst_stride_c]);
                        for (int c = 0; c < CONVT_CH_BLOCK; ++c)
                            acc[c] = fma(d, wtile[o * CONVT_CH_BLOCK + c], acc[c]);
                    }
                }
                threadgroup_barrier(mem_flags::mem_threadgroup);
            }
        }
    }
    if (!inside) return;
    const long dx_px = p.src_base + n * p.src_stride_n + iy * p.src_stride_h + ix * p.src_stride_w;
    for (int c = 0; c < CONVT_CH_BLOCK; ++c) {
        if (ic0 + c >= ig) break;
        dx[dx_px + long(g * ig + ic0 + c) * p.src_stride_c] = TX(acc[c]);
    }
}

#define CONVT_BACKWARD_DATA_ENTRY(NAME, TY, TX)                                                 \
    kernel void NAME(device const TY* dy [[buffer(0)]], device TX* dx [[buffer(1)]],           \
                     device const float* weights [[buffer(2)]],                                 \
                     constant ConvtParams& p [[buffer(3)]],                                     \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint3 t [[thread_position_in_threadgroup]],                                \
                     uint3 tpg [[threads_per_threadgroup]]) {                                   \
        threadgroup float wtile[CONVT_THREADS];                                                 \
        convt_backward_data_impl<TY, TX>(dy, dx, weights, p, tg, t, tpg, wtile);                \
    }

CONVT_BACKWARD_DATA_ENTRY(convt_backward_data_f32_f32, float, float)
CONVT_BACKWARD_DATA_ENTRY(convt_backward_data_f32_f16, float, half)
CONVT_BACKWARD_DATA_ENTRY(convt_backward_data_f16_f32, half, float)
CONVT_BACKWARD_DATA_ENTRY(convt_backward_data_f16_f16, half, half)
