// MPS sizing and placement rules (spec §1.3–§1.5, §1.8).
#pragma once

#include <cstdint>
#include <functional>
#include <utility>

#include "convt/types.h"

namespace convt {

/// What an auto-sizing encode will produce. offset_* / kernel_offset_* are the placement that is
/// written back onto the kernel object (MPS's quirk); a custom padding hook may change any field.
struct ImageDescriptor {
    int64_t width = 0, height = 0, feature_channels = 0, number_of_images = 0;
    int64_t offset_x = 0, offset_y = 0;
    int64_t kernel_offset_x = 0, kernel_offset_y = 0;
    DataType type = DataType::Float32;
};

/// MPSNNPadding analogue: method bits, plus a hook run when the Custom bit is set.
struct PaddingPolicy {
    uint32_t method = padding_method::Default;
    std::function<void(ImageDescriptor&)> custom;
};

/// The sizing record an MPSCNNConvolution (forward) leaves in its gradient state; enough to run
/// the transpose's autoencoder sizing (spec §1.5).
struct ConvolutionGradientState {
    int64_t source_width = 0, source_height = 0;
    int64_t kernel_width = 0, kernel_height = 0;
    int64_t stride_x = 1, stride_y = 1, dilation_x = 1, dilation_y = 1;
    int64_t offset_x = 0, offset_y = 0;
    int64_t destination_width = 0, destination_height = 0;

    /// The state a forward convolution with these parameters and padding would record.
    static ConvolutionGradientState for_forward(int64_t source_width, int64_t source_height,
                                                int64_t kernel_width, int64_t kernel_height,
                                                int64_t stride_x = 1, int64_t stride_y = 1,
                                                int64_t dilation_x = 1, int64_t dilation_y = 1,
                                                uint32_t method = padding_method::Default);
};

namespace geometry {

/// Size and total offset T (expanded-image coordinates) along one axis.
struct AxisPlacement {
    int64_t size = 0;
    int64_t total_offset = 0;
};

inline int64_t effective_kernel(int64_t k, int64_t dilation) { return dilation * (k - 1) + 1; }

/// DestSizeReverse: max(0, (n-1)*s + 1 + style*(keff-1)), style -1/0/+1 for Valid/Same/Full.
int64_t dest_size_reverse(int64_t n, int64_t stride, int64_t keff, int style);
/// Transpose placement from the padding method bits; y_axis picks the remainder bit.
AxisPlacement transpose_placement(uint32_t method, bool y_axis, int64_t n, int64_t stride,
                                  int64_t keff);
/// Forward-convolution placement (T is the forward offset; kernelOffset is 0).
AxisPlacement forward_placement(uint32_t method, bool y_axis, int64_t n, int64_t stride,
                                int64_t keff);
/// T -> (offset, kernelOffset) = (floor(T/s), T mod s).
std::pair<int64_t, int64_t> split_total_offset(int64_t total_offset, int64_t stride);
/// Autoencoder rule: T = (k even ? 1 : 0) - forward offset.
int64_t autoencoder_total_offset(int64_t kernel, int64_t forward_offset);
/// PyTorch/ONNX mapping: T = (keff>>1) - keff + 1 + pad_begin.
int64_t torch_total_offset(int64_t keff, int64_t pad_begin);
/// (n-1)*s - pad_begin - pad_end + keff + output_padding.
int64_t torch_output_size(int64_t n, int64_t stride, int64_t pad_begin, int64_t pad_end,
                          int64_t keff, int64_t output_padding);

}  // namespace geometry
}  // namespace convt
