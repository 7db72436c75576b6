// The 8 x 8 transpose that packs NCHW pixels into the GEMM's pixel-major panels.
#pragma once

#include <cstdint>

namespace convt::cpu {

/// out[i * out_step + c] = src[c * channel_stride + i * pixel_step] for i < 8, c < channels
/// (channels <= 8; pixel_step 1 or 2). AVX2 where use_avx2(), else plain loops. With fewer than
/// 8 channels it may also write out[i * out_step + c] for channels <= c < 8, garbage the caller
/// must overwrite or zero: pixel i's floats past `channels` when out_step >= 8, else (for i < 7)
/// the start of pixel i + 1, which the same call then writes. (Masked stores, which would avoid
/// it, are microcoded on AMD cores: they made the transposes a quarter of vae_dec's dW.)
void transpose8(const float* src, int64_t channel_stride, int64_t pixel_step, int channels,
                float* out, int64_t out_step);

}  // namespace convt::cpu
