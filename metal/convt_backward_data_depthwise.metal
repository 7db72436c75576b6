// dX (spec §5.3) for depthwise layers (one input and one output channel per group): a thread per
// source column and CONVT_DXD_ROWS rows sums every tap of its channel, 64 columns a threadgroup.
// The generic kernel (convt_backward_data.metal) stages weights for 4 input channels per thread,
// 3 of them idle here, with two barriers a tap. Same tap order and rounding as that kernel, so
// results match it bitwise. `p` describes dX in the source role and dY in the destination role.
#include "convt_kernel.h"

#define CONVT_DXD_ROWS 4  // rows a thread

template <typename TY, typename TX>
inline void convt_backward_data_depthwise_impl(device const TY* dy, device TX* dx,
                                               device const float* weights,
                                               constant ConvtParams& p, uint3 tg, uint3 t,
                                               uint3 tpg) {
    const int sx = fc_stride_x, sy = fc_stride_y;
    const int kw = fc_kernel_w, kh = fc_kernel_h;
    const int ix = int(tg.x * tpg.x + t.x);
    if (ix >= p.src_w) return;  // no barriers below
    const int g = int(tg.z % uint(p.groups));
    const long n = long(tg.z / uint(p.groups));
    const long dy_c = p.dst_base + n * p.dst_stride_n + long(g) * p.dst_stride_c +
                      long(p.clip_y) * p.dst_stride_h + long(p.clip_x) * p.dst_stride_w;
    const long dx_c = p.src_base + n * p.src_stride_n + long(g) * p.src_stride_c +
                      long(ix) * p.src_stride_w;
    const int w0 = g * kh * kw;
    for (int r = 0; r < CONVT_DXD_ROWS; ++r) {
        const int iy = int(tg.y) * CONVT_DXD_ROWS + r;
        if (iy >= p.src_h) break;
        float acc = 0.0f;
        for (int ky = 0; ky < kh; ++ky) {
            const int yy = iy * sy - p.first_tap_y - fc_dilation_y * ky;
            if (yy < 0 || yy >= p.clip_h) continue;
            const long row = dy_c + long(yy) * p.dst_stride_h;
            for (int kx = 0; kx < kw; ++kx) {
                const int xx = ix * sx - p.first_tap_x - fc_dilation_x * kx;
                // A missing dY pixel adds nothing (not 0 * w: w may be Inf).
                if (xx < 0 || xx >= p.clip_w) continue;
                acc = fma(float(dy[row + long(xx) * p.dst_stride_w]), weights[w0 + ky * kw + kx],
                          acc);
            }
        }
        dx[dx_c + long(iy) * p.src_stride_h] = TX(acc);
    }
}

#define CONVT_BACKWARD_DATA_DEPTHWISE_ENTRY(NAME, TY, TX)                                       \
    kernel void NAME(device const TY* dy [[buffer(0)]], device TX* dx [[buffer(1)]],           \
                     device const float* weights [[buffer(2)]],                                 \
                     constant ConvtParams& p [[buffer(3)]],                                     \
                     uint3 tg [[threadgroup_position_in_grid]],                                 \
                     uint3 t [[thread_position_in_threadgroup]],                                \
                     uint3 tpg [[threads_per_threadgroup]]) {                                   \
        convt_backward_data_depthwise_impl<TY, TX>(dy, dx, weights, p, tg, t, tpg);             \
    }

CONVT_BACKWARD_DATA_DEPTHWISE_ENTRY(convt_backward_data_depthwise_f32_f32, float, float)
CONVT_BACKWARD_DATA_DEPTHWISE_ENTRY(convt_backward_data_depthwise_f32_f16, float, half)
CONVT_BACKWARD_DATA_DEPTHWISE_ENTRY(convt_backward_data_depthwise_f16_f32, half, float)
CONVT_BACKWARD_DATA_DEPTHWISE_ENTRY(convt_backward_data_depthwise_f16_f16, half, half)
