// dX (spec §5.3) for layers with few input channels per group and kernels as wide as a multiple
// of 8 taps (FCN's 16x16 stride-8 upsampler): the lanes of a SIMD-group run over (4 pixel
// columns) x (8 residues of kx mod 8), so for one tap row the SIMD-group reads one contiguous run
// of 32 dY words (with stride 8 and no dilation) instead of 32 words a stride apart, and each
// lane's weights serve CONVT_DXL_PX pixels x CONVT_DXL_CH input channels. A threadgroup stages the
// weights of its channel block for as many output channels as CONVT_DXL_STAGE_TAPS taps hold
// (two for 16x16 kernels); its SIMD-groups are CONVT_DXL_TILES pixel tiles x CONVT_DXL_SLICES
// contiguous blocks of the (kx / 8, ky) pairs. The partial sums
// (over slices, then over the 8 kx residues) are added through threadgroup memory in a fixed
// order, so results are the same on every run. dY offsets inside one image are 32-bit (the host
// selects this kernel only when they fit). `p` describes dX in the source role and dY in the
// destination role.
#include "convt_kernel.h"

#define CONVT_DXL_J 8                           // lanes of one pixel: kx = j, j + 8, ...
#define CONVT_DXL_Q (CONVT_SIMD / CONVT_DXL_J)  // pixel columns of a SIMD-group
#define CONVT_DXL_PX 4      // pixels a lane: rows, or columns CONVT_DXL_Q apart (one-row images)
#define CONVT_DXL_CH 8      // input channels a lane
#define CONVT_DXL_TILES 2   // SIMD-groups side by side over pixels
#define CONVT_DXL_SLICES 4  // SIMD-groups over the reduction
#define CONVT_DXL_THREADS (CONVT_DXL_TILES * CONVT_DXL_SLICES * CONVT_SIMD)
#define CONVT_DXL_MAX_TAPS 256    // taps of the largest kernel (gpu_launch.h kDxlMaxTaps)
#define CONVT_DXL_STAGE_TAPS 512  // taps staged at a time: 2 output channels of 16x16 taps
// Staged weights: channel c of tap t at c * CONVT_DXL_WSTRIDE + t. 8 lanes reading 8 consecutive
// taps hit 8 banks; the stride (4 mod 32) keeps the staging stores, 4 taps x 8 channels a
// SIMD-group, on 32 distinct banks.
#define CONVT_DXL_WSTRIDE (CONVT_DXL_STAGE_TAPS + 4)
#define CONVT_DXL_VALUES (CONVT_DXL_PX * CONVT_DXL_CH)
// Partial sums of slices 1..: value v of lane l of tile t of slice s at
// ((s - 1) * TILES + t) * VALUES * 33 + v * 33 + l (the odd row length keeps the final reads, 8
// consecutive lanes of 32 different (v, column) pairs, on distinct banks). They reuse the
// staging buffer.
#define CONVT_DXL_RED \
    ((CONVT_DXL_SLICES - 1) * CONVT_DXL_TILES * CONVT_DXL_VALUES * (CONVT_SIMD + 1))
#define CONVT_DXL_WS (CONVT_DXL_CH * CONVT_DXL_WSTRIDE)
// One staging buffer (two would pass Apple GPUs' 32 KB of threadgroup memory).
#define CONVT_DXL_BUF (CONVT_DXL_RED > CONVT_DXL_WS ? CONVT_DXL_RED : CONVT_DXL_WS)

struct ConvtDxlAcc {
    float v[CONVT_DXL_PX][CONVT_DXL_CH];
};

// What a lane reads for one kx: pixel u's dY at row[at[u]] (row: pixel 0's row, column 0) when
// its column is inside the clip (col_ok[u]) and its row is, which holds for ky in [lo[u], hi[u]).
struct ConvtDxlReads {
    int at[CONVT_DXL_PX], lo[CONVT_DXL_PX], hi[CONVT_DXL_PX];
    bool col_ok[CONVT_DXL_PX];
};

