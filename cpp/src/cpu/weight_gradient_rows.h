// dW for float tensors whose rows are contiguous (NCHW-like X): dot products along the rows,
// with no packing of X. The packed GEMM (conv_gemm.h) serves the other layouts.
#pragma once

#include "../../../metal/convt_params.h"
#include "../core/backend.h"

namespace convt::cpu {

/// Float X and dY, X rows contiguous, rows long enough that the vector loop dominates.
bool backward_weights_rows_fits(const ConvtParams& p);

/// dW[g][ocl][tap][icl] = sum over the pixels the tap reaches of dY * X (Float32 output). Each
/// weight is summed by one task in a fixed order: deterministic for any thread count.
void backward_weights_rows(const ConvtParams& p, const void* x, const void* dy,
                           const detail::GradientOutput& out);

}  // namespace convt::cpu
