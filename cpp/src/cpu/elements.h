// Reading and writing one element of a tensor whose element type is known only at run time.
#pragma once

#include <cstdint>

#include "../../../metal/convt_params.h"
#include "../core/half.h"

namespace convt::cpu {

/// Bytes of one element of a tensor of this type.
inline int64_t type_bytes(int32_t type) {
    return type == CONVT_TYPE_F16 ? 2 : type == CONVT_TYPE_F64 ? 8 : 4;
}

/// Float32 or fp16: the element types the float-accumulating fast paths read and write.
inline bool float_or_half(int32_t type) { return type == CONVT_TYPE_F32 || type == CONVT_TYPE_F16; }

template <typename T>
inline T load(const void* base, int32_t type, int64_t i) {
    switch (type) {
        case CONVT_TYPE_F16:
            return static_cast<T>(detail::half_to_float(static_cast<const uint16_t*>(base)[i]));
        case CONVT_TYPE_F64:
            return static_cast<T>(static_cast<const double*>(base)[i]);
        default:
            return static_cast<T>(static_cast<const float*>(base)[i]);
    }
}

template <typename T>
inline void store(void* base, int32_t type, int64_t i, T v) {
    switch (type) {
        case CONVT_TYPE_F16:
            static_cast<uint16_t*>(base)[i] = detail::float_to_half(static_cast<float>(v));
            break;
        case CONVT_TYPE_F64:
            static_cast<double*>(base)[i] = static_cast<double>(v);
            break;
        default:
            static_cast<float*>(base)[i] = static_cast<float>(v);
    }
}

}  // namespace convt::cpu
