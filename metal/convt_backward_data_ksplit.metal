// dX (spec §5.3) for layers with few input channels per group and a long reduction (many taps x
// output channels, e.g. FCN's 16x16 stride-8 upsampler): too few dX elements to fill a GPU one
// thread each, so the reduction is split inside the threadgroup. Each of its
// CONVT_DXK_SLICES SIMD-groups sums a contiguous block of taps (consecutive kx read neighbouring
// dY words, so a SIMD-group reuses the sectors it just loaded) for the same
// CONVT_DXK_PX pixels x CONVT_DXK_CH input channels per lane; the slices then add their sums
// through threadgroup memory in slice order, so results are the same on every run. Weights are
// read directly: the whole SIMD-group reads the same ones. A lane's pixels are 4 rows apart
// (8x4 lanes, an 8x8 pixel tile) or, for one-row images, 32 columns apart (a 64x1 tile).
// Lanes' dY pixels are a stride apart, so each dY load touches up to 32 sectors: 8 channels a
// lane halve those loads per multiply-add against 4 (measured on an H200: L1-bound).
// `p` describes dX in the source role and dY in the destination role.
#include "convt_kernel.h"

#define CONVT_DXK_SLICES 8
#define CONVT_DXK_PX 2
#define CONVT_DXK_CH 8
#define CONVT_DXK_VALUES (CONVT_DXK_PX * CONVT_DXK_CH)

template <typename TY, typename TX, typename Red>
inline void convt_backward_data_ksplit_impl(device const TY* dy, device TX* dx,
                                            device const float* weights, constant ConvtParams& p,
                                            uint3 tg, uint lid, Red red) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, kh = fc_kernel_h;
    const int dil_x = fc_dilation_x, dil_y = fc_dilation_y;
    const int ig = p.in_per_group, og = p.out_per_group;
    const int ic_blocks = (ig + CONVT_DXK_CH - 1) / CONVT_DXK_CH;
    uint z = tg.z;
    const int ib = int(z % uint(ic_blocks));
    z /= uint(ic_blocks);
    const int g = int(z % uint(p.groups));
    const long n = long(z / uint(p.groups));
    const int slice = int(lid / CONVT_SIMD), lane = int(lid % CONVT_SIMD);
    const bool one_row = p.src_h == 1;
    const int di = one_row ? CONVT_SIMD : 0, dj = one_row ? 0 : 4;
    const int ix = one_row ? int(tg.x) * CONVT_SIMD * CONVT_DXK_PX + lane : int(tg.x) * 8 + lane % 8;
    const int iy = one_row ? 0 : int(tg.y) * 4 * CONVT_DXK_PX + lane / 8;
    const int ic0 = ib * CONVT_DXK_CH;
    const long dy_img = p.dst_base + n * p.dst_stride_n + long(g) * og * p.dst_stride_c;
    const int taps = kh * kw;

    float acc[CONVT_DXK_PX][CONVT_DXK_CH];
    for (int u = 0; u < CONVT_DXK_PX; ++u)
        for (int c = 0; c < CONVT_DXK_CH; ++c) acc[u][c] = 0.0f;
    const int t1 = (slice + 1) * taps / CONVT_DXK_SLICES;
    for (int tap = slice * taps / CONVT_DXK_SLICES; tap < t1; ++tap) {
        const int ky = tap / kw, kx = tap - ky * kw;
        bool ok[CONVT_DXK_PX];
        long at[CONVT_DXK_PX];
        for (int u = 0; u < CONVT_DXK_PX; ++u) {
            const int y = (iy + u * dj) * sy - p.first_tap_y - dil_y * ky;
            const int x = (ix + u * di) * sx - p.first_tap_x - dil_x * kx;
            ok[u] = iy + u * dj < p.src_h && ix + u * di < p.src_w && y >= 0 && y < p.clip_h &&
                    x >= 0 && x < p.clip_w;
            at[u] = dy_img + long(p.clip_y + y) * p.dst_stride_h + long(p.clip_x + x) * p.dst_stride_w;
        }
        for (int o = 0; o < og; ++o) {
            const long w_at = (long(g * og + o) * taps + tap) * ig + ic0;
            float w[CONVT_DXK_CH];
            for (int c = 0; c < CONVT_DXK_CH; ++c) w[c] = ic0 + c < ig ? weights[w_at + c] : 0.0f;
            const long o_off = long(o) * p.dst_stride_c;
            for (int u = 0; u < CONVT_DXK_PX; ++u) {
                if (!ok[u]) continue;  // a missing dY pixel adds nothing (not 0 * w: w may be Inf)
                const float d = float(dy[at[u] + o_off]);
                for (int c = 0; c < CONVT_DXK_CH; ++c) acc[u][c] = fma(d, w[c], acc[u][c]);
            }
        }
    }
    // Slices 1.. hand their sums to slice 0, which adds them in slice order.
    if (slice > 0)
        for (int v = 0; v < CONVT_DXK_VALUES; ++v)
            red[((slice - 1) * CONVT_DXK_VALUES + v) * CONVT_SIMD + lane] =
                acc[v / CONVT_DXK_CH][v % CONVT_DXK_CH];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (slice > 0) return;
    for (int s = 1; s < CONVT_DXK_SLICES; ++s)
        for (int v = 0; v < CONVT_DXK_VALUES; ++v)
            acc[v / CONVT_DXK_CH][v % CONVT_DXK_CH] +=
                red[((s - 1) * CONVT_DXK_VALUES + v) * CONVT_SIMD + lane];
    for (int u = 0; u < CONVT_DXK_PX; ++u) {
        const int y = iy + u * dj, x = ix + u * di;
        if (y >= p.src_h || x >= p.src_w) continue;
        const long px = p.src_base + n * p.src_stride_n + long(y) * p.src_stride_h +
                        long(x) * p.src_stride_w;
        for (int c = 0; c < CONVT_DXK_CH; ++c) {
            if (ic0 + c >= ig) break;
            dx[px + long(g * ig + ic0 + c) * p.src_stride_c] = TX(acc[u][c]);
        }
    }
}

#define CONVT_BACKWARD_DATA_KSPLIT_ENTRY(NAME, TY, TX)                                          \
    kernel void NAME(device const TY* dy [[buffer(0)]], device TX* dx [[buffer(1)]],           \
                     device const float* weights [[buffer(2)]],                                 \
                     constant ConvtParams& p [[buffer(3)]],                                     \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint lid [[thread_index_in_threadgroup]]) {                                \
        threadgroup float red[(CONVT_DXK_SLICES - 1) * CONVT_DXK_VALUES * CONVT_SIMD];         \
        convt_backward_data_ksplit_impl<TY, TX>(dy, dx, weights, p, tg, lid, red);              \
    }

CONVT_BACKWARD_DATA_KSPLIT_ENTRY(convt_backward_data_ksplit_f32_f32, float, float)
CONVT_BACKWARD_DATA_KSPLIT_ENTRY(convt_backward_data_ksplit_f32_f16, float, half)
CONVT_BACKWARD_DATA_KSPLIT_ENTRY(convt_backward_data_ksplit_f16_f32, half, float)
CONVT_BACKWARD_DATA_KSPLIT_ENTRY(convt_backward_data_ksplit_f16_f16, half, half)
