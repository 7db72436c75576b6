#include "convt/convolution_transpose.h"

#include "check.h"
#include "plan.h"
#include "weights.h"

namespace convt {

using detail::concat;

ConvolutionTranspose::ConvolutionTranspose(Device device, std::shared_ptr<DataSource> data_source)
    : device_(std::move(device)), data_source_(std::move(data_source)) {
    if (!data_source_) throw std::invalid_argument("data_source must not be None");
    auto weights = std::make_shared<detail::LayerWeights>();
    weights->host = detail::prepare_from_data_source(*data_source_, desc_);
    weights->device = device_.backend()->upload(weights->host);
    label = data_source_->label();
    weights_ = std::move(weights);
}

ConvolutionTranspose::~ConvolutionTranspose() = default;

DataType ConvolutionTranspose::weights_data_type() const { return weights_->host.type; }

ImageDescriptor ConvolutionTranspose::destination_image_descriptor(
    const TensorView& source, const ConvolutionGradientState* state) {
    detail::check_image_view("source_image", source);
    const int64_t sx = desc_.stride_in_pixels_x, sy = desc_.stride_in_pixels_y;
    const auto px = geometry::transpose_placement(
        padding.method, false, source.w, sx,
        geometry::effective_kernel(desc_.kernel_width, desc_.dilation_rate_x));
    const auto py = geometry::transpose_placement(
        padding.method, true, source.h, sy,
        geometry::effective_kernel(desc_.kernel_height, desc_.dilation_rate_y));
    ImageDescriptor d;
    d.width = px.size, d.height = py.size;
    d.feature_channels = desc_.output_feature_channels;
    d.number_of_images = source.n;
    d.type = source.type;
    int64_t tx = px.total_offset, ty = py.total_offset;
    if (state) {
        if (state->kernel_width != desc_.kernel_width ||
            state->kernel_height != desc_.kernel_height)
            throw std::invalid_argument(
                concat("convolution_gradient_state kernel size must match the transpose's (",
                       desc_.kernel_width, "x", desc_.kernel_height, "), got ", state->kernel_width,
                       "x", state->kernel_height, " (kernelSize mismatch)"));
        d.width = state->source_width, d.height = state->source_height;
        tx = geometry::autoencoder_total_offset(desc_.kernel_width, state->offset_x);
        ty = geometry::autoencoder_total_offset(desc_.kernel_height, state->offset_y);
    }
    std::tie(d.offset_x, d.kernel_offset_x) = geometry::split_total_offset(tx, sx);
    std::tie(d.offset_y, d.kernel_offset_y) = geometry::split_total_offset(ty, sy);
    if (padding.method & padding_method::Custom) {
        if (!padding.custom)
            throw std::invalid_argument(
                "padding with the custom bit (0x4000) must provide destination_image_descriptor");
        padding.custom(d);
    }
    for (auto [name, v] : {std::pair{"destination width", d.width},
                           {"destination height", d.height},
                           {"destination feature_channels", d.feature_channels},
                           {"destination number_of_images", d.number_of_images}})
        detail::require_int32(name, v);
    offset.x = d.offset_x, offset.y = d.offset_y;
    kernel_offset_x = d.kernel_offset_x, kernel_offset_y = d.kernel_offset_y;
    return d;
}

void ConvolutionTranspose::encode(CommandBuffer& command_buffer, const TensorView& source,
                                  const TensorView& destination) {
    if (command_buffer.device().backend() != device_.backend())
        throw std::invalid_argument(concat("command_buffer device must be the kernel's device (",
                                           device_.kind(), "), got ",
                                           command_buffer.device().kind()));
    if (edge_mode != EdgeMode::Zero)
        throw std::invalid_argument(
            "edge_mode must be zero (convt does not support clamp), got clamp");
    detail::Placement pl;
    pl.stride_x = desc_.stride_in_pixels_x, pl.stride_y = desc_.stride_in_pixels_y;
    pl.dilation_x = desc_.dilation_rate_x, pl.dilation_y = desc_.dilation_rate_y;
    pl.total_offset_x = offset.x * pl.stride_x + kernel_offset_x;
    pl.total_offset_y = offset.y * pl.stride_y + kernel_offset_y;
    pl.clip = clip_rect;
    pl.source_image = offset.z;
    pl.source_channel_offset = source_feature_channel_offset;
    pl.source_channel_max_count = source_feature_channel_max_count;
    pl.destination_channel_offset = destination_feature_channel_offset;
    pl.accumulator = accumulator_precision;
    const ConvtParams params = detail::make_params(weights_->host, pl, source, destination);
    command_buffer.add(
        [backend = device_.backend(), weights = weights_, params, src = source.data,
         dst = destination.data] { backend->forward(params, *weights->device, src, dst); });
}

Image ConvolutionTranspose::encode(CommandBuffer& command_buffer, const Image& source,
                                   const ConvolutionGradientState* state) {
    const ImageDescriptor d = destination_image_descriptor(source.view(), state);
    Image out = Image::allocate(d.number_of_images, d.feature_channels, d.height, d.width, d.type);
    encode(command_buffer, source.view(), out.view());
    return out;
}

}  // namespace convt