// Taps (ky0..ky1-1, kx fixed) of one output channel; `row` moves up `row_step` elements a tap
// row. kChecked tests each pixel's row range (else every row is inside). In this form ptxas
// issues a tap row's four dY loads together (SASS read on the H100 build); two rewrites of the
// kernel around it (prefetch runs found once; the loads written before their uses) made it put
// each load right before its eight multiply-adds, so the latencies added up: 0.272 -> 0.350 and
// 0.430 ms for FCN's dX, reverted.
template <bool kChecked, typename TY, typename W>
inline void convt_dxl_column(device const TY* row, long row_step, W ws, int tap, int kw, int ky0,
                             int ky1, thread const ConvtDxlReads& r, thread ConvtDxlAcc& acc) {
    CONVT_NO_UNROLL
    for (int ky = ky0; ky < ky1; ++ky, tap += kw, row -= row_step) {
        float w[CONVT_DXL_CH];
        for (int c = 0; c < CONVT_DXL_CH; ++c) w[c] = ws[c * CONVT_DXL_WSTRIDE + tap];
        for (int u = 0; u < CONVT_DXL_PX; ++u) {
            // No dY element: adds nothing (not 0 * w: w may be Inf).
            if (!r.col_ok[u] || (kChecked && (ky < r.lo[u] || ky >= r.hi[u]))) continue;
            const float d = float(row[r.at[u]]);
            for (int c = 0; c < CONVT_DXL_CH; ++c) acc.v[u][c] = fma(d, w[c], acc.v[u][c]);
        }
    }
}

// Paired taps (kernels of two taps a stride phase: kh = 2 * stride_y / dil_y, as FCN's k16 s8):
// for rho in [r0, r1), taps ky = rho and rho + P (P = stride_y / dil_y) of one output channel.
// Pixel u's dY row for tap rho + P is pixel u - 1's row for tap rho, so the rows v = -1 .. PX - 1
// (at offsets v * row_at + col from `row`, pixel 0's row for tap rho) serve all 2 x PX (pixel,
// tap) pairs: PX + 1 loads where convt_dxl_column makes 2 x PX. `y` is pixel 0's row for tap r0
// relative to the clip, `sy` the rows from pixel to pixel; kChecked tests each row against the
// clip (a row outside it adds nothing).
template <bool kChecked, typename TY, typename W>
inline void convt_dxl_column_paired(device const TY* row, long row_step, W ws, int tap, int tap_p,
                                    int kw, int r0, int r1, int y, int sy, int dil_y, int clip_h,
                                    int row_at, int col, thread ConvtDxlAcc& acc) {
    CONVT_NO_UNROLL
    for (int rho = r0; rho < r1; ++rho, tap += kw, row -= row_step, y -= dil_y) {
        float wa[CONVT_DXL_CH], wb[CONVT_DXL_CH];
        for (int c = 0; c < CONVT_DXL_CH; ++c) {
            wa[c] = ws[c * CONVT_DXL_WSTRIDE + tap];
            wb[c] = ws[c * CONVT_DXL_WSTRIDE + tap + tap_p];
        }
        float d[CONVT_DXL_PX + 1];  // d[v + 1]: row v
        bool ok[CONVT_DXL_PX + 1];
        for (int v = -1; v < CONVT_DXL_PX; ++v) {
            const int yv = y + v * sy;
            ok[v + 1] = !kChecked || (yv >= 0 && yv < clip_h);
            d[v + 1] = ok[v + 1] ? float(row[v * row_at + col]) : 0.0f;
        }
        for (int u = 0; u < CONVT_DXL_PX; ++u) {
            if (ok[u + 1])
                for (int c = 0; c < CONVT_DXL_CH; ++c)
                    acc.v[u][c] = fma(d[u + 1], wa[c], acc.v[u][c]);
            if (ok[u])
                for (int c = 0; c < CONVT_DXL_CH; ++c) acc.v[u][c] = fma(d[u], wb[c], acc.v[u][c]);
        }
    }
}

// Weights of the channel block for output channels o0.. (chunk_taps taps of consecutive channels,
// consecutive in memory: OHWI), CONVT_DXL_STAGE a thread: element k of thread lid is channel
// lid % CH of tap lid / CH + k * THREADS / CH, so a thread's loads are a fixed stride apart and
// its stores at fixed offsets (the index maths of a general element-to-tap mapping had cost as
// many instructions as the tap loops: ncu source counters, H100, FCN's dX).
#define CONVT_DXL_STAGE (CONVT_DXL_STAGE_TAPS * CONVT_DXL_CH / CONVT_DXL_THREADS)
#define CONVT_DXL_TAP_STEP (CONVT_DXL_THREADS / CONVT_DXL_CH)
#if CONVT_DXL_THREADS % CONVT_DXL_CH != 0
#error "a thread's staged channel must stay the same"
#endif

