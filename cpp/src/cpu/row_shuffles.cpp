#include "row_shuffles.h"

#include "micro_kernel.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CONVT_X86_DISPATCH 1
#endif

namespace convt::cpu {
namespace {

// The element loops index even and odd separately: `(x % 2 ? odd : even)[x / 2]` inside the
// AVX2-targeted functions read wild addresses when GCC 12 built them with -O1 and ASan or UBSan
// (tools/sanitize.sh found it; -O3 builds were right).

void interleave_portable(const float* even, const float* odd, int64_t n, float* out) {
    for (int64_t x = 0; x < n; ++x) out[x] = x % 2 ? odd[x / 2] : even[x / 2];
}

void deinterleave_portable(const float* in, int64_t n, float* even, float* odd) {
    for (int64_t x = 0; x < n; ++x) {
        if (x % 2)
            odd[x / 2] = in[x];
        else
            even[x / 2] = in[x];
    }
}

#ifdef CONVT_X86_DISPATCH
// Stream: non-temporal 16-byte stores (out 16-byte aligned; the caller checks).
template <bool Stream>
__attribute__((target("avx2"))) void interleave_avx2(const float* even, const float* odd, int64_t n,
                                                     float* out) {
    int64_t x = 0;
    for (; x + 16 <= n; x += 16) {
        const __m256 e = _mm256_loadu_ps(even + x / 2), o = _mm256_loadu_ps(odd + x / 2);
        const __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);
        if constexpr (Stream) {
            _mm_stream_ps(out + x, _mm256_castps256_ps128(lo));
            _mm_stream_ps(out + x + 4, _mm256_castps256_ps128(hi));
            _mm_stream_ps(out + x + 8, _mm256_extractf128_ps(lo, 1));
            _mm_stream_ps(out + x + 12, _mm256_extractf128_ps(hi, 1));
        } else {
            _mm256_storeu_ps(out + x, _mm256_permute2f128_ps(lo, hi, 0x20));
            _mm256_storeu_ps(out + x + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
        }
    }
    for (; x < n; ++x) out[x] = x % 2 ? odd[x / 2] : even[x / 2];
}

__attribute__((target("avx2"))) void deinterleave_avx2(const float* in, int64_t n, float* even,
                                                       float* odd) {
    int64_t x = 0;
    for (; x + 16 <= n; x += 16) {
        const __m256 a = _mm256_loadu_ps(in + x), b = _mm256_loadu_ps(in + x + 8);
        // [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6], odds likewise
        const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        const __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        _mm256_storeu_ps(even + x / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                           _mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0))));
        _mm256_storeu_ps(odd + x / 2, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                          _mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0))));
    }
    for (; x < n; ++x) {
        if (x % 2)
            odd[x / 2] = in[x];
        else
            even[x / 2] = in[x];
    }
}
#endif

}  // namespace

void interleave2(const float* even, const float* odd, int64_t n, float* out) {
#ifdef CONVT_X86_DISPATCH
    if (use_avx2()) return interleave_avx2<false>(even, odd, n, out);
#endif
    interleave_portable(even, odd, n, out);
}

bool interleave2_stream(const float* even, const float* odd, int64_t n, float* out) {
#ifdef CONVT_X86_DISPATCH
    if (use_avx2() && reinterpret_cast<uintptr_t>(out) % 16 == 0) {
        interleave_avx2<true>(even, odd, n, out);
        return true;
    }
#endif
    return false;
}

void interleave(const float* const* phase, int s, int64_t count, float* out) {
    if (s == 2) return interleave2(phase[0], phase[1], 2 * count, out);
    for (int64_t j = 0; j < count; ++j, out += s)  // in destination order: stores stay sequential
        for (int r = 0; r < s; ++r) out[r] = phase[r][j];
}

void deinterleave2(const float* in, int64_t n, float* even, float* odd) {
#ifdef CONVT_X86_DISPATCH
    if (use_avx2()) return deinterleave_avx2(in, n, even, odd);
#endif
    deinterleave_portable(in, n, even, odd);
}

}  // namespace convt::cpu
