// The Metal backend: the kernels in metal/*.metal, driven through metal-cpp. On Linux the same
// source compiles against the simulation's metal-cpp facade (device kind "metal-sim").
#pragma once

#include <memory>
#include <string>

#include "../core/backend.h"

namespace convt::detail {

/// Throws std::runtime_error with Metal's message if no device or library can be made.
std::shared_ptr<Backend> make_metal_backend(const std::string& kind);

}  // namespace convt::detail
