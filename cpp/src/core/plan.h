// Plan: validates one call's arguments and resolves all geometry into ConvtParams.
#pragma once

#include "backend.h"
#include "convt/tensor.h"

namespace convt::detail {

/// Everything that places the filter, in MPS terms, for one call.
struct Placement {
    int64_t stride_x = 1, stride_y = 1, dilation_x = 1, dilation_y = 1;
    int64_t total_offset_x = 0, total_offset_y = 0;  // T = offset * stride + kernelOffset
    Region clip = Region::no_clip();
    int64_t source_image = 0;  // offset.z
    int64_t source_channel_offset = 0, source_channel_max_count = INT64_MAX;
    int64_t destination_channel_offset = 0;
    AccumulatorPrecision accumulator = AccumulatorPrecision::Float;
};

/// Throws std::invalid_argument / convt::TypeError naming the offending argument.
/// The caller's names for the two views, used in messages. A destination that is only read
/// (dY in the gradient passes) skips the writability and aliasing checks.
struct ViewRoles {
    const char* source = "source";
    const char* destination = "destination";
    bool destination_written = true;
};

ConvtParams make_params(const PreparedWeights& weights, const Placement& placement,
                        const TensorView& source, const TensorView& destination,
                        const ViewRoles& roles = {});

/// A source or destination must be a float32/float16/float64 view with sizes below 2^31.
void check_image_view(const char* name, const TensorView& view);
/// A view convt writes: writable, and no two elements share memory.
void check_destination_view(const char* name, const TensorView& view);

}  // namespace convt::detail
