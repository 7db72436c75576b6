// One input and one output channel per group (depthwise layers): direct loops over each
// channel's plane, one row at a time, with every stride phase of a row kept contiguous so the
// inner loops are unit-stride vector loops. The GEMM paths degenerate here (1 x 1 tiles).
#pragma once

#include "../../../metal/convt_params.h"
#include "../core/backend.h"

namespace convt::cpu {

/// Weights of a depthwise layer: [channel][ky][kx], also tap-major ([ky][kx][channel], for
/// channel-contiguous tensors), bias [channel], PReLU slopes or empty.
struct DepthwiseWeights {
    std::vector<float> taps, by_tap, bias, slopes;
};

void pack_depthwise_weights(const detail::PreparedWeights& weights, DepthwiseWeights& out);

/// Depthwise (one channel in and out per group), float images and accumulation.
bool depthwise_fits(const ConvtParams& p);

void forward_depthwise(const ConvtParams& p, const DepthwiseWeights& w, const void* src, void* dst);
void backward_data_depthwise(const ConvtParams& p, const DepthwiseWeights& w, const void* dy,
                             void* dx);
/// dW per channel, summed image by image, row by row, in eight lanes by column (a fixed order).
void backward_weights_depthwise(const ConvtParams& p, const void* x, const void* dy,
                                const detail::GradientOutput& out);
/// dX (params `pd`: dX in the source role), float32 dW (params `pw`: X in the source role) and,
/// when `out.bias`, float32 dB in one pass over dY, with the same results as the two functions
/// above and CpuBackend's dB.
void backward_depthwise(const ConvtParams& pd, const DepthwiseWeights& w, const void* dy, void* dx,
                        const ConvtParams& pw, const void* x, const detail::GradientOutput& out);

}  // namespace convt::cpu
