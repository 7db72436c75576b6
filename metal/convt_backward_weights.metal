// dW (spec §5.3) for layers with few channels per group, where the GEMM kernel's 64 x 64 tiles
// would be mostly empty. Both kernels split the reduction over K (every image and pixel) into
// fc_splits fixed slices and write each slice's sums to scratch (convt_weight_partials.h);
// convt_reduce_partials adds the slices in order, so results are the same run to run, with no
// atomics. `p` describes X in the source role and dY in the destination role.
//
// convt_backward_weights: a SIMD-group owns OB output x CB input channels of one tap and one
// slice; lane l takes K positions l, l + 32, ... of the slice (destination pixels of the tap's
// stride phase, consecutive columns: X reads are contiguous), keeps the channel block's sums in
// registers, and the lanes combine with simd_sum.
//
// convt_backward_weights_taps{1,8}: a threadgroup owns one output channel, CB of its input
// channels (1 for depthwise layers, else 8), T taps (16, else 4) and one slice of the source
// rows; lanes run over 32 consecutive source columns, each X pixel is read once and meets every
// tap of the chunk (T x CB sums in registers: a dY load feeds CB multiply-adds, an X load T),
// then simd_sum and a fixed-order sum over the SIMD-groups. Lanes idle past the image's width,
// so narrow images take convt_backward_weights.
#include "convt_weight_partials.h"

#define CONVT_DWD_OB 2     // output channels a SIMD-group
#define CONVT_DWD_CB 8     // input channels a SIMD-group
#define CONVT_DWD_SIMDS 4  // SIMD-groups a threadgroup, each on its own channel block and tap
#define CONVT_DWW_SIMDS 8  // SIMD-groups a "taps" threadgroup

template <int OB, int CB, typename TX, typename TY>
inline void convt_backward_weights_impl(device const TX* x, device const TY* dy,
                                        device float* partial, constant ConvtParams& p, uint3 tg,
                                        uint lid) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, taps = fc_kernel_h * kw;
    const int ig = p.in_per_group, og = p.out_per_group;
    const int o_blocks = (og + OB - 1) / OB;
    const int c_blocks = (ig + CB - 1) / CB;
    const uint lane = lid % CONVT_SIMD;
    // unit = ((g * o_blocks + ob) * taps + tap) * c_blocks + cb
    long unit = long(tg.x) * CONVT_DWD_SIMDS + long(lid / CONVT_SIMD);
    if (unit >= long(p.groups) * o_blocks * taps * c_blocks) return;  // no barriers below
    const int cb = int(unit % c_blocks);
    unit /= c_blocks;
    const int tap = int(unit % taps);
    unit /= taps;
    const int ob = int(unit % o_blocks), g = int(unit / o_blocks);
    const int ky = tap / kw, kx = tap - ky * kw;
    const int o0 = ob * OB, c0 = cb * CB;
    const int no = og - o0 < OB ? og - o0 : OB;
    const int nc = ig - c0 < CB ? ig - c0 : CB;
    // Destination rows/columns this tap reaches: a phase of the stride, cut to those whose source
    // pixel exists (first source row iy0, column ix0).
    const long ey = long(p.first_tap_y) + long(fc_dilation_y) * ky;
    const long ex = long(p.first_tap_x) + long(fc_dilation_x) * kx;
    const long yy0 = convt_first_phase(ey, sy), xx0 = convt_first_phase(ex, sx);
    const long iy0 = convt_div(ey + yy0, sy), ix0 = convt_div(ex + xx0, sx);
    long rows = yy0 < p.clip_h ? (p.clip_h - yy0 + sy - 1) / sy : 0;
    long cols = xx0 < p.clip_w ? (p.clip_w - xx0 + sx - 1) / sx : 0;
    rows = iy0 >= p.src_h ? 0 : (rows < p.src_h - iy0 ? rows : p.src_h - iy0);
    cols = ix0 >= p.src_w ? 0 : (cols < p.src_w - ix0 ? cols : p.src_w - ix0);
    const long per_image = rows * cols, k_total = long(p.num_images) * per_image;
    const long k_end = k_total * (long(tg.z) + 1) / fc_splits;

    float acc[OB][CB];
    for (int o = 0; o < OB; ++o)
        for (int c = 0; c < CB; ++c) acc[o][c] = 0.0f;
    long k = k_total * long(tg.z) / fc_splits + lane;
    if (k < k_end) {
        // Position k is (image n, row, col); stepping by 32 moves step_r rows and step_c columns.
        long n = convt_div(k, per_image), q = k - n * per_image;
        long row = convt_div(q, cols), col = q - row * cols;
        const long step_r = CONVT_SIMD / cols, step_c = CONVT_SIMD - step_r * cols;
        const long dyc = long(sx) * p.dst_stride_w, dyr = long(sy) * p.dst_stride_h;
        const long xc = p.src_stride_w, xr = p.src_stride_h;
        const long dy0 = p.dst_base + long(g * og + o0) * p.dst_stride_c +
                         (p.clip_y + yy0) * p.dst_stride_h + (p.clip_x + xx0) * p.dst_stride_w;
        const long x0 = p.src_base + long(g * ig + c0) * p.src_stride_c + iy0 * p.src_stride_h +
                        ix0 * p.src_stride_w;
        long dyo = dy0 + n * p.dst_stride_n + row * dyr + col * dyc;
        long xo = x0 + n * p.src_stride_n + row * xr + col * xc;
        const long dy_step = step_r * dyr + step_c * dyc, x_step = step_r * xr + step_c * xc;
        CONVT_NO_UNROLL
        for (; k < k_end; k += CONVT_SIMD) {
            float d[OB], v[CB];
            for (int o = 0; o < OB; ++o)
                d[o] = o < no ? float(dy[dyo + o * p.dst_stride_c]) : 0.0f;
            for (int c = 0; c < CB; ++c)
                v[c] = c < nc ? float(x[xo + c * p.src_stride_c]) : 0.0f;
            for (int o = 0; o < OB; ++o)
                if (o < no)
                    for (int c = 0; c < CB; ++c)
                        if (c < nc) acc[o][c] = fma(d[o], v[c], acc[o][c]);
            col += step_c;
            row += step_r;
            dyo += dy_step;
            xo += x_step;
            if (col >= cols) {
                col -= cols;
                ++row;
                dyo += dyr - cols * dyc;
                xo += xr - cols * xc;
            }
            if (row >= rows) {  // next image (or further, for images of fewer than 32 positions)
                const long wrap = convt_div(row, rows);
                n += wrap;
                row -= wrap * rows;
                dyo = dy0 + n * p.dst_stride_n + row * dyr + col * dyc;
                xo = x0 + n * p.src_stride_n + row * xr + col * xc;
            }
        }
    }
    const long out = convt_dw_slice(p, tg.z);
    for (int o = 0; o < OB; ++o)
        for (int c = 0; c < CB; ++c) {
            if (o >= no || c >= nc) continue;  // the same for the whole SIMD-group
            const float sum = simd_sum(acc[o][c]);
            if (lane == 0) partial[out + (long(g * og + o0 + o) * taps + tap) * ig + c0 + c] = sum;
        }
}

