// fp16 <-> fp32 for short rows: F16C where the CPU kernels use AVX2, else per element. The
// baseline x86-64 ISA has no conversion instruction, so per-element conversions are library
// calls there.
#pragma once

#include <cstdint>

namespace convt::cpu {

/// out[i] = src[i] (IEEE half bits) as float, for i < n.
void halves_to_floats(const uint16_t* src, int n, float* out);
/// out[i] = src[i] rounded to the nearest half (ties to even), as IEEE half bits, for i < n.
void floats_to_halves(const float* src, int n, uint16_t* out);

}  // namespace convt::cpu
