#include "convt/geometry.h"

#include <algorithm>

#include "check.h"

namespace convt {
namespace geometry {
namespace {

int size_style(uint32_t method) {
    const int style = static_cast<int>((method >> 4) & 3) - 1;
    detail::require(style <= 1, "padding method size bits", method & padding_method::SizeMask,
                    "SizeValidOnly (0x00), SizeSame (0x10) or SizeFull (0x20)");
    return style;
}

// Shared by forward and transpose sizing: where the window starts given the read slack.
int64_t aligned_offset(uint32_t method, bool y_axis, int64_t keff, int64_t extra) {
    const int64_t corr = keff >> 1;
    switch (method & padding_method::AlignMask) {
        case padding_method::AlignCentered: {
            const uint32_t remainder_bit = y_axis ? 0x8 : 0x4;
            const int64_t r = (method & remainder_bit) ? 0 : 1;
            return corr - ((extra + r) >> 1);
        }
        case padding_method::AlignTopLeft:
            return corr;
        case padding_method::AlignBottomRight:
            return corr - extra;
        default:
            return 0;
    }
}

}  // namespace

int64_t dest_size_reverse(int64_t n, int64_t stride, int64_t keff, int style) {
    return std::max<int64_t>(0, (n - 1) * stride + 1 + style * (keff - 1));
}

AxisPlacement transpose_placement(uint32_t method, bool y_axis, int64_t n, int64_t stride,
                                  int64_t keff) {
    const int64_t expanded = (n - 1) * stride + 1;
    AxisPlacement p;
    p.size = dest_size_reverse(n, stride, keff, size_style(method));
    const int64_t extra = keff + (p.size - 1) - expanded;
    p.total_offset = aligned_offset(method, y_axis, keff, extra);
    return p;
}

AxisPlacement forward_placement(uint32_t method, bool y_axis, int64_t n, int64_t stride,
                                int64_t keff) {
    const int64_t span = std::max<int64_t>(0, n + size_style(method) * (keff - 1));
    AxisPlacement p;
    p.size = (span + stride - 1) / stride;
    const int64_t extra = keff + (p.size - 1) * stride - n;
    p.total_offset = aligned_offset(method, y_axis, keff, extra);
    return p;
}

std::pair<int64_t, int64_t> split_total_offset(int64_t total_offset, int64_t stride) {
    int64_t q = total_offset / stride;
    if (total_offset % stride != 0 && total_offset < 0) --q;  // floor division
    return {q, total_offset - q * stride};
}

int64_t autoencoder_total_offset(int64_t kernel, int64_t forward_offset) {
    return (kernel % 2 == 0 ? 1 : 0) - forward_offset;
}

int64_t torch_total_offset(int64_t keff, int64_t pad_begin) {
    return (keff >> 1) - keff + 1 + pad_begin;
}

int64_t torch_output_size(int64_t n, int64_t stride, int64_t pad_begin, int64_t pad_end,
                          int64_t keff, int64_t output_padding) {
    return (n - 1) * stride - pad_begin - pad_end + keff + output_padding;
}

}  // namespace geometry

ConvolutionGradientState ConvolutionGradientState::for_forward(
    int64_t source_width, int64_t source_height, int64_t kernel_width, int64_t kernel_height,
    int64_t stride_x, int64_t stride_y, int64_t dilation_x, int64_t dilation_y, uint32_t method) {
    using detail::require_int32;
    using detail::require_positive;
    require_int32("source_width", source_width);
    require_int32("source_height", source_height);
    require_positive("kernel_width", kernel_width);
    require_positive("kernel_height", kernel_height);
    require_positive("stride_x", stride_x);
    require_positive("stride_y", stride_y);
    require_positive("dilation_x", dilation_x);
    require_positive("dilation_y", dilation_y);
    for (auto [name, v] : {std::pair{"kernel_width", kernel_width},
                           {"kernel_height", kernel_height},
                           {"stride_x", stride_x},
                           {"stride_y", stride_y},
                           {"dilation_x", dilation_x},
                           {"dilation_y", dilation_y}})
        require_int32(name, v);
    ConvolutionGradientState s;
    s.source_width = source_width, s.source_height = source_height;
    s.kernel_width = kernel_width, s.kernel_height = kernel_height;
    s.stride_x = stride_x, s.stride_y = stride_y;
    s.dilation_x = dilation_x, s.dilation_y = dilation_y;
    const auto px =
        geometry::forward_placement(method, false, source_width, stride_x,
                                    geometry::effective_kernel(kernel_width, dilation_x));
    const auto py =
        geometry::forward_placement(method, true, source_height, stride_y,
                                    geometry::effective_kernel(kernel_height, dilation_y));
    s.offset_x = px.total_offset, s.destination_width = px.size;
    s.offset_y = py.total_offset, s.destination_height = py.size;
    return s;
}

}  // namespace convt
