// Forward transposed convolution for wide layers (out_per_group >= CONVT_GEMM_MIN_OUT), as a GEMM
// per stride phase: a threadgroup of 256 threads computes 64 destination pixels of one phase
// (flattened over the phase's rows and columns) x 64 output channels. For every tap that lands on
// the phase, 8 input channels at a time, the source pixels and the weights are staged in
// threadgroup memory; each thread accumulates a 4x4 register tile (pixels m0 + 16a, channels
// n0 + 16b). Float accumulation only (the half-accumulator mode uses convt_forward.metal).
#include "convt_kernel.h"

#define CONVT_GEMM_BM 64    // pixels per threadgroup
#define CONVT_GEMM_BN 64    // output channels per threadgroup
#define CONVT_GEMM_BK 8     // input channels per stage
#define CONVT_GEMM_T 4      // register tile: 4 pixels x 4 channels per thread
#define CONVT_GEMM_THREADS 256

template <typename TS, typename TD, typename TileA, typename TileB>
inline void convt_forward_gemm_impl(device const TS* src, device TD* dst,
                                    device const float* weights, device const float* bias,
                                    device const float* slopes, constant ConvtParams& p, uint3 tg,
                                    uint lid, TileA xtile, TileB wtile) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, kh = fc_kernel_h;
    const int ig = p.in_per_group, og = p.out_per_group;
    // Only phases that reach the clip get threadgroups: a huge stride makes no empty ones.
    const int nx = int(convt_phases(sx, p.clip_w)), ny = int(convt_phases(sy, p.clip_h));
    const uint phases = uint(nx) * uint(ny);
    uint z = tg.z;
    const int phase = int(z % phases);
    z /= phases;
    const int g = int(z % uint(p.groups));
    const long n = long(z / uint(p.groups));
    const int py = phase / nx, px = phase % nx;
    // This phase's destination grid (relative to the clip): rows x cols pixels.
    const long rows = py < p.clip_h ? (p.clip_h - py + sy - 1) / sy : 0;
    const long cols = px < p.clip_w ? (p.clip_w - px + sx - 1) / sx : 0;
    const long q0 = long(tg.x) * CONVT_GEMM_BM;
    if (q0 >= rows * cols) return;  // the whole threadgroup leaves together
    const int n0 = int(tg.y) * CONVT_GEMM_BN;

    // The pixel this thread stages (m = lid % 64) and where it sits in the phase grid.
    const int lm = int(lid % CONVT_GEMM_BM), lk = int(lid / CONVT_GEMM_BM);
    const long lq = q0 + lm;
    const bool l_in = lq < rows * cols;
    const long lj = l_in ? lq / cols : 0, li = l_in ? lq % cols : 0;
    const long src_img = p.src_base + n * p.src_stride_n + long(g) * ig * p.src_stride_c;
    // The weight element this thread stages: channel k = lid % 8 of output channel lid / 8.
    const int wk = int(lid % CONVT_GEMM_BK), wn = int(lid / CONVT_GEMM_BK);
    const long taps = long(kh) * kw;

    const int tm = int(lid % 16), tn = int(lid / 16);
    float acc[CONVT_GEMM_T][CONVT_GEMM_T];
    for (int b = 0; b < CONVT_GEMM_T; ++b) {
        const int oc = n0 + tn + 16 * b;
        const float v = (fc_has_bias && oc < og) ? bias[g * og + oc] : 0.0f;
        for (int a = 0; a < CONVT_GEMM_T; ++a) acc[a][b] = v;
    }
    for (int ky = 0; ky < kh; ++ky) {
        const long ey0 = long(p.first_tap_y) + py + long(fc_dilation_y) * ky;
        if (ey0 - convt_floor_div(ey0, sy) * sy != 0) continue;  // tap misses this phase's rows
        const long iy = convt_floor_div(ey0, sy) + lj;
        for (int kx = 0; kx < kw; ++kx) {
            const long ex0 = long(p.first_tap_x) + px + long(fc_dilation_x) * kx;
            if (ex0 - convt_floor_div(ex0, sx) * sx != 0) continue;
            const long ix = convt_floor_div(ex0, sx) + li;
            const bool valid = l_in && iy >= 0 && iy < p.src_h && ix >= 0 && ix < p.src_w;
            const long src_px = src_img + iy * p.src_stride_h + ix * p.src_stride_w;
            const long tap = long(ky) * kw + kx;
            for (int c0 = 0; c0 < ig; c0 += CONVT_GEMM_BK) {
                for (int r = 0; r < CONVT_GEMM_BK; r += CONVT_GEMM_THREADS / CONVT_GEMM_BM) {
                    const int k = lk + r;
                    xtile[k * CONVT_GEMM_BM + lm] =
                        (valid && c0 + k < ig) ? float(src[src_px + long(c0 + k) * p.src_stride_c])
                                               : 0.0f;
                }
                for (int r = 0; r < CONVT_GEMM_BN; r += CONVT_GEMM_THREADS / CONVT_GEMM_BK) {
                    const int oc = n0 + wn + r;
                    wtile[wk * CONVT_GEMM_BN + wn + r] =
                        (oc < og && c0 + wk < ig)
                            ? weights[(long(g * og + oc) * taps + tap) * ig + c0 + wk]
                            : 0.0f;
                }
                threadgroup_barrier(mem_flags::mem_threadgroup);
                for (int k = 0; k < CONVT_GEMM_BK; ++k) {
                    float av[CONVT_GEMM_T], bv[CONVT_GEMM_T];
                    for (int a = 0; a < CONVT_GEMM_T; ++a) av[a] = xtile[k * CONVT_GEMM_BM + tm + 16 * a];
                    for (int b = 0; b < CONVT_GEMM_T; ++b) bv[b] = wtile[k * CONVT_GEMM_BN + tn + 16 * b];
                    for (int a = 0; a < CONVT_GEMM_T; ++a)
                        for (int b = 0; b < CONVT_GEMM_T; ++b) acc[a][b] = fma(av[a], bv[b], acc[a][b]);
                }
                threadgroup_barrier(mem_flags::mem_threadgroup);
            }
        }
    }
    for (int a = 0; a < CONVT_GEMM_T; ++a) {
        const long q = q0 + tm + 16 * a;
        if (q >= rows * cols) break;
        const long yy = py + long(sy) * (q / cols), xx = px + long(sx) * (q % cols);
        const long dst_px = p.dst_base + n * p.dst_stride_n + (p.clip_y + yy) * p.dst_stride_h +
                            (p.clip_x + xx) * p.dst_stride_w;
        for (int b = 0; b < CONVT_GEMM_T; ++b) {
            const int oc = n0 + tn + 16 * b;
            if (oc >= og) break;
            const int c = g * og + oc;
            const float slope = fc_neuron == CONVT_NEURON_PRELU ? slopes[c] : 0.0f;
            dst[dst_px + long(c) * p.dst_stride_c] =
                TD(convt_neuron(fc_neuron, acc[a][b], p.neuron_a, p.neuron_b, p.neuron_c, slope));
        }
    }
}

