#include "convt/states.h"

#include "check.h"
#include "snapshot.h"

namespace convt {

StateLifetime StateLifetime::temporary(CommandBuffer& command_buffer) {
    StateLifetime l;
    l.command_buffer_id_ = command_buffer.id();
    l.valid_ = std::make_shared<std::atomic<bool>>(true);
    command_buffer.add_completed_handler([valid = l.valid_] { valid->store(false); });
    return l;
}

void StateLifetime::check_valid(const char* what) const {
    if (!is_valid())
        throw std::runtime_error(detail::concat(
            what,
            " is a temporary state whose command buffer has completed; temporary states are "
            "valid only inside their command buffer (use result_state for a lasting one)"));
}

void StateLifetime::check_usable(const CommandBuffer& command_buffer, const char* what) const {
    check_valid(what);
    if (is_temporary() && command_buffer.id() != command_buffer_id_)
        throw std::invalid_argument(detail::concat(
            what, " must be used with the command buffer it was created for (temporary state)"));
}

WeightsAndBiasesState::WeightsAndBiasesState(std::vector<float> weights, std::vector<float> biases,
                                             StateLifetime lifetime)
    : weights_(std::move(weights)), biases_(std::move(biases)), lifetime_(std::move(lifetime)) {}

std::vector<float>& WeightsAndBiasesState::weights() {
    lifetime_.check_valid("weights_and_biases_state");
    return weights_;
}

std::vector<float>& WeightsAndBiasesState::biases() {
    lifetime_.check_valid("weights_and_biases_state");
    return biases_;
}

ConvolutionTransposeGradientState::ConvolutionTransposeGradientState(
    std::shared_ptr<const detail::ForwardSnapshot> snapshot,
    std::optional<ConvolutionGradientState> convolution, StateLifetime lifetime)
    : snapshot_(std::move(snapshot)),
      convolution_(std::move(convolution)),
      lifetime_(std::move(lifetime)),
      weight_gradient_(static_cast<size_t>(snapshot_->descriptor.weight_count()), 0.f),
      bias_gradient_(static_cast<size_t>(snapshot_->descriptor.output_feature_channels), 0.f) {}

ConvolutionTransposeGradientState::~ConvolutionTransposeGradientState() = default;

std::vector<float>& ConvolutionTransposeGradientState::gradient_for_weights() {
    lifetime_.check_valid("gradient_state");
    return weight_gradient_;
}

std::vector<float>& ConvolutionTransposeGradientState::gradient_for_biases() {
    lifetime_.check_valid("gradient_state");
    return bias_gradient_;
}

const ConvolutionGradientState& ConvolutionTransposeGradientState::convolution() const {
    if (!convolution_)
        throw std::invalid_argument(
            "convolution is only available when the state was created with a forward "
            "ConvolutionGradientState (not created with MPSCNNConvolutionGradientState)");
    return *convolution_;
}

Offset ConvolutionTransposeGradientState::offset() const { return snapshot_->offset; }
int64_t ConvolutionTransposeGradientState::kernel_offset_x() const {
    return snapshot_->kernel_offset_x;
}
int64_t ConvolutionTransposeGradientState::kernel_offset_y() const {
    return snapshot_->kernel_offset_y;
}
Region ConvolutionTransposeGradientState::clip_rect() const { return snapshot_->clip_rect; }
int64_t ConvolutionTransposeGradientState::source_width() const { return snapshot_->source.w; }
int64_t ConvolutionTransposeGradientState::source_height() const { return snapshot_->source.h; }
int64_t ConvolutionTransposeGradientState::destination_width() const {
    return snapshot_->destination.w;
}
int64_t ConvolutionTransposeGradientState::destination_height() const {
    return snapshot_->destination.h;
}

}  // namespace convt