template <int CB, int T, typename TX, typename TY, typename Red>
inline void convt_backward_weights_taps_impl(device const TX* x, device const TY* dy,
                                             device float* partial, constant ConvtParams& p,
                                             uint3 tg, uint lid, Red red) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, taps = fc_kernel_h * kw;
    const int ig = p.in_per_group, og = p.out_per_group;
    const int c_blocks = (ig + CB - 1) / CB;
    const int cb = int(tg.x % uint(c_blocks)), oc = int(tg.x / uint(c_blocks));
    const int c0 = cb * CB, nc = ig - c0 < CB ? ig - c0 : CB;
    const int t0 = int(tg.y) * T;
    const int nt = taps - t0 < T ? taps - t0 : T;
    const uint lane = lid % CONVT_SIMD, sg = lid / CONVT_SIMD;
    // Source pixel (iy, ix) meets tap t at destination (iy * sy - ty[t], ix * sx - tx[t]),
    // relative to the clip.
    int ty[T], tx[T];
    float acc[T][CB];
    for (int t = 0; t < T; ++t) {
        const int tap = t0 + (t < nt ? t : 0), ky = tap / kw;
        ty[t] = p.first_tap_y + fc_dilation_y * ky;
        tx[t] = p.first_tap_x + fc_dilation_x * (tap - ky * kw);
        for (int c = 0; c < CB; ++c) acc[t][c] = 0.0f;
    }
    // Units of 32 source columns of one row of one image, split into fc_splits slices; the
    // SIMD-groups of the threadgroup take consecutive units (neighbouring rows share dY rows).
    const long chunks = (p.src_w + CONVT_SIMD - 1) / CONVT_SIMD;
    const long units = long(p.num_images) * p.src_h * chunks;
    const long u_end = units * (long(tg.z) + 1) / fc_splits;
    const long x_c = p.src_base + long(oc / og * ig + c0) * p.src_stride_c;
    const long dy_c = p.dst_base + long(oc) * p.dst_stride_c + long(p.clip_y) * p.dst_stride_h +
                      long(p.clip_x) * p.dst_stride_w;
    CONVT_NO_UNROLL
    for (long u = units * long(tg.z) / fc_splits + sg; u < u_end; u += CONVT_DWW_SIMDS) {
        const long r = convt_div(u, chunks), n = convt_div(r, p.src_h);
        const int iy = int(r - n * p.src_h);
        const int ix = int(u - r * chunks) * CONVT_SIMD + int(lane);
        if (ix >= p.src_w) continue;
        const long px = x_c + n * p.src_stride_n + long(iy) * p.src_stride_h +
                        long(ix) * p.src_stride_w;
        float v[CB];
        for (int c = 0; c < CB; ++c) v[c] = c < nc ? float(x[px + c * p.src_stride_c]) : 0.0f;
        const long plane = dy_c + n * p.dst_stride_n;
        const int ey = iy * sy, ex = ix * sx;
        for (int t = 0; t < T; ++t) {
            const int yy = ey - ty[t], xx = ex - tx[t];
            // A tap that misses the clip adds nothing (not 0 * v: v may be Inf).
            if (t < nt && yy >= 0 && yy < p.clip_h && xx >= 0 && xx < p.clip_w) {
                const float d = float(dy[plane + long(yy) * p.dst_stride_h +
                                         long(xx) * p.dst_stride_w]);
                for (int c = 0; c < CB; ++c) acc[t][c] = fma(d, v[c], acc[t][c]);
            }
        }
    }
    // Lane sums, then SIMD-group sums in SIMD-group order. Channels past nc hold junk (0 x dY)
    // and are never written.
    for (int t = 0; t < T; ++t)
        for (int c = 0; c < CB; ++c) {
            const float sum = simd_sum(acc[t][c]);
            if (lane == 0) red[(sg * T + t) * CB + c] = sum;
        }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    const int t = int(lid) / CB, c = int(lid) % CB;
    if (t >= nt || c >= nc) return;
    float sum = 0.0f;
    for (int s = 0; s < CONVT_DWW_SIMDS; ++s) sum += red[(s * T + t) * CB + c];
    partial[convt_dw_slice(p, tg.z) + (long(oc) * taps + t0 + t) * ig + c0 + c] = sum;
}

