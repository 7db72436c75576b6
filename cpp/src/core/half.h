// IEEE fp16 <-> fp32 on the host (round to nearest even).
#pragma once

#include <cstdint>
#include <cstring>

namespace convt::detail {

// GCC takes _Float16 in C++ on x86-64 but, before GCC 13, not on arm64, whose __fp16 is the same
// IEEE binary16 there (clang takes _Float16 on both).
#if defined(__aarch64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
using Half = __fp16;
#else
using Half = _Float16;
#endif

inline float half_to_float(uint16_t bits) {
    Half h;
    std::memcpy(&h, &bits, 2);
    return static_cast<float>(h);
}

inline uint16_t float_to_half(float f) {
    Half h = static_cast<Half>(f);
    uint16_t bits;
    std::memcpy(&bits, &h, 2);
    return bits;
}

/// f rounded to the nearest fp16 value, returned as float.
inline float round_to_half(float f) { return static_cast<float>(static_cast<Half>(f)); }

}  // namespace convt::detail
