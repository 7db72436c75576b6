// dX (spec §5.3) for layers with few input channels per group and a long reduction (many taps x
// output channels, e.g. FCN's 16x16 stride-8 upsampler): too few dX elements to fill a GPU one
// thread each, so the reduction is split inside the threadgroup. Each of its
// CONVT_DXK_SLICES SIMD-groups sums every CONVT_DXK_SLICES-th tap for the same
// CONVT_DXK_PX pixels x CONVT_DXK_CH input channels per lane; the slices then add their sums
// through threadgroup memory in slice order, so results are the same on every run. A lane's
// pixels are 4 rows apart (8x4 lanes, an 8x8 pixel tile) or, for one-row images, 32 columns
// apart (a 64x1 tile).
//
// dY is staged in threadgroup memory one output channel at a time: the window of dY that the
// tile's taps reach, split by stride phase (element (y, x) of the window at phase plane
// (y % sy, x % sx), position (y / sy, x / sx)). For one tap every lane then reads the same plane
// at consecutive positions, where reading dY directly put lanes a stride apart (measured on an
// H200: L1-bound, up to 32 sectors a load). The tap's weights for the channel block are staged
// beside it. gpu_launch.h routes a layer here only when window and weights fit
// (convt_dxk_fits). `p` describes dX in the source role and dY in the destination role.
#include "convt_kernel.h"

#define CONVT_DXK_SLICES 8
#define CONVT_DXK_PX 2
#define CONVT_DXK_CH 8
#define CONVT_DXK_VALUES (CONVT_DXK_PX * CONVT_DXK_CH)
#define CONVT_DXK_THREADS (CONVT_DXK_SLICES * CONVT_SIMD)
// Threadgroup memory: staged dY window + weights (floats), and the per-row / per-column tap
// offset tables (ints): 31.5 KB, under Apple's 32 KB.
#define CONVT_DXK_FLOATS 7936
#define CONVT_DXK_MAX_K 64

