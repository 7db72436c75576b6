// Depthwise layers (one channel in and out per group) whose tensors keep channels contiguous
// (NHWC, float32 or fp16): each pixel's taps as vector loops over the channels. The
// plane-by-plane loops of depthwise.cpp read such rows one strided element at a time, every
// line once a channel (dw_k4s2's NHWC dW took 16x its NCHW time, its fp16 forward 17x). fp16
// rows are converted to float a row at a time as they are needed.
#pragma once

#include "../../../metal/convt_params.h"
#include "../core/backend.h"
#include "depthwise.h"

namespace convt::cpu {

/// Depthwise, float32 or fp16 images, channels contiguous in both tensors.
bool depthwise_nhwc_fits(const ConvtParams& p);

/// The forward: bias plus the taps that land on each output pixel, in tap order (ky, then kx),
/// then the neuron.
void forward_depthwise_nhwc(const ConvtParams& p, const DepthwiseWeights& w, const void* src,
                            void* dst);
/// dX (params with dX in the source role): each dX pixel's taps in tap order.
void backward_data_depthwise_nhwc(const ConvtParams& p, const DepthwiseWeights& w, const void* dy,
                                  void* dx);
/// Float32 dW (OHWI: [channel][ky][kx]): each part of the images (image, row range; the cuts
/// depend on the batch alone) sums its source rows, a row's products first, then the parts
/// are added in order: the same bits for any thread count.
void backward_weights_depthwise_nhwc(const ConvtParams& p, const void* x, const void* dy,
                                     const detail::GradientOutput& out);

}  // namespace convt::cpu
