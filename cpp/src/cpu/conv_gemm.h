// The CPU's blocked GEMM paths (float accumulation): forward, dX and dW as implicit GEMMs whose
// wide side is the pixels, gathered tile by tile from the tensors in place (no im2col/col2im
// buffer), against weights packed once per layer.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

#include "../../../metal/convt_params.h"
#include "../core/backend.h"

namespace convt::cpu {

/// The layer dimensions every packed weight layout records.
struct PackedShape {
    int groups = 0, taps = 0, in_per_group = 0, out_per_group = 0;
    void take_shape(const detail::PreparedWeights& pw) {
        groups = static_cast<int>(pw.groups);
        taps = static_cast<int>(pw.kernel_h * pw.kernel_w);
        in_per_group = static_cast<int>(pw.in_per_group);
        out_per_group = static_cast<int>(pw.out_channels / pw.groups);
    }
};

/// A layer's float weights in the micro-kernel's panel order. Channels are padded with zero
/// weights to whole register tiles.
struct GemmWeights : PackedShape {
    int out_tiles = 0, in_tiles = 0;  // register tiles over O/groups and I/groups
    std::vector<float> forward;       // [g][tap][out tile][icl][kMr]
    // [g][tap][in tile][ocl][kMr], or [g][in tile][tap][ocl][kMr] for few output channels (a
    // tile's taps then run as one segment); element (g, tap, tile, ocl, i) at g * taps *
    // in_tiles * out_per_group * kMr + tap * backward_tap_step + tile * backward_tile_step +
    // ocl * kMr + i.
    std::vector<float> backward;
    int64_t backward_tap_step = 0, backward_tile_step = 0;
    std::vector<float> bias;    // [O], zeros when the layer has none
    std::vector<float> slopes;  // [O] PReLU slopes, else empty
    // The forward's weights with every tap's output channels stacked, row tap * out_per_group +
    // ocl: [g][tile over taps * out_per_group][icl][kMr]. Packed from `forward` at the first
    // dispatch whose stride phases stack (forward_gemm), so layers that never do keep no copy.
    mutable std::once_flag stacked_once;
    mutable std::vector<float> stacked;
    // dX's weights with input channels as the register tile's columns, for pixel rows
    // (pixel_rows.cpp): [g][tap][in panel][ocl][kNr], zeros past in_per_group. Packed from
    // `backward` at the first such dispatch.
    mutable std::once_flag by_pixel_once;
    mutable std::vector<float> by_pixel;
    // The forward's, likewise with output channels as the columns: [g][tap][out panel][icl][kNr].
    mutable std::once_flag forward_by_pixel_once;
    mutable std::vector<float> forward_by_pixel;
};

void pack_gemm_weights(const detail::PreparedWeights& weights, GemmWeights& out);
/// A layer's bias ([O], zeros when it has none) and PReLU slopes ([O], else empty) as floats.
void pack_epilogue(const detail::PreparedWeights& weights, std::vector<float>& bias,
                   std::vector<float>& slopes);

/// Whether the GEMM paths serve this dispatch (float accumulation, enough channels).
bool forward_gemm_fits(const ConvtParams& p);
bool backward_data_gemm_fits(const ConvtParams& p);
bool backward_weights_gemm_fits(const ConvtParams& p);

/// The forward: phase by phase, C[oc][pixel] = bias + sum over the phase's taps and icl of
/// W * X, then the neuron, stored to dst. Phases of one tap each over the same source pixels (a
/// kernel the size of the stride) run as one GEMM, their rows stacked (`stacked`).
void forward_gemm(const ConvtParams& p, const GemmWeights& w, const void* src, void* dst);
/// dX[icl][pixel] = sum over taps and ocl of W * dY (an ordinary strided convolution of dY).
void backward_data_gemm(const ConvtParams& p, const GemmWeights& w, const void* dy, void* dx);
/// dW[g][ocl][tap][icl] = sum over the pixels the tap reaches, in image-row-column order, of
/// dY * X; Float32 output. Each weight is summed by one task: deterministic.
void backward_weights_gemm(const ConvtParams& p, const void* x, const void* dy,
                           const detail::GradientOutput& out);

/// At most three output channels per group, eight or more inputs: dW of source rows
/// [row_begin, row_end) of image n alone, written to `partial` (dense OHWI floats; the caller
/// sums the parts in a fixed order). One GEMM over the pixels: A is X's channel rows, read in
/// place where fp32 rows run on (NCHW, NHWC), B the dY each pixel's taps meet, a column per
/// (ky, oc, kx), so taps, not padding, fill the register tile's 16 columns.
bool backward_weights_taps_fits(const ConvtParams& p);
void backward_weights_taps_image(const ConvtParams& p, const void* x, const void* dy, int64_t n,
                                 int64_t row_begin, int64_t row_end, float* partial);

}  // namespace convt::cpu
