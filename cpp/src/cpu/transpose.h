// The 8 x 8 transpose that packs NCHW pixels into the GEMM's pixel-major panels.
#pragma once

#include <cstdint>

namespace convt::cpu {

/// out[i * out_step + c] = src[c * channel_stride + i * pixel_step] for i < 8, c < channels
/// (channels <= 8; pixel_step 1 or 2). AVX2 where use_avx2(), else plain loops.
void transpose8(const float* src, int64_t channel_stride, int64_t pixel_step, int channels,
                float* out, int64_t out_step);

}  // namespace convt::cpu