#define CONVT_FORWARD_GEMM_ENTRY(NAME, TS, TD)                                                \
    kernel void NAME(device const TS* src [[buffer(0)]], device TD* dst [[buffer(1)]],         \
                     device const float* weights [[buffer(2)]],                                 \
                     device const float* bias [[buffer(3)]],                                    \
                     device const float* slopes [[buffer(4)]],                                  \
                     constant ConvtParams& p [[buffer(5)]],                                     \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint lid [[thread_index_in_threadgroup]]) {                                \
        threadgroup float xtile[CONVT_GEMM_BK * CONVT_GEMM_BM];                                    \
        threadgroup float wtile[CONVT_GEMM_BK * CONVT_GEMM_BN];                                    \
        convt_forward_gemm_impl<TS, TD>(src, dst, weights, bias, slopes, p, tg, lid, xtile, wtile); \
    }

CONVT_FORWARD_GEMM_ENTRY(convt_forward_gemm_f32_f32, float, float)
CONVT_FORWARD_GEMM_ENTRY(convt_forward_gemm_f32_f16, float, half)
CONVT_FORWARD_GEMM_ENTRY(convt_forward_gemm_f16_f32, half, float)
CONVT_FORWARD_GEMM_ENTRY(convt_forward_gemm_f16_f16, half, half)
