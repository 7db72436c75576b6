// Stride-1 3x3 layers by Winograd's minimal filtering, F(2x2, 3x3): each 2x2 block of outputs
// costs 16 multiply-adds per channel pair instead of 36. A 4x4 input patch and the 3x3 kernel
// are each taken to 16 points (B^T d B and G g G^T), the points multiplied channel against
// channel as 16 GEMMs on the register-tiled kernel, and the 2x2 outputs read back (A^T m A).
// The forward and dX are both such a correlation; only finite weights are packed, and a
// dispatch whose result holds an infinity or NaN is recomputed by the exact path (the transforms
// subtract, so Inf - Inf would make NaN where the contract has Inf).
#pragma once

#include <cstdint>
#include <vector>

#include "../../../metal/convt_params.h"
#include "../core/backend.h"
#include "conv_gemm.h"

namespace convt::cpu {

constexpr int kWinogradPoints = 16;  // (2 + 3 - 1)^2

/// A layer's kernels at the 16 points, U = G g G^T for each channel pair, packed as the
/// micro-kernel's A operand: [g][point][out tile][depth][kMr]. The forward's outputs are the
/// layer's output channels and its depth the input channels; dX's the reverse, with the kernel
/// turned 180 degrees.
struct WinogradWeights : PackedShape {
    int forward_tiles = 0, backward_tiles = 0;
    std::vector<float> forward, backward;
};

/// Whether a layer's weights are worth packing: a 3x3 kernel, enough channels both ways that
/// the GEMMs outweigh the transforms, and not depthwise.
bool winograd_weights_wanted(const detail::PreparedWeights& pw);
void pack_winograd_weights(const detail::PreparedWeights& pw, WinogradWeights& out);

/// Whether this dispatch can run through the transforms: weights packed, stride 1 both ways,
/// float32 tensors, float accumulation.
bool winograd_fits(const ConvtParams& p, const WinogradWeights& w);

/// The forward (bias and neuron from `bias`/`slopes`, as GemmWeights holds them). False when
/// some output came out non-finite: dst is then partly written and the caller must recompute it.
bool forward_winograd(const ConvtParams& p, const WinogradWeights& w,
                      const std::vector<float>& bias, const std::vector<float>& slopes,
                      const void* src, void* dst);
/// dX, every source pixel written; false as above.
bool backward_data_winograd(const ConvtParams& p, const WinogradWeights& w, const void* dy,
                            void* dx);

/// Whether dW of this dispatch can run through the transforms (needs no packed weights): a 3x3
/// kernel at stride 1, float32 tensors, float accumulation, 64 or more channels each way, and
/// partial sums of a bounded size.
bool backward_weights_winograd_fits(const ConvtParams& p);
/// dW (dense OHWI floats in out.weights, added to them with out.accumulate): the points of dY's
/// 2x2 tiles (A e A^T) times X's 4x4 patches (B^T d B), summed over tiles in a fixed order,
/// then G^T m G. False, with nothing written, when some weight came out non-finite.
bool backward_weights_winograd(const ConvtParams& p, const void* x, const void* dy,
                               const detail::GradientOutput& out);

}  // namespace convt::cpu
