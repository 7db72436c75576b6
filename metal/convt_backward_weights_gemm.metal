// dW and dB (spec §5.3) for wide layers, as a GEMM per tap: dW[o][tap][c] sums dY(o) x X(c) over
// K = every (image, destination pixel) the tap reaches. A 256-thread group owns 64 output x 64
// input channels of one tap and one of fc_splits fixed slices of K, staging 8 K-positions of both
// operands in threadgroup memory; each thread keeps a 4x4 register tile. Slices write partial
// sums that convt_reduce_partials (MPS's OHWI float) or convt_reduce_partials_torch_* (PyTorch's
// layout and dtype, into the caller's views) adds in slice order: results are the same run to
// run, with no atomics. dB partials come from convt_backward_bias_partial, into the same scratch
// buffer after the weights (convt_weight_partials.h). `p` describes X in the source role and dY in the
// destination role.
#include "convt_weight_partials.h"

#define CONVT_DW_TILE 64  // output and input channels per group
#define CONVT_DW_BK 8     // K positions per stage
#define CONVT_DW_T 4      // register tile: 4 x 4
#define CONVT_DW_THREADS 256
#define CONVT_DB_SIMDS 8  // SIMD-groups of a dB threadgroup
#define CONVT_FINISH_TILE 16  // taps and input channels of a PyTorch-layout finish threadgroup

template <typename TX, typename TY, typename Tile>
inline void convt_backward_weights_gemm_impl(device const TX* x, device const TY* dy,
                                             device float* partial, constant ConvtParams& p,
                                             uint3 tg, uint lid, Tile dyt, Tile xt) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, kh = fc_kernel_h;
    const int ig = p.in_per_group, og = p.out_per_group;
    const long taps = long(kh) * kw;
    const int c_tiles = (ig + CONVT_DW_TILE - 1) / CONVT_DW_TILE;
    const int o0 = int(tg.x) / c_tiles * CONVT_DW_TILE, c0 = int(tg.x) % c_tiles * CONVT_DW_TILE;
    const int tap = int(long(tg.y) % taps), g = int(long(tg.y) / taps);
    const int ky = tap / kw, kx = tap % kw;
    // Destination rows/columns this tap reaches: a phase of the stride.
    const long ey = long(p.first_tap_y) + long(fc_dilation_y) * ky;
    const long ex = long(p.first_tap_x) + long(fc_dilation_x) * kx;
    const long yy0 = convt_first_phase(ey, sy), xx0 = convt_first_phase(ex, sx);
    const long rows = yy0 < p.clip_h ? (p.clip_h - yy0 + sy - 1) / sy : 0;
    const long cols = xx0 < p.clip_w ? (p.clip_w - xx0 + sx - 1) / sx : 0;
    const long per_image = rows * cols, k_total = long(p.num_images) * per_image;
    const long k_begin = k_total * long(tg.z) / fc_splits;
    const long k_end = k_total * (long(tg.z) + 1) / fc_splits;
    const int lk = int(lid % CONVT_DW_BK), lr = int(lid / CONVT_DW_BK);  // staging position
    const int tm = int(lid % 16), tn = int(lid / 16);                     // register tile

    float acc[CONVT_DW_T][CONVT_DW_T];
    for (int a = 0; a < CONVT_DW_T; ++a)
        for (int b = 0; b < CONVT_DW_T; ++b) acc[a][b] = 0.0f;
    for (long k0 = k_begin; k0 < k_end; k0 += CONVT_DW_BK) {
        const long kk = k0 + lk;
        long dy_px = 0, x_px = 0;
        bool valid = kk < k_end;
        if (valid) {
            const long n = convt_div(kk, per_image), q = kk - n * per_image;
            const long row = convt_div(q, cols);
            const long yy = yy0 + row * sy, xx = xx0 + (q - row * cols) * sx;
            const long iy = convt_div(ey + yy, sy), ix = convt_div(ex + xx, sx);
            valid = iy < p.src_h && ix < p.src_w;
            dy_px = p.dst_base + n * p.dst_stride_n + (p.clip_y + yy) * p.dst_stride_h +
                    (p.clip_x + xx) * p.dst_stride_w;
            x_px = p.src_base + n * p.src_stride_n + iy * p.src_stride_h + ix * p.src_stride_w;
        }
        for (int r = 0; r < CONVT_DW_TILE; r += CONVT_DW_THREADS / CONVT_DW_BK) {
            const int o = o0 + lr + r, c = c0 + lr + r;
            dyt[lk * CONVT_DW_TILE + lr + r] =
                (valid && o < og) ? float(dy[dy_px + long(g * og + o) * p.dst_stride_c]) : 0.0f;
            xt[lk * CONVT_DW_TILE + lr + r] =
                (valid && c < ig) ? float(x[x_px + long(g * ig + c) * p.src_stride_c]) : 0.0f;
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
        for (int k = 0; k < CONVT_DW_BK; ++k) {
            float av[CONVT_DW_T], bv[CONVT_DW_T];
            for (int a = 0; a < CONVT_DW_T; ++a) av[a] = dyt[k * CONVT_DW_TILE + tm + 16 * a];
            for (int b = 0; b < CONVT_DW_T; ++b) bv[b] = xt[k * CONVT_DW_TILE + tn + 16 * b];
            for (int a = 0; a < CONVT_DW_T; ++a)
                for (int b = 0; b < CONVT_DW_T; ++b) acc[a][b] = fma(av[a], bv[b], acc[a][b]);
        }
        threadgroup_barrier(mem_flags::mem_threadgroup);
    }
    device float* out = partial + convt_dw_slice(p, tg.z);
    for (int a = 0; a < CONVT_DW_T; ++a) {
        const int o = o0 + tm + 16 * a;
        if (o >= og) break;
        for (int b = 0; b < CONVT_DW_T; ++b) {
            const int c = c0 + tn + 16 * b;
            if (c >= ig) break;
            out[(long(g * og + o) * taps + tap) * ig + c] = acc[a][b];
        }
    }
}

