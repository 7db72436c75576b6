// IEEE fp16 <-> fp32 on the host (round to nearest even).
#pragma once

#include <cstdint>
#include <cstring>

namespace convt::detail {

inline float half_to_float(uint16_t bits) {
    _Float16 h;
    std::memcpy(&h, &bits, 2);
    return static_cast<float>(h);
}

inline uint16_t float_to_half(float f) {
    _Float16 h = static_cast<_Float16>(f);
    uint16_t bits;
    std::memcpy(&bits, &h, 2);
    return bits;
}

/// f rounded to the nearest fp16 value, returned as float.
inline float round_to_half(float f) { return static_cast<float>(static_cast<_Float16>(f)); }

}  // namespace convt::detail