inline void convt_dxl_load_weights(device const float* weights, long w_o, int ig, int ic0,
                                   int chunk_taps, uint lid, thread float* v) {
    const int c = int(lid) % CONVT_DXL_CH, t0 = int(lid) / CONVT_DXL_CH;
    const bool c_ok = ic0 + c < ig;
    device const float* w = weights + (w_o + long(t0) * ig + c);
    const long step = long(CONVT_DXL_TAP_STEP) * ig;
    for (int k = 0; k < CONVT_DXL_STAGE; ++k)
        v[k] = c_ok && t0 + k * CONVT_DXL_TAP_STEP < chunk_taps ? w[k * step] : 0.0f;
}

template <typename W>
inline void convt_dxl_store_weights(W ws, int chunk_taps, uint lid, thread const float* v) {
    const int c = int(lid) % CONVT_DXL_CH, t0 = int(lid) / CONVT_DXL_CH;
    for (int k = 0; k < CONVT_DXL_STAGE; ++k)
        if (t0 + k * CONVT_DXL_TAP_STEP < chunk_taps)
            ws[c * CONVT_DXL_WSTRIDE + t0 + k * CONVT_DXL_TAP_STEP] = v[k];
}

// A threadgroup's dY window of one output channel: rows y0..y0+h-1, columns x0..x0+w-1, in
// runs of CONVT_DXL_PF_BYTES (segs a row, one more for a window that starts inside one).
struct ConvtDxlWindow {
    int x0, y0, w, h, segs;
};

#define CONVT_DXL_PF_BYTES 128
#define CONVT_DXL_PF_SEGS 4  // threads side by side over a window row's runs

// Prefetches into L1 the windows of output channels o0..o0+count-1 and the weights of the
// channel block for their taps, a run a thread, so that the loads of the tap loops and of the
// staging that come a chunk later hit L1. Only where the target has a prefetch instruction.
template <typename TY>
inline void convt_dxl_prefetch(device const TY* dy, device const float* weights,
                               constant ConvtParams& p, long dy_img, long w_g, int ic0, int o0,
                               int count, thread const ConvtDxlWindow& win, uint lid) {
    if (!CONVT_HAS_PREFETCH) return;
    // Thread lid takes runs lid % PF_SEGS, + PF_SEGS, ... of rows lid / PF_SEGS, + ..., in every
    // channel: no division (the divisions by the window's run count had cost about 180
    // instructions a thread a chunk, ncu source counters, H100, FCN's dX).
    const int run = CONVT_DXL_PF_BYTES / int(sizeof(TY));
    const int rows_step = CONVT_DXL_THREADS / CONVT_DXL_PF_SEGS;
    for (int r = int(lid) / CONVT_DXL_PF_SEGS; r < win.h; r += rows_step) {
        const int y = win.y0 + r;
        if (y < 0 || y >= p.clip_h) continue;
        for (int sg = int(lid) % CONVT_DXL_PF_SEGS; sg < win.segs; sg += CONVT_DXL_PF_SEGS) {
            const int x = min(win.x0 + sg * run, win.x0 + win.w - 1);
            if (x < 0 || x >= p.clip_w) continue;
            device const TY* at =
                dy + (dy_img + long(o0) * p.dst_stride_c + long(y) * p.dst_stride_h +
                      long(p.clip_x + x) * p.dst_stride_w);
            for (int o = 0; o < count; ++o) convt_prefetch(at + long(o) * p.dst_stride_c);
        }
    }
    const int taps = fc_kernel_w * fc_kernel_h, ig = p.in_per_group;
    for (int t = int(lid); t < count * taps; t += CONVT_DXL_THREADS) {
        const long at = w_g + (long(o0) * taps + t) * ig;
        convt_prefetch(weights + at);
        convt_prefetch(weights + at + min(CONVT_DXL_CH, ig - ic0) - 1);
    }
}

