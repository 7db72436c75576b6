// fp16 <-> fp32 for short rows: F16C where the CPU kernels use AVX2, else per element. The
// baseline x86-64 ISA has no conversion instruction, so per-element conversions are library
// calls there.
#pragma once

#include <cstdint>

namespace convt::cpu {

/// out[i] = src[i] (IEEE half bits) as float, for i < n.
void halves_to_floats(const uint16_t* src, int n, float* out);
/// out[i] = src[i] rounded to the nearest half (ties to even), as IEEE half bits, for i < n.
void floats_to_halves(const float* src, int n, uint16_t* out);
/// out[i] = element first + i * step of a tensor of element type `type` (CONVT_TYPE_*), as
/// float, for i < count. Half rows are converted a chunk at a time (strided ones gathered as
/// bits first): one library call an element cost 8-17x on channels-last fp16 layers.
void load_row(const void* base, int32_t type, int64_t first, int64_t step, int64_t count,
              float* out);
/// Element first + i * step of the tensor = in[i] in its element type, for i < count (half
/// rows converted a chunk at a time, then scattered as bits when strided).
void store_row(void* base, int32_t type, int64_t first, int64_t step, int64_t count,
               const float* in);
/// A row of `pixels` pixels whose `channels` channels are contiguous, pixel_step elements
/// apart, from element `at`, as dense floats out[pixel * channels + channel] (one run when the
/// pixels are dense too).
void load_pixels(const void* base, int32_t type, int64_t at, int64_t pixels, int64_t pixel_step,
                 int64_t channels, float* out);
/// The reverse of load_pixels: dense floats to a row's pixels in the tensor's element type.
void store_pixels(void* base, int32_t type, int64_t at, int64_t pixels, int64_t pixel_step,
                  int64_t channels, const float* in);

}  // namespace convt::cpu
