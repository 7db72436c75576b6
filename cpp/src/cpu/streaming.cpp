#include "streaming.h"

#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define CONVT_STREAM_SSE 1
#endif

namespace convt::cpu {

void stream_floats(const float* v, int64_t n, float* out) {
#ifdef CONVT_STREAM_SSE
    int64_t i = 0;
    for (; i < n && (reinterpret_cast<uintptr_t>(out + i) & 15) != 0; ++i) out[i] = v[i];
    for (; i + 4 <= n; i += 4) _mm_stream_ps(out + i, _mm_loadu_ps(v + i));
    for (; i < n; ++i) out[i] = v[i];
#else
    std::memcpy(out, v, sizeof(float) * size_t(n));
#endif
}

void stream_fence() {
#ifdef CONVT_STREAM_SSE
    _mm_sfence();
#endif
}

}  // namespace convt::cpu
