// Forward transposed convolution for layers with few output channels per group (fewer than
// CONVT_CH_BLOCK, e.g. a super-resolution layer's single output channel): a thread computes one
// output channel at CONVT_NARROW_PX pixels of one stride phase, with the input-channel sum in
// registers. The taps that land on the phase are found once (convt_taps) and the weights read
// directly: every thread of a group reads the same one, so one load serves CONVT_NARROW_PX
// multiply-adds, and no barriers are needed. The pixels of a thread are a threadgroup height
// apart (32x2 threads, a 32x8 pixel tile: a SIMD-group reads one 32-pixel row a load) or a tile
// width (64x1 tiles, one-row images), so each load is coalesced. Same tap order
// (ky, kx, input channel) and rounding as convt_forward.metal.
#include "convt_kernel.h"

#define CONVT_NARROW_PX 4
#define CONVT_NARROW_CHUNK 8

template <typename TS, typename TD>
inline void convt_forward_narrow_impl(device const TS* src, device TD* dst,
                                      device const float* weights, device const float* bias,
                                      device const float* slopes, constant ConvtParams& p,
                                      uint3 tg, uint3 t, uint3 tpg) {
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
    // Pixel u of this thread sits at phase-grid column i + u * di, row j + u * dj.
    const bool one_row = tpg.y == 1;
    const int di = one_row ? int(tpg.x) : 0, dj = one_row ? 0 : int(tpg.y);
    const int i = int(tg.x * tpg.x * (one_row ? CONVT_NARROW_PX : 1) + t.x);
    const int j = int(tg.y * tpg.y * (one_row ? 1 : CONVT_NARROW_PX) + t.y);
    const int x0 = px + sx * i, y0 = py + sy * j;  // destination pixel 0, relative to the clip
    const int oc = g * og + o;
    const long src_img = p.src_base + n * p.src_stride_n + long(g) * ig * p.src_stride_c;

    const float b = fc_has_bias ? bias[oc] : 0.0f;
    float acc[CONVT_NARROW_PX];
    for (int u = 0; u < CONVT_NARROW_PX; ++u) acc[u] = fc_half_acc ? float(half(b)) : b;
    // The taps are the same for every pixel of the phase; pixel u reads source row
    // iy + u * dj and column ix + u * di for the tap that pixel 0 reads at (iy, ix).
    const ConvtTaps ty = convt_taps(p.first_tap_y + py, sy, fc_dilation_y, kh);
    const ConvtTaps tx = convt_taps(p.first_tap_x + px, sx, fc_dilation_x, kw);
    // Input channels in chunks, all taps per chunk: a threadgroup's source window of a chunk
    // stays in L1 across the taps (all channels at once thrashed it: L1 hit rate 18% on an
    // H200). The half accumulator keeps the documented (ky, kx, channel) order: one chunk.
    const int chunk = fc_half_acc ? ig : CONVT_NARROW_CHUNK;
    for (int c0 = 0; c0 < ig; c0 += chunk) {
        const int c1 = min(c0 + chunk, ig);
        for (int ky = ty.first, iy = ty.src + j; ky < kh; ky += ty.step, iy += ty.src_step) {
            for (int kx = tx.first, ix = tx.src + i; kx < kw; kx += tx.step, ix += tx.src_step) {
                bool ok[CONVT_NARROW_PX];
                long at[CONVT_NARROW_PX];
                for (int u = 0; u < CONVT_NARROW_PX; ++u) {
                    const int y = iy + u * dj, x = ix + u * di;
                    ok[u] = y0 + u * sy * dj < p.clip_h && x0 + u * sx * di < p.clip_w &&
                            y >= 0 && y < p.src_h && x >= 0 && x < p.src_w;
                    at[u] = src_img + long(y) * p.src_stride_h + long(x) * p.src_stride_w;
                }
                const long w_at = (long(oc * kh + ky) * kw + kx) * ig;
                for (int c = c0; c < c1; ++c) {
                    const float w = weights[w_at + c];
                    const long c_off = long(c) * p.src_stride_c;
                    for (int u = 0; u < CONVT_NARROW_PX; ++u) {
                        if (!ok[u]) continue;  // a missing pixel adds nothing (not 0 * w: w may be Inf)
                        const float v = float(src[at[u] + c_off]);
                        acc[u] = fc_half_acc ? float(half(fma(v, w, acc[u]))) : fma(v, w, acc[u]);
                    }
                }
            }
        }
    }
    const float slope = fc_neuron == CONVT_NEURON_PRELU ? slopes[oc] : 0.0f;
    for (int u = 0; u < CONVT_NARROW_PX; ++u) {
        const int y = y0 + u * sy * dj, x = x0 + u * sx * di;
        if (y >= p.clip_h || x >= p.clip_w) continue;
        dst[p.dst_base + n * p.dst_stride_n + long(oc) * p.dst_stride_c +
            long(p.clip_y + y) * p.dst_stride_h + long(p.clip_x + x) * p.dst_stride_w] =
            TD(convt_neuron(fc_neuron, acc[u], p.neuron_a, p.neuron_b, p.neuron_c, slope));
    }
}

#define CONVT_FORWARD_NARROW_ENTRY(NAME, TS, TD)                                               \
    kernel void NAME(device const TS* src [[buffer(0)]], device TD* dst [[buffer(1)]],         \
                     device const float* weights [[buffer(2)]],                                 \
                     device const float* bias [[buffer(3)]],                                    \
                     device const float* slopes [[buffer(4)]],                                  \
                     constant ConvtParams& p [[buffer(5)]],                                     \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint3 t [[thread_position_in_threadgroup]],                                \
                     uint3 tpg [[threads_per_threadgroup]]) {                                   \
        convt_forward_narrow_impl<TS, TD>(src, dst, weights, bias, slopes, p, tg, t, tpg);      \
    }

CONVT_FORWARD_NARROW_ENTRY(convt_forward_narrow_f32_f32, float, float)
CONVT_FORWARD_NARROW_ENTRY(convt_forward_narrow_f32_f16, float, half)
CONVT_FORWARD_NARROW_ENTRY(convt_forward_narrow_f16_f32, half, float)
CONVT_FORWARD_NARROW_ENTRY(convt_forward_narrow_f16_f16, half, half)
