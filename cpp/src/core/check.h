// Argument checks that name the parameter, its value and the rule.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

#include "convt/types.h"

namespace convt::detail {

template <typename... Parts>
std::string concat(const Parts&... parts) {
    std::ostringstream s;
    (s << ... << parts);
    return s.str();
}

/// Throws std::invalid_argument("<name> must be <rule>, got <value>") unless ok.
template <typename T>
void require(bool ok, const char* name, const T& value, const char* rule) {
    if (!ok) throw std::invalid_argument(concat(name, " must be ", rule, ", got ", value));
}

inline void require_positive(const char* name, int64_t value) {
    require(value >= 1, name, value, ">= 1");
}

/// Sizes are kept below 2^31 so that kernels can index per-axis with 32-bit integers.
inline void require_int32(const char* name, int64_t value) {
    require(value >= 0 && value <= INT32_MAX, name, value, "in [0, 2^31-1]");
}

}  // namespace convt::detail
