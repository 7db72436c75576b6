#include "finite_rows.h"

#include <cstring>

#include "micro_kernel.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CONVT_X86_DISPATCH 1
#endif

namespace convt::cpu {
namespace {

constexpr uint32_t kExponent = 0x7f800000u;  // all set: infinite or NaN

bool all_finite_portable(const float* v, int64_t n) { return all_finite_inline(v, n); }

#ifdef CONVT_X86_DISPATCH
// The scalar loop did not vectorise: 0.6 ms of dcgan_out's 1.5 ms dW (4096 floats a row).
__attribute__((target("avx2"))) bool all_finite_avx2(const float* v, int64_t n) {
    const __m256i mask = _mm256_set1_epi32(static_cast<int>(kExponent));
    __m256i bad = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i e = _mm256_and_si256(_mm256_castps_si256(_mm256_loadu_ps(v + i)), mask);
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(e, mask));
    }
    return _mm256_testz_si256(bad, bad) && all_finite_portable(v + i, n - i);
}
#endif

}  // namespace

bool all_finite(const float* v, int64_t n) {
#ifdef CONVT_X86_DISPATCH
    if (use_avx2()) return all_finite_avx2(v, n);
#endif
    return all_finite_portable(v, n);
}

}  // namespace convt::cpu
