#include "half_rows.h"

#include <algorithm>
#include <cstring>

#include "../core/half.h"
#include "elements.h"
#include "micro_kernel.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CONVT_X86_DISPATCH 1
#endif

namespace convt::cpu {
namespace {

constexpr int kChunk = 256;  // half elements converted at once (bits on the stack)

#ifdef CONVT_X86_DISPATCH
__attribute__((target("avx2,f16c"))) void halves_to_floats_f16c(const uint16_t* src, int n,
                                                                float* out) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(
            out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    for (; i < n; ++i) out[i] = _cvtsh_ss(src[i]);
}

__attribute__((target("avx2,f16c"))) void floats_to_halves_f16c(const float* src, int n,
                                                                uint16_t* out) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; ++i) out[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}

bool use_f16c() {
    static const bool chosen = [] {
        __builtin_cpu_init();
        return use_avx2() && __builtin_cpu_supports("f16c");
    }();
    return chosen;
}
#endif

}  // namespace

void halves_to_floats(const uint16_t* src, int n, float* out) {
#ifdef CONVT_X86_DISPATCH
    if (use_f16c()) return halves_to_floats_f16c(src, n, out);
#endif
    for (int i = 0; i < n; ++i) out[i] = detail::half_to_float(src[i]);
}

void floats_to_halves(const float* src, int n, uint16_t* out) {
#ifdef CONVT_X86_DISPATCH
    if (use_f16c()) return floats_to_halves_f16c(src, n, out);
#endif
    for (int i = 0; i < n; ++i) out[i] = detail::float_to_half(src[i]);
}

void load_row(const void* base, int32_t type, int64_t first, int64_t step, int64_t count,
              float* out) {
    if (type == CONVT_TYPE_F32) {
        const float* in = static_cast<const float*>(base) + first;
        if (step == 1)
            std::memcpy(out, in, sizeof(float) * size_t(count));
        else
            for (int64_t i = 0; i < count; ++i) out[i] = in[i * step];
    } else if (type == CONVT_TYPE_F16) {
        const uint16_t* in = static_cast<const uint16_t*>(base) + first;
        uint16_t bits[kChunk];
        for (int64_t i = 0; i < count; i += kChunk) {
            const int n = static_cast<int>(std::min<int64_t>(kChunk, count - i));
            const uint16_t* from = in + i * step;
            if (step != 1) {
                for (int j = 0; j < n; ++j) bits[j] = from[j * step];
                from = bits;
            }
            halves_to_floats(from, n, out + i);
        }
    } else {
        for (int64_t i = 0; i < count; ++i) out[i] = load<float>(base, type, first + i * step);
    }
}

void store_row(void* base, int32_t type, int64_t first, int64_t step, int64_t count,
               const float* in) {
    if (type == CONVT_TYPE_F32) {
        float* out = static_cast<float*>(base) + first;
        if (step == 1)
            std::memcpy(out, in, sizeof(float) * size_t(count));
        else
            for (int64_t i = 0; i < count; ++i) out[i * step] = in[i];
    } else if (type == CONVT_TYPE_F16) {
        uint16_t* out = static_cast<uint16_t*>(base) + first;
        uint16_t bits[kChunk];
        for (int64_t i = 0; i < count; i += kChunk) {
            const int n = static_cast<int>(std::min<int64_t>(kChunk, count - i));
            if (step == 1) {
                floats_to_halves(in + i, n, out + i);
                continue;
            }
            floats_to_halves(in + i, n, bits);
            for (int j = 0; j < n; ++j) out[(i + j) * step] = bits[j];
        }
    } else {
        for (int64_t i = 0; i < count; ++i) store<float>(base, type, first + i * step, in[i]);
    }
}

void load_pixels(const void* base, int32_t type, int64_t at, int64_t pixels, int64_t pixel_step,
                 int64_t channels, float* out) {
    if (pixel_step == channels) return load_row(base, type, at, 1, pixels * channels, out);
    for (int64_t j = 0; j < pixels; ++j)
        load_row(base, type, at + j * pixel_step, 1, channels, out + j * channels);
}

void store_pixels(void* base, int32_t type, int64_t at, int64_t pixels, int64_t pixel_step,
                  int64_t channels, const float* in) {
    if (pixel_step == channels) return store_row(base, type, at, 1, pixels * channels, in);
    for (int64_t j = 0; j < pixels; ++j)
        store_row(base, type, at + j * pixel_step, 1, channels, in + j * channels);
}

}  // namespace convt::cpu
