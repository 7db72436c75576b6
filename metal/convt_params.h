// Parameters of one transposed-convolution dispatch, resolved once by the core's Plan.
// Shared verbatim by host code (C++) and kernels (MSL, CUDA, host simulation): fixed-width
// fields only, 8-byte aligned, size checked by static_assert on every side.
#ifndef CONVT_PARAMS_H
#define CONVT_PARAMS_H

#if defined(__METAL_VERSION__)
typedef int convt_i32;
typedef long convt_i64;
#else
#include <stdint.h>
typedef int32_t convt_i32;
typedef int64_t convt_i64;
#endif

// Scalar type codes used in ConvtParams::*_type.
#define CONVT_TYPE_F32 0
#define CONVT_TYPE_F16 1
#define CONVT_TYPE_F64 2  // CPU only

struct ConvtParams {
    // Filter (per axis: kernel, stride = upsampling factor, dilation).
    convt_i32 kernel_w, kernel_h;
    convt_i32 stride_x, stride_y;
    convt_i32 dilation_x, dilation_y;
    convt_i32 groups;
    convt_i32 in_channels;    // I: channels read from the source
    convt_i32 out_channels;   // O: channels written to the destination
    convt_i32 in_per_group;   // I / groups
    convt_i32 out_per_group;  // O / groups
    convt_i32 src_w, src_h;   // source spatial size
    // First tap of destination pixel (clip_x, clip_y) in expanded-image coordinates:
    // T - (keff >> 1), with T = offset * stride + kernelOffset (spec §1.2).
    convt_i32 first_tap_x, first_tap_y;
    // Destination region written (clipRect ∩ destination bounds).
    convt_i32 clip_x, clip_y, clip_w, clip_h;
    convt_i32 num_images;  // images processed
    convt_i32 src_channel_offset, dst_channel_offset;
    convt_i32 neuron;  // convt::NeuronType
    convt_i32 has_bias;
    convt_i32 accumulate_half;  // 1: round the running sum to fp16 after every multiply-add
    convt_i32 src_type, dst_type, weight_type;  // CONVT_TYPE_*
    float neuron_a, neuron_b, neuron_c;
    convt_i32 reserved0;
    // Element offsets of the first processed image (src: offset.z, dst: clip.origin.z) and
    // element strides (N, C, H, W) of source and destination; 64-bit so no index overflows.
    convt_i64 src_base, dst_base;
    convt_i64 src_stride_n, src_stride_c, src_stride_h, src_stride_w;
    convt_i64 dst_stride_n, dst_stride_c, dst_stride_h, dst_stride_w;
};

#define CONVT_PARAMS_SIZE 208

#if !defined(__METAL_VERSION__) && defined(__cplusplus)
static_assert(sizeof(ConvtParams) == CONVT_PARAMS_SIZE, "ConvtParams layout changed");
#endif

#endif  // CONVT_PARAMS_H