// dB partial sums: a threadgroup of CONVT_DB_SIMDS SIMD-groups per (output channel, slice of
// fc_bias_splits of the images' clip rows); SIMD-group s sums rows s, s + CONVT_DB_SIMDS, ... of
// the slice, lane l columns l, l + 32, ... (no divisions per element), then simd_sum and a sum
// over the SIMD-groups in order.
template <typename TY, typename Red>
inline void convt_backward_bias_partial_impl(device const TY* dy, device float* partial,
                                             constant ConvtParams& p, uint3 tg, uint lid,
                                             Red red) {
    const long oc = long(tg.x);
    const uint lane = lid % CONVT_SIMD, sg = lid / CONVT_SIMD;
    const long rows = long(p.num_images) * p.clip_h;
    const long r_end = rows * (long(tg.z) + 1) / fc_bias_splits;
    float sum = 0.0f;
    for (long r = rows * long(tg.z) / fc_bias_splits + sg; r < r_end; r += CONVT_DB_SIMDS) {
        const long n = convt_div(r, p.clip_h), y = r - n * p.clip_h;
        const long row = p.dst_base + n * p.dst_stride_n + oc * p.dst_stride_c +
                         (p.clip_y + y) * p.dst_stride_h + long(p.clip_x) * p.dst_stride_w;
        for (long x = lane; x < p.clip_w; x += CONVT_SIMD)
            sum += float(dy[row + x * p.dst_stride_w]);
    }
    sum = simd_sum(sum);
    if (lane == 0) red[sg] = sum;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (lid != 0) return;
    float total = 0.0f;
    for (int s = 0; s < CONVT_DB_SIMDS; ++s) total += red[s];
    partial[convt_db_slice(p, tg.z) + oc] = total;
}

// Weight e's (OHWI) and bias e's slices added in slice order: every destination layout gets the
// same bits.
inline float convt_dw_sum(device const float* partial, constant ConvtParams& p, long e) {
    float sum = 0.0f;
    for (int s = 0; s < fc_splits; ++s) sum += partial[convt_dw_slice(p, s) + e];
    return sum;
}

inline float convt_db_sum(device const float* partial, constant ConvtParams& p, long e) {
    float sum = 0.0f;
    for (int s = 0; s < fc_bias_splits; ++s) sum += partial[convt_db_slice(p, s) + e];
    return sum;
}

// dW (row tg.y = 0, when fc_splits > 0) and dB (row 1, when fc_has_bias) = their slices'
// partial sums, added in slice order (to what is there when fc_accumulate): dense float OHWI
// and [O], MPS's gradient-state layout.
inline void convt_reduce_partials_impl(device const float* partial, device float* dw,
                                       device float* db, constant ConvtParams& p, uint3 tg,
                                       uint lid) {
    const long e = long(tg.x) * CONVT_DW_THREADS + lid;
    if (tg.y == 0) {
        if (e >= (fc_splits > 0 ? convt_dw_count(p) : 0)) return;
        const float sum = convt_dw_sum(partial, p, e);
        dw[e] = fc_accumulate ? dw[e] + sum : sum;
    } else {
        if (!fc_has_bias || e >= p.out_channels) return;
        const float sum = convt_db_sum(partial, p, e);
        db[e] = fc_accumulate ? db[e] + sum : sum;
    }
}

