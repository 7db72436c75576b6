// The CUDA backend: the kernels in metal/*.metal compiled by nvcc through metal/prelude_cuda.h.
#pragma once

#include <memory>

#include "../core/backend.h"

namespace convt::detail {

/// Throws std::runtime_error with the driver's message if no CUDA device can be used.
std::shared_ptr<Backend> make_cuda_backend();

}  // namespace convt::detail
