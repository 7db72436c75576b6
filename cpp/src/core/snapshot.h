// The forward geometry a gradient state records (spec §5.2).
#pragma once

#include "convt/descriptor.h"
#include "convt/tensor.h"
#include "plan.h"

namespace convt::detail {

struct ForwardSnapshot {
    Placement placement;               // everything that places the filter
    ConvolutionDescriptor descriptor;  // of the producing kernel: the weights' shape
    Offset offset;                     // the kernel's properties at creation
    int64_t kernel_offset_x = 0, kernel_offset_y = 0;
    Region clip_rect;
    TensorView source, destination;  // shapes (n, c, h, w) and dtypes; data is not kept
};

}  // namespace convt::detail
