// The 8 x 8 transpose that packs NCHW pixels into the GEMM's pixel-major panels, and turns dW
// into PyTorch's layout.
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

/// out[c * out_step + x] = in[x * pixel_step + c] for x < count, c < channels (channels <= 8):
/// pixels' channel runs (channels contiguous, NHWC) as channel rows, by 8 x 8 transposes when
/// channels == 8 (element by element, strided, every pixel's line was read once a channel).
void gather_channels(const float* in, int64_t pixel_step, int64_t count, int channels, float* out,
                     int64_t out_step);

/// One output channel's dW from OHWI to PyTorch's kernel windows, input channels [i0, i1):
/// block[t * ig + i] (tap t) goes to out[i * out_n + taps - 1 - t] (the window's element: the
/// kernel turned back), 8 taps x 8 channels at a time, so each write run is a window.
void taps_to_windows(const float* block, int64_t taps, int64_t ig, int64_t i0, int64_t i1,
                     float* out, int64_t out_n);

}  // namespace convt::cpu
