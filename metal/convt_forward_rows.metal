// Forward transposed convolution for layers with few output channels per group (as
// convt_forward_narrow.metal), with a thread's pixels in one column of a stride phase,
// CONVT_ROWS_R consecutive rows. Where consecutive taps of a phase read consecutive source rows
// (dilation divides the stride), the rows read by its ky taps overlap: each source row is loaded
// once into registers and used by every tap that reads it (fsrcnn's k9 s3, 3 taps a phase: 10
// loads for 24 multiply-adds; the narrow kernel issued 18 instructions a multiply-add on an
// H100). Lanes run over columns, so each load of a SIMD-group is one coalesced row.
// Source pixels outside the image are read as 0, and 0 * w adds a zero: the host sends only
// layers whose weights are all finite here (an Inf weight would make 0 * Inf = NaN where the
// reference adds nothing). Order: input channel, kx, then ky; float accumulation only.
#include "convt_kernel.h"

#define CONVT_ROWS_R 8
#define CONVT_ROWS_MAX_TAPS 4  // ky taps a phase (the host sends no layer with more)

// plane[at] where `ok`, else 0; `at` is a real pixel either way (row or column 0 for a missing
// one). A float is loaded only where ok; a half is loaded always and then dropped, because
// nvcc branched around each conditional half load (fsrcnn_x3 fp16, N=8, H100: 0.42 -> 0.23 ms;
// the same form for floats took 0.17 -> 0.23 ms).
inline float convt_rows_load(device const float* plane, int at, bool ok) {
    return ok ? plane[at] : 0.0f;
}
inline float convt_rows_load(device const half* plane, int at, bool ok) {
    const float v = float(plane[at]);
    return ok ? v : 0.0f;
}

// acc[u] += the taps ky = ty.first + a * ty.step (a < NT) of every kx and input channel, for
// the pixel u rows below (i, j) in phase-grid coordinates; `plane` is input channel 0 of the
// image, `w` the weights of tap (ty.first, 0), channel 0, of this output channel.
template <int NT, typename TS>
inline void convt_rows_sum(device const TS* plane, device const float* w, constant ConvtParams& p,
                           ConvtTaps ty, ConvtTaps tx, int i, int j, int ig, int kw,
                           thread float* acc) {
    const int rows = CONVT_ROWS_R + NT - 1;
    int row_at[rows];
    bool row_ok[rows];
    for (int r = 0; r < rows; ++r) {
        const int y = ty.src + j + r;
        row_ok[r] = y >= 0 && y < p.src_h;
        row_at[r] = row_ok[r] ? y * int(p.src_stride_h) : 0;
    }
    const int w_tap = ty.step * kw * ig;  // from tap a to a + 1
    for (int c = 0; c < ig; ++c) {
        for (int kx = tx.first, ix = tx.src + i; kx < kw; kx += tx.step, ix += tx.src_step) {
            const bool col_ok = ix >= 0 && ix < p.src_w;
            const int col = col_ok ? ix * int(p.src_stride_w) : 0;
            float v[rows];
            for (int r = 0; r < rows; ++r)
                v[r] = convt_rows_load(plane, row_at[r] + col, col_ok && row_ok[r]);
            device const float* wk = w + kx * ig + c;
            for (int a = 0; a < NT; ++a) {
                const float wa = wk[a * w_tap];
                for (int u = 0; u < CONVT_ROWS_R; ++u) acc[u] = fma(v[u + a], wa, acc[u]);
            }
        }
        plane += p.src_stride_c;
    }
}