#define CONVT_BACKWARD_WEIGHTS_ENTRY(NAME, TX, TY)                                              \
    kernel void NAME(device const TX* x [[buffer(0)]], device const TY* dy [[buffer(1)]],      \
                     device float* partial [[buffer(2)]], constant ConvtParams& p [[buffer(3)]], \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint lid [[thread_index_in_threadgroup]]) {                                \
        convt_backward_weights_impl<CONVT_DWD_OB, CONVT_DWD_CB, TX, TY>(x, dy, partial, p, tg,  \
                                                                        lid);                   \
    }

#define CONVT_BACKWARD_WEIGHTS_TAPS_ENTRY(NAME, CB, T, TX, TY)                                  \
    kernel void NAME(device const TX* x [[buffer(0)]], device const TY* dy [[buffer(1)]],      \
                     device float* partial [[buffer(2)]], constant ConvtParams& p [[buffer(3)]], \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint lid [[thread_index_in_threadgroup]]) {                                \
        threadgroup float red[CONVT_DWW_SIMDS * T * CB];                                        \
        convt_backward_weights_taps_impl<CB, T, TX, TY>(x, dy, partial, p, tg, lid, red);       \
    }

CONVT_BACKWARD_WEIGHTS_ENTRY(convt_backward_weights_f32_f32, float, float)
CONVT_BACKWARD_WEIGHTS_ENTRY(convt_backward_weights_f32_f16, float, half)
CONVT_BACKWARD_WEIGHTS_ENTRY(convt_backward_weights_f16_f32, half, float)
CONVT_BACKWARD_WEIGHTS_ENTRY(convt_backward_weights_f16_f16, half, half)
// One input channel x 16 taps a thread (depthwise), and 8 x 4 (measured on an H100 against 4 x
// 16, 4 x 8, 4 x 4, 2 x 8, 2 x 4: 8 x 4 fastest on every shape with several input channels).
CONVT_BACKWARD_WEIGHTS_TAPS_ENTRY(convt_backward_weights_taps1_f32_f32, 1, 16, float, float)
CONVT_BACKWARD_WEIGHTS_TAPS_ENTRY(convt_backward_weights_taps1_f32_f16, 1, 16, float, half)
CONVT_BACKWARD_WEIGHTS_TAPS_ENTRY(convt_backward_weights_taps1_f16_f32, 1, 16, half, float)
CONVT_BACKWARD_WEIGHTS_TAPS_ENTRY(convt_backward_weights_taps1_f16_f16, 1, 16, half, half)
CONVT_BACKWARD_WEIGHTS_TAPS_ENTRY(convt_backward_weights_taps8_f32_f32, 8, 4, float, float)
CONVT_BACKWARD_WEIGHTS_TAPS_ENTRY(convt_backward_weights_taps8_f32_f16, 8, 4, float, half)
CONVT_BACKWARD_WEIGHTS_TAPS_ENTRY(convt_backward_weights_taps8_f16_f32, 8, 4, half, float)
CONVT_BACKWARD_WEIGHTS_TAPS_ENTRY(convt_backward_weights_taps8_f16_f16, 8, 4, half, half)
