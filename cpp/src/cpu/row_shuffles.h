// Rows split into, and put together from, their stride phases (even and odd columns at stride
// 2). AVX2 shuffles where use_avx2(), else plain loops.
#pragma once

#include <cstdint>

namespace convt::cpu {

/// out[2j] = even[j], out[2j + 1] = odd[j], for the n entries of out.
void interleave2(const float* even, const float* odd, int64_t n, float* out);
/// interleave2 with non-temporal stores (x86 AVX2, out 16-byte aligned; call stream_fence()
/// before other threads read out); false, nothing written, where it cannot.
bool interleave2_stream(const float* even, const float* odd, int64_t n, float* out);
/// out[s * j + r] = phase[r][j] for r < s and j < count (s * count entries of out); s = 2 goes
/// through interleave2.
void interleave(const float* const* phase, int s, int64_t count, float* out);
/// even[j] = in[2j], odd[j] = in[2j + 1], for the n entries of in.
void deinterleave2(const float* in, int64_t n, float* even, float* odd);

}  // namespace convt::cpu
