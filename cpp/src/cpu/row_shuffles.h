// Rows split into, and put together from, their two stride phases (even and odd columns): the
// stride-2 layers' rows. AVX2 shuffles where use_avx2(), else plain loops.
#pragma once

#include <cstdint>

namespace convt::cpu {

/// out[2j] = even[j], out[2j + 1] = odd[j], for the n entries of out.
void interleave2(const float* even, const float* odd, int64_t n, float* out);
/// even[j] = in[2j], odd[j] = in[2j + 1], for the n entries of in.
void deinterleave2(const float* in, int64_t n, float* even, float* odd);

}  // namespace convt::cpu