// The same sums in PyTorch's convention, written into the caller's views of type T: dW
// [Cin][Cout/groups][kH][kW] with the taps flipped, described by the destination role of `p`
// (base and strides; N = Cin, C = Cout/groups, H = kH, W = kW), and dB [Cout] by the source
// role's base and channel stride. A threadgroup owns 16 taps x 16 input channels of output
// channel tg.y: it reads their sums along the input channels (OHWI order), transposes them in
// threadgroup memory and writes along the taps (PyTorch's order), so both sides move whole
// sectors (a thread per weight in OHWI order, its writes 32 rows apart a SIMD-group, took 41 us
// on dcgan_g2's 2M weights on an H100). Its first threadgroup also writes the channel's bias.
// They overwrite: PyTorch's convention has no accumulating gradient call.
template <typename T, typename Tile>
inline void convt_reduce_partials_torch_impl(device const float* partial, device T* dw,
                                             device T* db, constant ConvtParams& p, uint3 tg,
                                             uint lid, Tile tile) {
    const long o = tg.y;
    if (tg.x == 0 && lid == 0 && fc_has_bias)
        db[p.src_base + o * p.src_stride_c] = T(convt_db_sum(partial, p, o));
    if (fc_splits == 0) return;  // the same for the whole threadgroup
    const int ig = p.in_per_group, kw = fc_kernel_w, taps = fc_kernel_h * kw;
    const int c_tiles = (ig + CONVT_FINISH_TILE - 1) / CONVT_FINISH_TILE;
    const int c0 = int(tg.x) % c_tiles * CONVT_FINISH_TILE;
    const int t0 = int(tg.x) / c_tiles * CONVT_FINISH_TILE;
    const int lo = int(lid) % CONVT_FINISH_TILE, hi = int(lid) / CONVT_FINISH_TILE;
    if (c0 + lo < ig && t0 + hi < taps)
        tile[hi * (CONVT_FINISH_TILE + 1) + lo] =
            convt_dw_sum(partial, p, (o * taps + t0 + hi) * ig + c0 + lo);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    const int icl = c0 + hi, tap = t0 + lo;
    if (icl >= ig || tap >= taps) return;
    const long g = o / p.out_per_group, ocl = o - g * p.out_per_group;
    const int ky = tap / kw, kx = tap - ky * kw;
    dw[p.dst_base + (g * ig + icl) * p.dst_stride_n + ocl * p.dst_stride_c +
       long(fc_kernel_h - 1 - ky) * p.dst_stride_h + long(kw - 1 - kx) * p.dst_stride_w] =
        T(tile[lo * (CONVT_FINISH_TILE + 1) + hi]);
}

#define CONVT_BACKWARD_WEIGHTS_GEMM_ENTRY(NAME, TX, TY)                                         \
    kernel void NAME(device const TX* x [[buffer(0)]], device const TY* dy [[buffer(1)]],      \
                     device float* partial [[buffer(2)]], constant ConvtParams& p [[buffer(3)]], \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint lid [[thread_index_in_threadgroup]]) {                                \
        threadgroup float dyt[CONVT_DW_BK * CONVT_DW_TILE];                                     \
        threadgroup float xt[CONVT_DW_BK * CONVT_DW_TILE];                                      \
        convt_backward_weights_gemm_impl<TX, TY>(x, dy, partial, p, tg, lid, dyt, xt);          \
    }

#define CONVT_BACKWARD_BIAS_PARTIAL_ENTRY(NAME, TY)                                             \
    kernel void NAME(device const TY* dy [[buffer(0)]], device float* partial [[buffer(1)]],   \
                     constant ConvtParams& p [[buffer(2)]],                                     \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint lid [[thread_index_in_threadgroup]]) {                                \
        threadgroup float red[CONVT_DB_SIMDS];                                                  \
        convt_backward_bias_partial_impl<TY>(dy, partial, p, tg, lid, red);                     \
    }

CONVT_BACKWARD_WEIGHTS_GEMM_ENTRY(convt_backward_weights_gemm_f32_f32, float, float)
CONVT_BACKWARD_WEIGHTS_GEMM_ENTRY(convt_backward_weights_gemm_f32_f16, float, half)
CONVT_BACKWARD_WEIGHTS_GEMM_ENTRY(convt_backward_weights_gemm_f16_f32, half, float)
CONVT_BACKWARD_WEIGHTS_GEMM_ENTRY(convt_backward_weights_gemm_f16_f16, half, half)
CONVT_BACKWARD_BIAS_PARTIAL_ENTRY(convt_backward_bias_partial_f32, float)
CONVT_BACKWARD_BIAS_PARTIAL_ENTRY(convt_backward_bias_partial_f16, half)

kernel void convt_reduce_partials(device const float* partial [[buffer(0)]],
                                  device float* dw [[buffer(1)]], device float* db [[buffer(2)]],
                                  constant ConvtParams& p [[buffer(3)]],
                                  uint3 tg [[threadgroup_position_in_grid]],
                                  uint lid [[thread_index_in_threadgroup]]) {
    convt_reduce_partials_impl(partial, dw, db, p, tg, lid);
}

#define CONVT_REDUCE_PARTIALS_TORCH_ENTRY(NAME, T)                                              \
    kernel void NAME(device const float* partial [[buffer(0)]], device T* dw [[buffer(1)]],    \
                     device T* db [[buffer(2)]], constant ConvtParams& p [[buffer(3)]],         \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint lid [[thread_index_in_threadgroup]]) {                                \
        threadgroup float tile[CONVT_FINISH_TILE * (CONVT_FINISH_TILE + 1)];                    \
        convt_reduce_partials_torch_impl<T>(partial, dw, db, p, tg, lid, tile);                 \
    }

CONVT_REDUCE_PARTIALS_TORCH_ENTRY(convt_reduce_partials_torch_f32, float)
CONVT_REDUCE_PARTIALS_TORCH_ENTRY(convt_reduce_partials_torch_f16, half)
