// Layers whose stride phases are 3x3 (stride 1) or 2x2 (a 2s x 2s kernel at stride s) by
// Winograd's minimal filtering, F(4x4, 3x3) (at most 128 channels each way; F(2x2, 3x3) past
// that, whose float32 error is smaller) and F(2x2, 2x2): each 4x4 block of outputs costs 36
// multiply-adds per channel pair instead of 144 (2x2 blocks: 16 instead of 36, 9 instead of 16).
// An input patch and the kernel are each taken to the points (B^T d B and G g G^T), the points
// multiplied channel against channel as one GEMM a point on the register-tiled kernel, and the
// block of outputs read back (A^T m A). The forward and dX are such correlations; dW, F(2x2,
// 3x3) transposed. 1-D layers (one kernel row) run F(4, 3) (F(2, 3) past 128 channels) and
// F(2, 2) along the row in one-row tiles. Only finite weights are packed, and a dispatch whose
// result holds an infinity or NaN is recomputed by the exact path (the transforms subtract, so
// Inf - Inf would make NaN where the contract has Inf).
#pragma once

#include <cstdint>
#include <vector>

#include "../../../metal/convt_params.h"
#include "../core/backend.h"
#include "conv_gemm.h"

namespace convt::cpu {

/// A layer's kernels at the points (of F(m x m, r x r)), U = G g G^T for each channel pair and tap
/// class (the taps one stride phase reads: k = c, c + s, ...), packed as the micro-kernel's A
/// operand. The forward's outputs are the layer's output channels and its depth the input channels:
/// [class][g][point][out tile][icl][kMr]. dX's outputs are the input channels, its depth every
/// class's output channels, with the kernel turned 180 degrees: [g][point][in tile][class, ocl]
/// [kMr], each point over its own classes (backward_classes: those not zero by an odd kernel's
/// padding), starting backward_point_offset[point] floats into its group's.
struct WinogradWeights : PackedShape {
    int r = 0, s = 0;  // taps per axis and phase (3 or 2), and the stride they were packed for
    int ty = 2;        // 2: square tiles; 1: one-row tiles, for one kernel row (1-D layers)
    int m = 2;         // outputs a tile along a row: 4 (F(4x4, 3x3)) or 2
    bool odd = false;  // a (2s - 1)-tap kernel taken as a 2s-tap one whose last taps are zero
    int forward_tiles = 0, backward_tiles = 0;
    int64_t forward_class_floats = 0;
    std::vector<float> forward, backward;
    std::vector<std::vector<int>> backward_classes;  // [point]: the tap classes it reads
    std::vector<int64_t> backward_point_offset;      // [point + 1], within a group
};

/// Whether a layer's weights are worth packing: a 3x3 kernel (for stride 1) or a 2s x 2s one
/// (for stride s), and enough channels both ways that the GEMMs outweigh the transforms (the
/// forward's and dX's packs are each made only where they pay; an empty one is not used).
bool winograd_weights_wanted(const detail::PreparedWeights& pw);
void pack_winograd_weights(const detail::PreparedWeights& pw, WinogradWeights& out);

/// dX of a square (2s - 1)-tap kernel at stride s (vae_dec: 3x3 at stride 2) by F(2x2, 2x2) per
/// stride phase, as if the kernel were 2s taps a side with its last ones zero; each point then
/// skips the phases whose points are zero by that padding (25 class points of 36 at 3x3), so a
/// 2x2 block of dX costs 25 multiply-adds per channel pair instead of 36. Packed only when a
/// dispatch at that stride comes (the weights do not know their stride), from `weights`
/// [g][ky][kx][ocl][icl]; the same channel bounds as the 2x2-phase dX.
bool winograd_odd_wanted(int groups, int og, int ig, int64_t kernel_h, int64_t kernel_w,
                         int stride);
void pack_winograd_odd(int groups, int og, int ig, int stride, const float* weights,
                       WinogradWeights& out);

/// Whether the forward (dX) of this dispatch can run through the transforms: its weights packed
/// (see winograd.cpp for when they are) for the dispatch's stride (and, above stride 1,
/// dilation 1), float32 or fp16 tensors (fp16 patch rows converted a row at a time before the
/// input transform, output rows as they are stored), float accumulation.
bool forward_winograd_fits(const ConvtParams& p, const WinogradWeights& w);
bool backward_data_winograd_fits(const ConvtParams& p, const WinogradWeights& w);

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
/// 2x2 tiles (A e A^T) times X's 4x4 patches (B^T d B), summed over tiles in a fixed order, then
/// G^T m G. False, with nothing written, when some weight came out non-finite.
bool backward_weights_winograd(const ConvtParams& p, const void* x, const void* dy,
                               const detail::GradientOutput& out);

}  // namespace convt::cpu