template <bool kPaired, typename TY, typename TX, typename Buf>
inline void convt_backward_data_kxlanes_impl(device const TY* dy, device TX* dx,
                                             device const float* weights, constant ConvtParams& p,
                                             uint3 tg, uint lid, Buf buf) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, kh = fc_kernel_h;
    const int dil_x = fc_dilation_x, dil_y = fc_dilation_y;
    const int ig = p.in_per_group, og = p.out_per_group, taps = kh * kw;
    const int ic_blocks = (ig + CONVT_DXL_CH - 1) / CONVT_DXL_CH;
    uint z = tg.z;
    const int ib = int(z % uint(ic_blocks));
    z /= uint(ic_blocks);
    const int g = int(z % uint(p.groups));
    const long n = long(z / uint(p.groups));
    const int simd = int(lid / CONVT_SIMD), lane = int(lid % CONVT_SIMD);
    const int tile = simd % CONVT_DXL_TILES, slice = simd / CONVT_DXL_TILES;
    const int q = lane / CONVT_DXL_J, j = lane % CONVT_DXL_J;
    const int ic0 = ib * CONVT_DXL_CH;
    // Pixel u of this lane: column ix0 + u * di, row iy0 + u * dj.
    const bool one_row = p.src_h == 1;
    const int di = one_row ? CONVT_DXL_Q : 0, dj = one_row ? 0 : 1;
    const int tile_w = CONVT_DXL_Q * (one_row ? CONVT_DXL_PX : 1);
    const int ix0 = (int(tg.x) * CONVT_DXL_TILES + tile) * tile_w + q;
    const int iy0 = one_row ? 0 : int(tg.y) * CONVT_DXL_PX;
    const int sh = int(p.dst_stride_h), sw = int(p.dst_stride_w);
    const long row_step = long(dil_y) * p.dst_stride_h;

    // Each pixel's ky range with a real dY row (empty for rows past the image): the same for
    // every lane of a SIMD-group.
    ConvtDxlReads r;
    for (int u = 0; u < CONVT_DXL_PX; ++u) {
        const int e = (iy0 + u * dj) * sy - p.first_tap_y;  // y = e - dil_y * ky
        const bool in = iy0 + u * dj < p.src_h;
        r.lo[u] = in ? max(0, convt_floor_div32(e - p.clip_h, dil_y) + 1) : 0;
        r.hi[u] = in ? min(kh, convt_floor_div32(e, dil_y) + 1) : 0;
    }
    const int y0 = iy0 * sy - p.first_tap_y;

    ConvtDxlAcc acc;
    for (int u = 0; u < CONVT_DXL_PX; ++u)
        for (int c = 0; c < CONVT_DXL_CH; ++c) acc.v[u][c] = 0.0f;
    // This slice's (kx / 8, ky) pairs: t = m * kh + ky in [t0, t1); paired, (kx / 8, rho) units
    // t = m * P + rho, each the taps rho and rho + P.
    const int P = kh / 2;
    const int rows_x = kPaired ? P : kh;  // units of one kx group
    const int groups_x = (kw + CONVT_DXL_J - 1) / CONVT_DXL_J, pairs = groups_x * rows_x;
    const int t0 = slice * pairs / CONVT_DXL_SLICES, t1 = (slice + 1) * pairs / CONVT_DXL_SLICES;
    const long dy_img = p.dst_base + n * p.dst_stride_n + long(g) * og * p.dst_stride_c +
                        long(p.clip_y) * p.dst_stride_h;
    // Output channels in chunks whose weights fill the staging buffer (two channels for 16x16
    // taps: the per-chunk work, prefetch, staging and pixel set-up, had cost as many instructions
    // as the tap loops with one). The next chunk's weights are loaded before the barrier that
    // ends the use of this one's and stored after it.
    const int chunk = max(1, CONVT_DXL_STAGE_TAPS / taps);
    const long w_g = long(g * og) * taps * ig + ic0;
    // The next chunk's dY window and weights are prefetched a chunk ahead: without, the tap loops
    // waited on L2 (ncu, H100: 62% of stalls, L1 hit rate 56%, 313 us for FCN's dX at N = 8),
    // and loads made only to warm L1 (their values summed) stalled on their own results.
    ConvtDxlWindow win;
    win.x0 = int(tg.x) * CONVT_DXL_TILES * tile_w * sx - p.first_tap_x - dil_x * (kw - 1);
    win.y0 = iy0 * sy - p.first_tap_y - dil_y * (kh - 1);
    win.w = (CONVT_DXL_TILES * tile_w - 1) * sx + dil_x * (kw - 1) + 1;
    win.h = (one_row ? 0 : (CONVT_DXL_PX - 1) * sy) + dil_y * (kh - 1) + 1;
    const int run = CONVT_DXL_PF_BYTES / int(sizeof(TY));
    win.segs = (win.w + run - 1) / run + 1;
    convt_dxl_prefetch(dy, weights, p, dy_img, w_g, ic0, 0, min(chunk, og), win, lid);
    float staged[CONVT_DXL_STAGE];
    convt_dxl_load_weights(weights, w_g, ig, ic0, min(chunk, og) * taps, lid, staged);
    convt_dxl_store_weights(buf, min(chunk, og) * taps, lid, staged);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    CONVT_NO_UNROLL
    for (int o0 = 0; o0 < og; o0 += chunk) {
        const int chunk_taps = min(chunk, og - o0) * taps;
        const int next_co = min(chunk, max(og - o0 - chunk, 0));
        if (next_co > 0)
            convt_dxl_prefetch(dy, weights, p, dy_img, w_g, ic0, o0 + chunk, next_co, win, lid);
        auto ws = buf;
        CONVT_NO_UNROLL
        if (kPaired) {
            CONVT_NO_UNROLL
            for (int m = t0 / P; m * P < t1; ++m) {
                const int kx = j + m * CONVT_DXL_J;
                const int r0 = max(t0 - m * P, 0), r1 = min(t1 - m * P, P);
                const int x = ix0 * sx - p.first_tap_x - dil_x * kx;
                if (ix0 >= p.src_w || kx >= kw || x < 0 || x >= p.clip_w) continue;
                const int col = (p.clip_x + x) * sw;
                // Rows v = -1 .. PX - 1 for rho = r0 .. r1 - 1 all inside the clip.
                const int ya = y0 - dil_y * r0;
                const bool full =
                    ya + (CONVT_DXL_PX - 1) * sy < p.clip_h && ya - sy - dil_y * (r1 - 1 - r0) >= 0;
                CONVT_NO_UNROLL
                for (int o = o0, tap = r0 * kw + kx; tap < chunk_taps; ++o, tap += taps) {
                    device const TY* row =
                        dy + (dy_img + long(o) * p.dst_stride_c + long(ya) * p.dst_stride_h);
                    if (full)
                        convt_dxl_column_paired<false>(row, row_step, ws, tap, P * kw, kw, r0, r1,
                                                       ya, sy, dil_y, p.clip_h, sy * sh, col, acc);
                    else
                        convt_dxl_column_paired<true>(row, row_step, ws, tap, P * kw, kw, r0, r1,
                                                      ya, sy, dil_y, p.clip_h, sy * sh, col, acc);
                }
            }
        } else {
            for (int m = t0 / kh; m * kh < t1; ++m) {
                const int kx = j + m * CONVT_DXL_J;
                const int ky0 = max(t0 - m * kh, 0), ky1 = min(t1 - m * kh, kh);
                bool full = true, any = false;
                for (int u = 0; u < CONVT_DXL_PX; ++u) {
                    const int x = (ix0 + u * di) * sx - p.first_tap_x - dil_x * kx;
                    r.col_ok[u] = ix0 + u * di < p.src_w && kx < kw && x >= 0 && x < p.clip_w;
                    // Row offset of pixel u from pixel 0 plus its column (both inside the image).
                    r.at[u] = r.col_ok[u] ? u * dj * sy * sh + (p.clip_x + x) * sw : 0;
                    full = full && r.lo[u] <= ky0 && r.hi[u] >= ky1;
                    any = any || (r.col_ok[u] && max(r.lo[u], ky0) < min(r.hi[u], ky1));
                }
                if (!any) continue;
                CONVT_NO_UNROLL
                for (int o = o0, tap = ky0 * kw + kx; tap < chunk_taps; ++o, tap += taps) {
                    // Pixel 0's row for ky0 (outside the image where only pixels below it have dY:
                    // the pointer is then only moved, never read).
                    device const TY* row = dy + (dy_img + long(o) * p.dst_stride_c +
                                                 long(y0 - dil_y * ky0) * p.dst_stride_h);
                    if (full)
                        convt_dxl_column<false>(row, row_step, ws, tap, kw, ky0, ky1, r, acc);
                    else
                        convt_dxl_column<true>(row, row_step, ws, tap, kw, ky0, ky1, r, acc);
                }
            }
        }
        if (next_co > 0)
            convt_dxl_load_weights(weights, w_g + long(o0 + chunk) * taps * ig, ig, ic0,
                                   next_co * taps, lid, staged);
        threadgroup_barrier(mem_flags::mem_threadgroup);
        if (next_co > 0) {
            convt_dxl_store_weights(buf, next_co * taps, lid, staged);
            threadgroup_barrier(mem_flags::mem_threadgroup);
        }
    }
    // Slices 1.. hand their sums to slice 0, which adds them in slice order and stores the
    // result where slice 1's were; then the 8 lanes of each pixel column are added in lane order.
    // The buffer held the staged weights until now.
    const int at = tile * CONVT_DXL_VALUES * (CONVT_SIMD + 1) + lane;
    const int slice_size = CONVT_DXL_TILES * CONVT_DXL_VALUES * (CONVT_SIMD + 1);
    if (slice > 0)
        for (int v = 0; v < CONVT_DXL_VALUES; ++v)
            buf[(slice - 1) * slice_size + at + v * (CONVT_SIMD + 1)] =
                acc.v[v / CONVT_DXL_CH][v % CONVT_DXL_CH];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (slice == 0)
        for (int v = 0; v < CONVT_DXL_VALUES; ++v) {
            float sum = acc.v[v / CONVT_DXL_CH][v % CONVT_DXL_CH];
            for (int s = 1; s < CONVT_DXL_SLICES; ++s)
                sum += buf[(s - 1) * slice_size + at + v * (CONVT_SIMD + 1)];
            buf[at + v * (CONVT_SIMD + 1)] = sum;
        }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    // Output (tile, value v = pixel * CH + channel, column qq): qq fastest, so the 32 threads of
    // a SIMD-group read 32 (v, qq) rows on distinct banks.
    for (int out = int(lid); out < CONVT_DXL_TILES * CONVT_DXL_VALUES * CONVT_DXL_Q;
         out += CONVT_DXL_THREADS) {
        const int qq = out % CONVT_DXL_Q, v = (out / CONVT_DXL_Q) % CONVT_DXL_VALUES;
        const int tt = out / (CONVT_DXL_Q * CONVT_DXL_VALUES);
        const int u = v / CONVT_DXL_CH, c = v % CONVT_DXL_CH;
        const int x = (int(tg.x) * CONVT_DXL_TILES + tt) * tile_w + qq + u * di;
        const int y = iy0 + u * dj;
        if (x >= p.src_w || y >= p.src_h || ic0 + c >= ig) continue;
        const int row = (tt * CONVT_DXL_VALUES + v) * (CONVT_SIMD + 1) + qq * CONVT_DXL_J;
        float sum = buf[row];
        for (int jj = 1; jj < CONVT_DXL_J; ++jj) sum += buf[row + jj];
        dx[p.src_base + n * p.src_stride_n + long(g * ig + ic0 + c) * p.src_stride_c +
           long(y) * p.src_stride_h + long(x) * p.src_stride_w] = TX(sum);
    }
}

