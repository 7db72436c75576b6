#include "transpose.h"

#include "micro_kernel.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CONVT_X86_DISPATCH 1
#endif

namespace convt::cpu {
namespace {

void transpose8_portable(const float* src, int64_t cs, int64_t step, int channels, float* out,
                         int64_t out_step) {
    for (int i = 0; i < 8; ++i)
        for (int c = 0; c < channels; ++c) out[i * out_step + c] = src[c * cs + i * step];
}

#ifdef CONVT_X86_DISPATCH
__attribute__((target("avx2"))) inline __m256 load8(const float* p, int64_t step) {
    if (step == 1) return _mm256_loadu_ps(p);
    // Elements 0, 2, ..., 14: the even ones of p[0, 8) and the odd ones of p[7, 15) (not p[8, 16),
    // whose last float may lie past the tensor), shuffled within lanes, then the 64-bit halves
    // put in order.
    const __m256 even = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 7), 0xD8);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xD8));
}

__attribute__((target("avx2"))) void transpose8_avx2(const float* src, int64_t cs, int64_t step,
                                                     int channels, float* out, int64_t out_step) {
    __m256 r[8];
    for (int c = 0; c < 8; ++c)
        r[c] = c < channels ? load8(src + c * cs, step) : _mm256_setzero_ps();
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    __m256 rows[8];  // rows[i]: pixel i's 8 channels
    rows[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    rows[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    rows[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    rows[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    rows[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    rows[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    rows[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    rows[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
    if (channels == 8) {
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(out + i * out_step, rows[i]);
        return;
    }
    // Whole stores (see transpose.h); the last pixel's goes through a buffer when it would pass
    // the slot.
    const int whole = out_step >= 8 ? 8 : 7;
    for (int i = 0; i < whole; ++i) _mm256_storeu_ps(out + i * out_step, rows[i]);
    if (whole == 8) return;
    alignas(32) float last[8];
    _mm256_store_ps(last, rows[7]);
    for (int c = 0; c < channels; ++c) out[7 * out_step + c] = last[c];
}
#endif

}  // namespace

void transpose8(const float* src, int64_t channel_stride, int64_t pixel_step, int channels,
                float* out, int64_t out_step) {
#ifdef CONVT_X86_DISPATCH
    if (use_avx2())
        return transpose8_avx2(src, channel_stride, pixel_step, channels, out, out_step);
#endif
    transpose8_portable(src, channel_stride, pixel_step, channels, out, out_step);
}

void gather_channels(const float* in, int64_t pixel_step, int64_t count, int channels, float* out,
                     int64_t out_step) {
    int64_t x = 0;
    if (channels == 8)
        for (; x + 8 <= count; x += 8)
            transpose8(in + x * pixel_step, pixel_step, 1, 8, out + x, out_step);
    for (; x < count; ++x)
        for (int c = 0; c < channels; ++c) out[c * out_step + x] = in[x * pixel_step + c];
}

void taps_to_windows(const float* block, int64_t taps, int64_t ig, int64_t i0, int64_t i1,
                     float* out, int64_t out_n) {
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8) {
        float* o = out + i * out_n;
        int64_t t = 0;  // window element t is OHWI tap taps - 1 - t: read upwards (-ig)
        for (; t + 8 <= taps; t += 8)
            transpose8(block + (taps - 1 - t) * ig + i, -ig, 1, 8, o + t, out_n);
        for (; t < taps; ++t)
            for (int64_t k = 0; k < 8; ++k) o[k * out_n + t] = block[(taps - 1 - t) * ig + i + k];
    }
    for (; i < i1; ++i)
        for (int64_t t = 0; t < taps; ++t) out[i * out_n + t] = block[(taps - 1 - t) * ig + i];
}

}  // namespace convt::cpu
