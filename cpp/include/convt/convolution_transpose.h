// MPSCNNConvolutionTranspose analogue.
#pragma once

#include <memory>
#include <vector>

#include "convt/data_source.h"
#include "convt/device.h"
#include "convt/geometry.h"
#include "convt/tensor.h"

namespace convt {

namespace detail {
struct LayerWeights;
}

class ConvolutionTranspose {
 public:
    /// Loads, validates and prepares the data source's weights once (BN fold, dequantisation,
    /// fp16 rounding) and uploads them to the device. Calls data_source->purge() afterwards.
    ConvolutionTranspose(Device device, std::shared_ptr<DataSource> data_source);
    ~ConvolutionTranspose();
    ConvolutionTranspose(const ConvolutionTranspose&) = delete;
    ConvolutionTranspose& operator=(const ConvolutionTranspose&) = delete;

    // Read-only MPS properties (copied from the descriptor).
    int64_t input_feature_channels() const { return desc_.input_feature_channels; }
    int64_t output_feature_channels() const { return desc_.output_feature_channels; }
    int64_t groups() const { return desc_.groups; }
    int64_t kernel_width() const { return desc_.kernel_width; }
    int64_t kernel_height() const { return desc_.kernel_height; }
    int64_t stride_in_pixels_x() const { return desc_.stride_in_pixels_x; }
    int64_t stride_in_pixels_y() const { return desc_.stride_in_pixels_y; }
    int64_t dilation_rate_x() const { return desc_.dilation_rate_x; }
    int64_t dilation_rate_y() const { return desc_.dilation_rate_y; }
    const ConvolutionDescriptor& descriptor() const { return desc_; }
    const std::shared_ptr<DataSource>& data_source() const { return data_source_; }
    const Device& device() const { return device_; }
    DataType weights_data_type() const;

    // Read-write MPS properties; validated when encoding.
    std::string label;
    int64_t kernel_offset_x = 0, kernel_offset_y = 0;
    Offset offset;
    Region clip_rect = Region::no_clip();
    EdgeMode edge_mode = EdgeMode::Zero;
    PaddingPolicy padding;
    AccumulatorPrecision accumulator_precision = AccumulatorPrecision::Float;
    int64_t source_feature_channel_offset = 0;
    int64_t source_feature_channel_max_count = INT64_MAX;
    int64_t destination_feature_channel_offset = 0;

    /// Auto-sizing (spec §1.4/§1.5): padding policy, then the gradient state's override, then the
    /// custom hook. Writes offset and kernel_offset_x/y back onto this object, as MPS does.
    ImageDescriptor destination_image_descriptor(const TensorView& source,
                                                 const ConvolutionGradientState* state = nullptr);
    /// Manual path: stored offsets and clip rect; writes into `destination` in place.
    void encode(CommandBuffer& command_buffer, const TensorView& source,
                const TensorView& destination);
    /// Auto-sizing path: returns a newly allocated image.
    Image encode(CommandBuffer& command_buffer, const Image& source,
                 const ConvolutionGradientState* state = nullptr);

 private:
    Device device_;
    std::shared_ptr<DataSource> data_source_;
    ConvolutionDescriptor desc_;
    std::shared_ptr<detail::LayerWeights> weights_;
};

}  // namespace convt
