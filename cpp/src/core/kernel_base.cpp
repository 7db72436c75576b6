#include "convt/kernel_base.h"

#include <mutex>

#include "backend.h"
#include "check.h"
#include "weights.h"

namespace convt {

ConvolutionWeightsKernel::ConvolutionWeightsKernel(Device device,
                                                   std::shared_ptr<DataSource> data_source)
    : device_(std::move(device)), data_source_(std::move(data_source)) {
    if (!data_source_) throw std::invalid_argument("data_source must not be None");
    auto weights = std::make_shared<detail::LayerWeights>();
    weights->host = detail::prepare_from_data_source(*data_source_, desc_);
    weights->device = device_.backend()->upload(weights->host);
    label = data_source_->label();
    weights_ = std::move(weights);
}

ConvolutionWeightsKernel::~ConvolutionWeightsKernel() = default;

DataType ConvolutionWeightsKernel::weights_data_type() const { return weights_->host.type; }

void ConvolutionWeightsKernel::copy_weights(std::vector<double>& weights,
                                            std::vector<double>& bias) const {
    std::shared_lock lock(weights_->mutex);
    weights = weights_->host.values;
    bias = weights_->host.bias;
}

std::shared_ptr<WeightsAndBiasesState> ConvolutionWeightsKernel::export_weights_and_biases(
    CommandBuffer& command_buffer, bool result_state_can_be_temporary) {
    auto state = std::make_shared<WeightsAndBiasesState>(
        std::vector<float>(static_cast<size_t>(desc_.weight_count()), 0.f),
        std::vector<float>(static_cast<size_t>(desc_.output_feature_channels), 0.f),
        result_state_can_be_temporary ? StateLifetime::temporary(command_buffer) : StateLifetime());
    command_buffer.add_host([weights = weights_, state] {
        std::shared_lock lock(weights->mutex);
        auto& w = state->weights();
        auto& b = state->biases();
        for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(weights->host.values[i]);
        for (size_t i = 0; i < weights->host.bias.size(); ++i)
            b[i] = static_cast<float>(weights->host.bias[i]);
    });
    return state;
}

void ConvolutionWeightsKernel::reload_weights_and_biases(
    CommandBuffer& command_buffer, std::shared_ptr<WeightsAndBiasesState> state) {
    if (!state) throw std::invalid_argument("state must not be None");
    state->lifetime().check_usable(command_buffer, "weights_and_biases_state");
    const auto count = static_cast<size_t>(desc_.weight_count());
    const auto O = static_cast<size_t>(desc_.output_feature_channels);
    detail::require(state->weights().size() == count, "state.weights size", state->weights().size(),
                    detail::concat("O*kH*kW*(I/groups) = ", count).c_str());
    detail::require(state->biases().empty() || state->biases().size() == O, "state.biases size",
                    state->biases().size(),
                    detail::concat("0 or output_feature_channels = ", O).c_str());
    weights_from_data_source_ = false;
    command_buffer.add_host([weights = weights_, state, backend = device_.backend()] {
        detail::PreparedWeights next;
        {
            std::shared_lock lock(weights->mutex);
            next.type = weights->host.type;
            next.out_channels = weights->host.out_channels;
            next.kernel_h = weights->host.kernel_h, next.kernel_w = weights->host.kernel_w;
            next.in_per_group = weights->host.in_per_group, next.groups = weights->host.groups;
            next.neuron = weights->host.neuron;
        }
        next.values.assign(state->weights().begin(), state->weights().end());
        next.bias.assign(state->biases().begin(), state->biases().end());
        detail::round_to_type(next.values, next.type);
        auto device = backend->upload(next);
        std::unique_lock lock(weights->mutex);
        weights->host = std::move(next);
        weights->device = std::move(device);
    });
}

void ConvolutionWeightsKernel::reload_weights_and_biases_from_data_source() {
    ConvolutionDescriptor desc;
    detail::PreparedWeights next = detail::prepare_from_data_source(*data_source_, desc);
    if (desc.kernel_width != desc_.kernel_width || desc.kernel_height != desc_.kernel_height ||
        desc.input_feature_channels != desc_.input_feature_channels ||
        desc.output_feature_channels != desc_.output_feature_channels ||
        desc.groups != desc_.groups || desc.stride_in_pixels_x != desc_.stride_in_pixels_x ||
        desc.stride_in_pixels_y != desc_.stride_in_pixels_y ||
        desc.dilation_rate_x != desc_.dilation_rate_x ||
        desc.dilation_rate_y != desc_.dilation_rate_y)
        throw std::invalid_argument(
            "data_source descriptor must keep the kernel's shape (kernel size, channels, groups, "
            "stride, dilation) when reloading");
    auto device = device_.backend()->upload(next);
    std::unique_lock lock(weights_->mutex);
    weights_->host = std::move(next);
    weights_->device = std::move(device);
    desc_ = std::move(desc);
    weights_from_data_source_ = true;
}

}  // namespace convt
