// dX of channels-contiguous float32 tensors (NHWC) with pixels as the register tile's rows: six
// dX pixels of a row x 16 input channels, summed over every tap's output channels with dY read
// in place (a pixel's channels are consecutive floats) against weights packed per tap, and
// stored straight into dX's pixels. The channel-major GEMM path (conv_gemm.cpp) copies dY into a
// channel-major footprint and transposes its tiles back into pixels (a quarter of grp4's NHWC
// dX).
#pragma once

#include "../../../metal/convt_params.h"
#include "conv_gemm.h"

namespace convt::cpu {

/// Float32 dY and dX, both channels-contiguous, and enough output channels a group that each
/// tap's segment is a few steps deep.
bool pixel_rows_dx_fits(const ConvtParams& p);

/// dX (params with dX in the source role), every element written: each dX pixel's sum over the
/// taps that reach dY, in tap order (ky, then kx), each over the output channels in order.
void backward_data_pixel_rows(const ConvtParams& p, const GemmWeights& w, const void* dy, void* dx);

}  // namespace convt::cpu