#define CONVT_BACKWARD_DATA_KXLANES_ENTRY(NAME, PAIRED, TY, TX)                                \
    kernel void NAME(                                                                          \
        device const TY* dy [[buffer(0)]], device TX* dx [[buffer(1)]],                        \
        device const float* weights [[buffer(2)]], constant ConvtParams& p [[buffer(3)]],      \
        uint3 tg [[threadgroup_position_in_grid]], uint lid [[thread_index_in_threadgroup]]) { \
        threadgroup float buf[CONVT_DXL_BUF];                                                  \
        convt_backward_data_kxlanes_impl<PAIRED, TY, TX>(dy, dx, weights, p, tg, lid, buf);    \
    }

CONVT_BACKWARD_DATA_KXLANES_ENTRY(convt_backward_data_kxlanes_f32_f32, false, float, float)
CONVT_BACKWARD_DATA_KXLANES_ENTRY(convt_backward_data_kxlanes_f32_f16, false, float, half)
CONVT_BACKWARD_DATA_KXLANES_ENTRY(convt_backward_data_kxlanes_f16_f32, false, half, float)
CONVT_BACKWARD_DATA_KXLANES_ENTRY(convt_backward_data_kxlanes_f16_f16, false, half, half)
// Kernels of two taps a stride phase (kh = 2 * stride_y / dil_y, 2-D images): paired taps.
CONVT_BACKWARD_DATA_KXLANES_ENTRY(convt_backward_data_kxlanes2_f32_f32, true, float, float)
CONVT_BACKWARD_DATA_KXLANES_ENTRY(convt_backward_data_kxlanes2_f32_f16, true, float, half)
CONVT_BACKWARD_DATA_KXLANES_ENTRY(convt_backward_data_kxlanes2_f16_f32, true, half, float)
CONVT_BACKWARD_DATA_KXLANES_ENTRY(convt_backward_data_kxlanes2_f16_f16, true, half, half)
