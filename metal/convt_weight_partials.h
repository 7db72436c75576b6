// Scratch layout of the weight-gradient kernels, which split their reductions into slices and
// never use atomics: fc_splits slices of the OHWI weights, then (when fc_has_bias)
// fc_bias_splits slices of the biases. convt_reduce_partials adds each element's slices in slice
// order, so results are the same run to run. fc_splits is 0 when no weight gradient is wanted.
#ifndef CONVT_WEIGHT_PARTIALS_H
#define CONVT_WEIGHT_PARTIALS_H

#include "convt_kernel.h"

inline long convt_dw_count(constant ConvtParams& p) {
    return long(p.out_channels) * fc_kernel_h * fc_kernel_w * p.in_per_group;
}

// Offset of weight slice s in the scratch buffer.
inline long convt_dw_slice(constant ConvtParams& p, uint s) { return long(s) * convt_dw_count(p); }

// Offset of bias slice s in the scratch buffer.
inline long convt_db_slice(constant ConvtParams& p, uint s) {
    return long(fc_splits) * convt_dw_count(p) + long(s) * p.out_channels;
}

#endif  // CONVT_WEIGHT_PARTIALS_H