template <typename TY, typename TX, typename TF, typename TI>
inline void convt_backward_data_ksplit_impl(device const TY* dy, device TX* dx,
                                            device const float* weights, constant ConvtParams& p,
                                            uint3 tg, uint lid, TF sm, TI tab) {
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
    const int tile_x = one_row ? CONVT_SIMD * CONVT_DXK_PX : 8, tile_y = one_row ? 1 : 8;
    const int lx = one_row ? lane : lane % 8, ly = one_row ? 0 : lane / 8;
    const int di = one_row ? CONVT_SIMD : 0, dj = one_row ? 0 : 4;  // pixel u: +u * (di, dj)
    const int x0 = int(tg.x) * tile_x, y0 = int(tg.y) * tile_y;
    const int ic0 = ib * CONVT_DXK_CH;
    const long dy_img = p.dst_base + n * p.dst_stride_n + long(g) * og * p.dst_stride_c;
    const int taps = kh * kw;

    // The window: dY (clip-relative) columns xlo .. xlo + win_w - 1, rows likewise; pixel lx's
    // tap kx reads window column lx * sx + dil_x * (kw - 1 - kx).
    const int win_w = (tile_x - 1) * sx + dil_x * (kw - 1) + 1;
    const int win_h = (tile_y - 1) * sy + dil_y * (kh - 1) + 1;
    const int pw = (win_w + sx - 1) / sx, ph = (win_h + sy - 1) / sy;
    const int plane = pw * ph;
    const int xlo = x0 * sx - p.first_tap_x - dil_x * (kw - 1);
    const int ylo = y0 * sy - p.first_tap_y - dil_y * (kh - 1);
    const int w_base = sx * sy * plane;  // weights follow the window: [tap][channel]
    // Offset tables: tab[kx] for columns, tab[CONVT_DXK_MAX_K + ky] for rows.
    for (int k = int(lid); k < kw; k += CONVT_DXK_THREADS) {
        const int e = dil_x * (kw - 1 - k);
        tab[k] = (e % sx) * plane + e / sx;
    }
    for (int k = int(lid); k < kh; k += CONVT_DXK_THREADS) {
        const int e = dil_y * (kh - 1 - k);
        tab[CONVT_DXK_MAX_K + k] = (e % sy) * sx * plane + (e / sy) * pw;
    }

    // Per pixel: whether it exists, its row and column in dY before the tap (clip-relative).
    bool live[CONVT_DXK_PX];
    int yb[CONVT_DXK_PX], xb[CONVT_DXK_PX], at[CONVT_DXK_PX];
    for (int u = 0; u < CONVT_DXK_PX; ++u) {
        const int iy = y0 + ly + u * dj, ix = x0 + lx + u * di;
        live[u] = iy < p.src_h && ix < p.src_w;
        yb[u] = iy * sy - p.first_tap_y;
        xb[u] = ix * sx - p.first_tap_x;
        at[u] = (ly + u * dj) * pw + lx + u * di;
    }
    // Staging walk: this thread loads window rows slice, slice + 8, ... and columns lane,
    // lane + 32, ...; phase and position advance without divisions.
    const int c_q0 = lane / sx, c_r0 = lane % sx;
    const int c_dq = CONVT_SIMD / sx, c_dr = CONVT_SIMD % sx;
    const int r_q0 = slice / sy, r_r0 = slice % sy;
    const int r_dq = CONVT_DXK_SLICES / sy, r_dr = CONVT_DXK_SLICES % sy;

    float acc[CONVT_DXK_PX][CONVT_DXK_CH];
    for (int u = 0; u < CONVT_DXK_PX; ++u)
        for (int c = 0; c < CONVT_DXK_CH; ++c) acc[u][c] = 0.0f;
    for (int o = 0; o < og; ++o) {
        threadgroup_barrier(mem_flags::mem_threadgroup);  // the last channel's reads are done
        const long o_img = dy_img + long(o) * p.dst_stride_c;
        for (int wy = slice, qy = r_q0, ry = r_r0; wy < win_h; wy += CONVT_DXK_SLICES) {
            const int y = ylo + wy;
            const bool y_in = y >= 0 && y < p.clip_h;
            const long row = o_img + long(p.clip_y + y) * p.dst_stride_h;
            const int row_at = ry * sx * plane + qy * pw;
            for (int wx = lane, qx = c_q0, rx = c_r0; wx < win_w; wx += CONVT_SIMD) {
                const int x = xlo + wx;
                sm[row_at + rx * plane + qx] =
                    y_in && x >= 0 && x < p.clip_w ? float(dy[row + long(p.clip_x + x) * p.dst_stride_w])
                                                   : 0.0f;
                qx += c_dq;
                rx += c_dr;
                if (rx >= sx) {
                    rx -= sx;
                    ++qx;
                }
            }
            qy += r_dq;
            ry += r_dr;
            if (ry >= sy) {
                ry -= sy;
                ++qy;
            }
        }
        const long w_img = long(g * og + o) * taps * ig + ic0;
        for (int e = int(lid); e < taps * CONVT_DXK_CH; e += CONVT_DXK_THREADS) {
            const int t = e / CONVT_DXK_CH, c = e % CONVT_DXK_CH;
            sm[w_base + e] = ic0 + c < ig ? weights[w_img + long(t) * ig + c] : 0.0f;
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
        int ky = slice / kw, kx = slice - (slice / kw) * kw;
        for (int tap = slice; tap < taps; tap += CONVT_DXK_SLICES) {
            const int off = tab[CONVT_DXK_MAX_K + ky] + tab[kx];
            float w[CONVT_DXK_CH];
            for (int c = 0; c < CONVT_DXK_CH; ++c) w[c] = sm[w_base + tap * CONVT_DXK_CH + c];
            for (int u = 0; u < CONVT_DXK_PX; ++u) {
                const int y = yb[u] - dil_y * ky, x = xb[u] - dil_x * kx;
                // a missing dY pixel adds nothing (not 0 * w: w may be Inf)
                if (!live[u] || y < 0 || y >= p.clip_h || x < 0 || x >= p.clip_w) continue;
                const float d = sm[off + at[u]];
                for (int c = 0; c < CONVT_DXK_CH; ++c) acc[u][c] = fma(d, w[c], acc[u][c]);
            }
            kx += CONVT_DXK_SLICES;
            while (kx >= kw) {
                kx -= kw;
                ++ky;
            }
        }
    }
    // Slices 1.. hand their sums to slice 0 (through the window's memory), which adds them in
    // slice order.
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (slice > 0)
        for (int v = 0; v < CONVT_DXK_VALUES; ++v)
            sm[((slice - 1) * CONVT_DXK_VALUES + v) * CONVT_SIMD + lane] =
                acc[v / CONVT_DXK_CH][v % CONVT_DXK_CH];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (slice > 0) return;
    for (int s = 1; s < CONVT_DXK_SLICES; ++s)
        for (int v = 0; v < CONVT_DXK_VALUES; ++v)
            acc[v / CONVT_DXK_CH][v % CONVT_DXK_CH] +=
                sm[((s - 1) * CONVT_DXK_VALUES + v) * CONVT_SIMD + lane];
    for (int u = 0; u < CONVT_DXK_PX; ++u) {
        if (!live[u]) continue;
        const long px = p.src_base + n * p.src_stride_n + long(y0 + ly + u * dj) * p.src_stride_h +
                        long(x0 + lx + u * di) * p.src_stride_w;
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
        threadgroup float sm[CONVT_DXK_FLOATS];                                                 \
        threadgroup int tab[2 * CONVT_DXK_MAX_K];                                               \
        convt_backward_data_ksplit_impl<TY, TX>(dy, dx, weights, p, tg, lid, sm, tab);          \
    }

CONVT_BACKWARD_DATA_KSPLIT_ENTRY(convt_backward_data_ksplit_f32_f32, float, float)
CONVT_BACKWARD_DATA_KSPLIT_ENTRY(convt_backward_data_ksplit_f32_f16, float, half)
CONVT_BACKWARD_DATA_KSPLIT_ENTRY(convt_backward_data_ksplit_f16_f32, half, float)
CONVT_BACKWARD_DATA_KSPLIT_ENTRY(convt_backward_data_ksplit_f16_f16, half, half)
