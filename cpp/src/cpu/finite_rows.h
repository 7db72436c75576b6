// Whether a row of floats holds an infinite or NaN value: the few paths that multiply zero
// padding by the data test for it and take an exact loop for such rows (0 * Inf is NaN).
#pragma once

#include <cstdint>
#include <cstring>

namespace convt::cpu {

/// True when none of v[0, n) is infinite or NaN. AVX2 where use_avx2(), else a plain loop.
bool all_finite(const float* v, int64_t n);

/// all_finite as an inline loop that vectorises where it is inlined (the caller's target), for
/// short rows inside a hot loop, where all_finite's call costs more than the test (7% of dil2's
/// Winograd dX, 8-tile runs). An exponent of all ones carries into bit 31.
inline bool all_finite_inline(const float* v, int64_t n) {
    uint32_t carry = 0;
    for (int64_t i = 0; i < n; ++i) {
        uint32_t bits;
        std::memcpy(&bits, v + i, sizeof bits);
        carry |= (bits & 0x7f800000u) + 0x00800000u;
    }
    return (carry & 0x80000000u) == 0;
}

}  // namespace convt::cpu
