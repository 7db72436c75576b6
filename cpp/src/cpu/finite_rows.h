// Whether a row of floats holds an infinite or NaN value: the few paths that multiply zero
// padding by the data test for it and take an exact loop for such rows (0 * Inf is NaN).
#pragma once

#include <cstdint>

namespace convt::cpu {

/// True when none of v[0, n) is infinite or NaN. AVX2 where use_avx2(), else a plain loop.
bool all_finite(const float* v, int64_t n);

}  // namespace convt::cpu
