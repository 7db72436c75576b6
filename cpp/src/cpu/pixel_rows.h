// The forward and dX of channels-contiguous float32 or fp16 tensors (NHWC) with pixels as the
// register tile's rows: six pixels of a row x 16 channels, summed over every tap's channels with
// the source (X, or dY) read in place, a pixel's channels being consecutive floats, against
// weights packed per tap, and stored straight into the result's pixels. fp16 rows are converted
// a row at a time: the source rows an output row reads into floats, the output row from floats
// as it is stored. The channel-major GEMM paths (conv_gemm.cpp) copy the source into a
// channel-major footprint and transpose their tiles back into pixels (a quarter of grp4's NHWC
// dX). Tasks are runs of rows of an image; while a row's products run, the source rows the next
// row adds are prefetched.
#pragma once

#include "../../../metal/convt_params.h"
#include "conv_gemm.h"

namespace convt::cpu {

/// Float32 or fp16 images, both channels-contiguous, and enough input channels a group that each
/// tap's segment is a few steps deep. Not with the NEON kernels: there is no NEON strided-segment
/// kernel (the portable one would run), so the NEON GEMM paths keep these layers.
bool pixel_rows_forward_fits(const ConvtParams& p);

/// Whether the forward, fitting, runs faster by pixel rows than by Winograd tiles: few channels
/// each way.
bool pixel_rows_forward_before_winograd(const ConvtParams& p);

/// The forward: each output pixel's bias plus its taps' products, in tap order (ky, then kx),
/// each over the input channels in order (the GEMM forward's order), then the neuron.
void forward_pixel_rows(const ConvtParams& p, const GemmWeights& w, const void* src, void* dst);

/// Float32 or fp16 dY and dX, both channels-contiguous, and enough output channels a group that
/// each tap's segment is a few steps deep; not with the NEON kernels (as the forward).
bool pixel_rows_dx_fits(const ConvtParams& p);

/// Whether dX (params with dX in the source role), fitting, runs faster by pixel rows than by
/// Winograd tiles: few channels one way (more for odd kernels, k = 2s - 1), the input channels
/// filling their panels.
bool pixel_rows_dx_before_winograd(const ConvtParams& p);

/// dX (params with dX in the source role), every element written: each dX pixel's sum over the
/// taps that reach dY, ky in order and within a kernel row kx from the last down (the order of
/// the dY pixels they read), each over the output channels in order.
void backward_data_pixel_rows(const ConvtParams& p, const GemmWeights& w, const void* dy, void* dx);

}  // namespace convt::cpu