template <typename TS, typename TD>
inline void convt_forward_rows_impl(device const TS* src, device TD* dst,
                                    device const float* weights, device const float* bias,
                                    device const float* slopes, constant ConvtParams& p, uint3 tg,
                                    uint3 t, uint3 tpg) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, kh = fc_kernel_h;
    const int ig = p.in_per_group, og = p.out_per_group;
    const int nx = int(convt_phases(sx, p.clip_w)), ny = int(convt_phases(sy, p.clip_h));
    const uint phases = uint(nx) * uint(ny);
    uint z = tg.z;
    const int phase = int(z % phases);
    z /= phases;
    const int o = int(z % uint(og));
    z /= uint(og);
    const int g = int(z % uint(p.groups));
    const long n = long(z / uint(p.groups));
    const int py = phase / nx, px = phase % nx;
    const int i = int(tg.x * tpg.x + t.x);                   // phase-grid column
    const int j = int((tg.y * tpg.y + t.y) * CONVT_ROWS_R);  // first phase-grid row
    const int x0 = px + sx * i, y0 = py + sy * j;  // destination pixel 0, relative to the clip
    if (x0 >= p.clip_w || y0 >= p.clip_h) return;  // no barriers below
    const int oc = g * og + o;

    const float b = fc_has_bias ? bias[oc] : 0.0f;
    float acc[CONVT_ROWS_R];
    for (int u = 0; u < CONVT_ROWS_R; ++u) acc[u] = b;
    const ConvtTaps ty = convt_taps(p.first_tap_y + py, sy, fc_dilation_y, kh);
    const ConvtTaps tx = convt_taps(p.first_tap_x + px, sx, fc_dilation_x, kw);
    const int taps_y = ty.first < kh ? (kh - ty.first + ty.step - 1) / ty.step : 0;
    device const TS* plane = src + p.src_base + n * p.src_stride_n + long(g) * ig * p.src_stride_c;
    device const float* w = weights + long(oc * kh + ty.first) * kw * ig;
    switch (taps_y) {
        case 1:
            convt_rows_sum<1>(plane, w, p, ty, tx, i, j, ig, kw, acc);
            break;
        case 2:
            convt_rows_sum<2>(plane, w, p, ty, tx, i, j, ig, kw, acc);
            break;
        case 3:
            convt_rows_sum<3>(plane, w, p, ty, tx, i, j, ig, kw, acc);
            break;
        case 4:
            convt_rows_sum<4>(plane, w, p, ty, tx, i, j, ig, kw, acc);
            break;
        default:
            break;  // 0: no tap lands on this phase
    }
    const float slope = fc_neuron == CONVT_NEURON_PRELU ? slopes[oc] : 0.0f;
    device TD* out = dst + p.dst_base + n * p.dst_stride_n + long(oc) * p.dst_stride_c +
                     long(p.clip_x + x0) * p.dst_stride_w;
    for (int u = 0; u < CONVT_ROWS_R; ++u) {
        const int y = y0 + u * sy;
        if (y >= p.clip_h) break;
        out[long(p.clip_y + y) * p.dst_stride_h] =
            TD(convt_neuron(fc_neuron, acc[u], p.neuron_a, p.neuron_b, p.neuron_c, slope));
    }
}

#define CONVT_FORWARD_ROWS_ENTRY(NAME, TS, TD)                                                 \
    kernel void NAME(                                                                          \
        device const TS* src [[buffer(0)]], device TD* dst [[buffer(1)]],                      \
        device const float* weights [[buffer(2)]], device const float* bias [[buffer(3)]],     \
        device const float* slopes [[buffer(4)]], constant ConvtParams& p [[buffer(5)]],       \
        uint3 tg [[threadgroup_position_in_grid]], uint3 t [[thread_position_in_threadgroup]], \
        uint3 tpg [[threads_per_threadgroup]]) {                                               \
        convt_forward_rows_impl<TS, TD>(src, dst, weights, bias, slopes, p, tg, t, tpg);       \
    }

CONVT_FORWARD_ROWS_ENTRY(convt_forward_rows_f32_f32, float, float)
CONVT_FORWARD_ROWS_ENTRY(convt_forward_rows_f32_f16, float, half)
CONVT_FORWARD_ROWS_ENTRY(convt_forward_rows_f16_f32, half, float)
CONVT_FORWARD_ROWS_ENTRY(convt_forward_rows_f16_f16, half, half)
