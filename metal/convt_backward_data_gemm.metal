// dX (spec §5.3) for wide layers (in_per_group >= 32), as a GEMM: a 256-thread group computes 64
// source pixels (flattened over the image) x 64 input channels; K runs over the taps and the
// output channels, 8 channels of one tap a stage, with dY gathered and the weights staged in
// threadgroup memory; each thread keeps a 4x4 register tile. `p` describes dX in the source role
// and dY in the destination role.
#include "convt_kernel.h"

#define CONVT_DX_BM 64  // source pixels per threadgroup
#define CONVT_DX_BN 64  // input channels per threadgroup
#define CONVT_DX_BK 8   // output channels per stage
#define CONVT_DX_T 4    // register tile: 4 pixels x 4 channels
#define CONVT_DX_THREADS 256

template <typename TY, typename TX, typename Tile>
inline void convt_backward_data_gemm_impl(device const TY* dy, device TX* dx,
                                          device const float* weights, constant ConvtParams& p,
                                          uint3 tg, uint lid, Tile ytile, Tile wtile) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, kh = fc_kernel_h;
    const int ig = p.in_per_group, og = p.out_per_group;
    const long pixels = long(p.src_h) * p.src_w;
    const long q0 = long(tg.x) * CONVT_DX_BM;
    const int c0 = int(tg.y) * CONVT_DX_BN;
    const int g = int(tg.z % uint(p.groups));
    const long n = long(tg.z / uint(p.groups));
    const long taps = long(kh) * kw;
    // The source pixel this thread gathers dY for (m = lid % 64) and its first dY row/column.
    const int lm = int(lid % CONVT_DX_BM), lk = int(lid / CONVT_DX_BM);
    const long lq = q0 + lm;
    const bool l_in = lq < pixels;
    const long iy = l_in ? lq / p.src_w : 0, ix = l_in ? lq % p.src_w : 0;
    const long dy_img = p.dst_base + n * p.dst_stride_n + long(g) * og * p.dst_stride_c;
    const int wc = int(lid % CONVT_DX_BN), wk = int(lid / CONVT_DX_BN);  // weight staging
    const int tm = int(lid % 16), tn = int(lid / 16);

    float acc[CONVT_DX_T][CONVT_DX_T];
    for (int a = 0; a < CONVT_DX_T; ++a)
        for (int b = 0; b < CONVT_DX_T; ++b) acc[a][b] = 0.0f;
    for (int ky = 0; ky < kh; ++ky) {
        const long yy = iy * sy - p.first_tap_y - long(fc_dilation_y) * ky;
        for (int kx = 0; kx < kw; ++kx) {
            const long xx = ix * sx - p.first_tap_x - long(fc_dilation_x) * kx;
            const bool valid = l_in && yy >= 0 && yy < p.clip_h && xx >= 0 && xx < p.clip_w;
            const long dy_px =
                dy_img + (p.clip_y + yy) * p.dst_stride_h + (p.clip_x + xx) * p.dst_stride_w;
            const long tap = long(ky) * kw + kx;
            for (int o0 = 0; o0 < og; o0 += CONVT_DX_BK) {
                for (int r = 0; r < CONVT_DX_BK; r += CONVT_DX_THREADS / CONVT_DX_BM) {
                    const int k = lk + r;
                    ytile[k * CONVT_DX_BM + lm] =
                        (valid && o0 + k < og) ? float(dy[dy_px + long(o0 + k) * p.dst_stride_c])
                                               : 0.0f;
                }
                for (int r = 0; r < CONVT_DX_BK; r += CONVT_DX_THREADS / CONVT_DX_BN) {
                    const int k = wk + r;
                    wtile[k * CONVT_DX_BN + wc] =
                        (o0 + k < og && c0 + wc < ig)
                            ? weights[(long(g * og + o0 + k) * taps + tap) * ig + c0 + wc]
                            : 0.0f;
                }
                threadgroup_barrier(mem_flags::mem_threadgroup);
                for (int k = 0; k < CONVT_DX_BK; ++k) {
                    float av[CONVT_DX_T], bv[CONVT_DX_T];
                    for (int a = 0; a < CONVT_DX_T; ++a) av[a] = ytile[k * CONVT_DX_BM + tm + 16 * a];
                    for (int b = 0; b < CONVT_DX_T; ++b) bv[b] = wtile[k * CONVT_DX_BN + tn + 16 * b];
                    for (int a = 0; a < CONVT_DX_T; ++a)
                        for (int b = 0; b < CONVT_DX_T; ++b) acc[a][b] = fma(av[a], bv[b], acc[a][b]);
                }
                threadgroup_barrier(mem_flags::mem_threadgroup);
            }
        }
    }
    for (int a = 0; a < CONVT_DX_T; ++a) {
        const long q = q0 + tm + 16 * a;
        if (q >= pixels) break;
        const long px = p.src_base + n * p.src_stride_n + (q / p.src_w) * p.src_stride_h +
                        (q % p.src_w) * p.src_stride_w;
        for (int b = 0; b < CONVT_DX_T; ++b) {
            const int c = c0 + tn + 16 * b;
            if (c >= ig) break;
            dx[px + long(g * ig + c) * p.src_stride_c] = TX(acc[a][b]);
        }
    }
}

#define CONVT_BACKWARD_DATA_GEMM_ENTRY(NAME, TY, TX)                                            \
    kernel void NAME(device const TY* dy [[buffer(0)]], device TX* dx [[buffer(1)]],           \
                     device const float* weights [[buffer(2)]],                                 \
                     constant ConvtParams& p [[buffer(3)]],                                     \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint lid [[thread_index_in_threadgroup]]) {                                \
        threadgroup float ytile[CONVT_DX_BK * CONVT_DX_BM];                                     \
        threadgroup float wtile[CONVT_DX_BK * CONVT_DX_BN];                                     \
        convt_backward_data_gemm_impl<TY, TX>(dy, dx, weights, p, tg, lid, ytile, wtile);       \
    }

CONVT_BACKWARD_DATA_GEMM_ENTRY(convt_backward_data_gemm_f32_f32, float, float)
CONVT_BACKWARD_DATA_GEMM_ENTRY(convt_backward_data_gemm_f32_f16, float, half)
CONVT_BACKWARD_DATA_GEMM_ENTRY(convt_backward_data_gemm_f16_f32, half, float)
CONVT_BACKWARD_DATA_GEMM_ENTRY(convt_backward_data_gemm_f16_f16, half, half)
