#include "convt/convolution_transpose.h"

#include <mutex>

#include "backend.h"
#include "check.h"
#include "plan.h"
#include "snapshot.h"

namespace convt {

using detail::concat;

ConvolutionTranspose::ConvolutionTranspose(Device device, std::shared_ptr<DataSource> data_source)
    : ConvolutionWeightsKernel(std::move(device), std::move(data_source)) {}

ImageDescriptor ConvolutionTranspose::destination_image_descriptor(
    const TensorView& source, const ConvolutionGradientState* state) {
    detail::check_image_view("source_image", source);
    const ConvolutionDescriptor& desc = descriptor();
    const int64_t sx = desc.stride_in_pixels_x, sy = desc.stride_in_pixels_y;
    const auto px = geometry::transpose_placement(
        padding.method, false, source.w, sx,
        geometry::effective_kernel(desc.kernel_width, desc.dilation_rate_x));
    const auto py = geometry::transpose_placement(
        padding.method, true, source.h, sy,
        geometry::effective_kernel(desc.kernel_height, desc.dilation_rate_y));
    ImageDescriptor d;
    d.width = px.size, d.height = py.size;
    d.feature_channels = desc.output_feature_channels;
    d.number_of_images = source.n;
    d.type = source.type;
    int64_t tx = px.total_offset, ty = py.total_offset;
    if (state) {
        if (state->kernel_width != desc.kernel_width || state->kernel_height != desc.kernel_height)
            throw std::invalid_argument(
                concat("convolution_gradient_state kernel size must match the transpose's (",
                       desc.kernel_width, "x", desc.kernel_height, "), got ", state->kernel_width,
                       "x", state->kernel_height, " (kernelSize mismatch)"));
        d.width = state->source_width, d.height = state->source_height;
        tx = geometry::autoencoder_total_offset(desc.kernel_width, state->offset_x);
        ty = geometry::autoencoder_total_offset(desc.kernel_height, state->offset_y);
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

namespace {

// offset * stride + kernel_offset, computed without overflow (both are arbitrary int64 values).
int64_t total_offset(const char* axis, int64_t offset, int64_t stride, int64_t kernel_offset) {
    const __int128 t = static_cast<__int128>(offset) * stride + kernel_offset;
    if (t < INT32_MIN || t > INT32_MAX)
        throw std::invalid_argument(detail::concat(
            "total offset ", axis, " (offset.", axis, " * stride + kernel_offset_", axis,
            ") must be representable in 32 bits, got offset.", axis, " = ", offset,
            ", stride = ", stride, ", kernel_offset_", axis, " = ", kernel_offset));
    return static_cast<int64_t>(t);
}

}  // namespace

detail::Placement ConvolutionTranspose::placement() const {
    if (edge_mode != EdgeMode::Zero)
        throw std::invalid_argument(
            "edge_mode must be zero (convt does not support clamp), got clamp");
    const ConvolutionDescriptor& desc = descriptor();
    detail::Placement pl;
    pl.stride_x = desc.stride_in_pixels_x, pl.stride_y = desc.stride_in_pixels_y;
    pl.dilation_x = desc.dilation_rate_x, pl.dilation_y = desc.dilation_rate_y;
    pl.total_offset_x = total_offset("x", offset.x, pl.stride_x, kernel_offset_x);
    pl.total_offset_y = total_offset("y", offset.y, pl.stride_y, kernel_offset_y);
    pl.clip = clip_rect;
    pl.source_image = offset.z;
    pl.source_channel_offset = source_feature_channel_offset;
    pl.source_channel_max_count = source_feature_channel_max_count;
    pl.destination_channel_offset = destination_feature_channel_offset;
    pl.accumulator = accumulator_precision;
    return pl;
}

namespace {

void require_image_types(const TensorView& source, const TensorView& destination) {
    for (auto [name, v] : {std::pair{"source_image", &source}, {"destination_image", &destination}})
        if (v->type == DataType::Float64)
            throw TypeError(concat(name, " dtype must be float32 or float16, got float64"));
}

}  // namespace

void ConvolutionTranspose::encode(CommandBuffer& command_buffer, const TensorView& source,
                                  const TensorView& destination) {
    if (command_buffer.device().backend() != device().backend())
        throw std::invalid_argument(concat("command_buffer device must be the kernel's device (",
                                           device().kind(), "), got ",
                                           command_buffer.device().kind()));
    require_image_types(source, destination);
    const ConvtParams params =
        detail::make_params(layer_weights()->host, placement(), source, destination);
    detail::check_zero_copy(*device().backend(), source, "source_image");
    detail::check_zero_copy(*device().backend(), destination, "destination_image");
    command_buffer.add([backend = device().backend(), weights = layer_weights(), params,
                        src = source, dst = destination] {
        std::shared_lock lock(weights->mutex);
        backend->forward(params, *weights->device, src, dst);
    });
}

Image ConvolutionTranspose::encode(CommandBuffer& command_buffer, const Image& source,
                                   const ConvolutionGradientState* state) {
    const ImageDescriptor d = destination_image_descriptor(source.view(), state);
    Image out = Image::allocate(d.number_of_images, d.feature_channels, d.height, d.width, d.type);
    encode(command_buffer, source.view(), out.view());
    return out;
}

std::shared_ptr<ConvolutionTransposeGradientState> ConvolutionTranspose::result_state(
    const TensorView& source, const TensorView& destination,
    const ConvolutionGradientState* convolution_state, CommandBuffer* command_buffer) const {
    require_image_types(source, destination);
    auto snap = std::make_shared<detail::ForwardSnapshot>();
    snap->placement = placement();
    // Validates the geometry now, as the encode will.
    detail::make_params(layer_weights()->host, snap->placement, source, destination,
                        {"source_image", "destination_image", false});
    snap->descriptor = descriptor();
    snap->offset = offset;
    snap->kernel_offset_x = kernel_offset_x, snap->kernel_offset_y = kernel_offset_y;
    snap->clip_rect = clip_rect;
    snap->source = source, snap->source.data = nullptr;
    snap->destination = destination, snap->destination.data = nullptr;
    std::optional<ConvolutionGradientState> link;
    if (convolution_state) link = *convolution_state;
    return std::make_shared<ConvolutionTransposeGradientState>(
        std::move(snap), std::move(link),
        command_buffer ? StateLifetime::temporary(*command_buffer) : StateLifetime());
}

}  // namespace convt
