// MPSCNNConvolutionTranspose analogue.
#pragma once

#include <memory>
#include <vector>

#include "convt/geometry.h"
#include "convt/kernel_base.h"
#include "convt/states.h"
#include "convt/tensor.h"

namespace convt {

namespace detail {
struct Placement;
}

class ConvolutionTranspose : public ConvolutionWeightsKernel {
 public:
    /// Loads, validates and prepares the data source's weights once (BN fold, dequantisation,
    /// fp16 rounding) and uploads them to the device. Calls data_source->purge() afterwards.
    ConvolutionTranspose(Device device, std::shared_ptr<DataSource> data_source);

    // Read-write MPS properties; validated when encoding.
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

    /// A gradient state holding the current geometry for these images (spec §5.1/§5.2).
    /// `command_buffer` non-null makes it temporary: valid until that command buffer completes.
    std::shared_ptr<ConvolutionTransposeGradientState> result_state(
        const TensorView& source, const TensorView& destination,
        const ConvolutionGradientState* convolution_state = nullptr,
        CommandBuffer* command_buffer = nullptr) const;

 private:
    detail::Placement placement() const;
};

}  // namespace convt
