// The forward for few output channels per group, in the scatter form: one GEMM per source row
// whose register-tile rows are (output channel, tap) pairs, M = out_per_group x taps (full
// tiles, where the phase-by-phase GEMM filled 1 to 3 of 6 rows), K the input channels and N the
// row's pixels; each product row is then added into the destination row it lands on, kept split
// by stride phase so that every addition is a run. Only real taps are added: no zero padding is
// multiplied, so infinite weights stay exact.
#pragma once

#include <cstdint>
#include <vector>

#include "../../../metal/convt_params.h"
#include "../core/backend.h"
#include "conv_gemm.h"

namespace convt::cpu {

/// A layer's float weights as the scatter form's A operand.
struct ScatterWeights : PackedShape {
    int tiles = 0;              // register tiles over out_per_group * taps rows
    std::vector<float> packed;  // [g][tile][icl][kMr], row m = ocl * taps + tap
    std::vector<float> bias;    // [O], zeros when the layer has none
    std::vector<float> slopes;  // [O] PReLU slopes, else empty
};

/// Whether a layer's weights are worth packing for the scatter form (few output channels per
/// group, enough taps to fill a register tile).
bool scatter_weights_wanted(const detail::PreparedWeights& pw);
void pack_scatter_weights(const detail::PreparedWeights& pw, ScatterWeights& out);

/// Whether the scatter form serves this dispatch (float accumulation and images, weights packed).
bool forward_scatter_fits(const ConvtParams& p, const ScatterWeights& w);

/// dst = bias + the sum over source pixels and taps of W * X, then the neuron; tasks own
/// blocks of destination rows (each sums its contributions in source-row order, so results do
/// not depend on the thread count).
void forward_scatter(const ConvtParams& p, const ScatterWeights& w, const void* src, void* dst);

}  // namespace convt::cpu
