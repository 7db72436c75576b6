#include "convt/convolution_transpose_gradient.h"

#include <algorithm>
#include <mutex>

#include "backend.h"
#include "check.h"
#include "plan.h"
#include "snapshot.h"

namespace convt {

using detail::concat;

namespace {

std::shared_ptr<DataSource> reject_uint8(std::shared_ptr<DataSource> source) {
    if (source && source->data_type() == DataType::UInt8)
        throw std::invalid_argument(
            "data_source data_type must be float32 or float16 for the gradient kernel, got uint8 "
            "(MPSCNNConvolutionTransposeGradient rejects quantised weights)");
    return source;
}

void require_same_shape(const char* name, const TensorView& got, const TensorView& want,
                        const char* what) {
    if (got.n != want.n || got.c != want.c || got.h != want.h || got.w != want.w)
        throw std::invalid_argument(concat(
            name, " must have the ", what, "'s shape (", want.n, ", ", want.c, ", ", want.h, ", ",
            want.w, ") as (N, C, H, W), got (", got.n, ", ", got.c, ", ", got.h, ", ", got.w, ")"));
    if (got.type == DataType::Float64)
        throw TypeError(concat(name, " dtype must be float32 or float16, got float64"));
}

bool same_shape(const ConvolutionDescriptor& a, const ConvolutionDescriptor& b) {
    return a.kernel_width == b.kernel_width && a.kernel_height == b.kernel_height &&
           a.input_feature_channels == b.input_feature_channels &&
           a.output_feature_channels == b.output_feature_channels && a.groups == b.groups &&
           a.stride_in_pixels_x == b.stride_in_pixels_x &&
           a.stride_in_pixels_y == b.stride_in_pixels_y && a.dilation_rate_x == b.dilation_rate_x &&
           a.dilation_rate_y == b.dilation_rate_y;
}

}  // namespace

ConvolutionTransposeGradient::ConvolutionTransposeGradient(Device device,
                                                           std::shared_ptr<DataSource> data_source)
    : ConvolutionWeightsKernel(std::move(device), reject_uint8(std::move(data_source))) {}

void ConvolutionTransposeGradient::encode(
    CommandBuffer& command_buffer, const TensorView& source_gradient,
    const TensorView& source_image, std::shared_ptr<ConvolutionTransposeGradientState> state_ptr,
    const TensorView* destination_gradient, bool accumulate) {
    if (command_buffer.device().backend() != device().backend())
        throw std::invalid_argument(concat("command_buffer device must be the kernel's device (",
                                           device().kind(), "), got ",
                                           command_buffer.device().kind()));
    if (!state_ptr) throw std::invalid_argument("gradient_state must not be None");
    ConvolutionTransposeGradientState& state = *state_ptr;
    state.lifetime().check_usable(command_buffer, "gradient_state");
    const detail::ForwardSnapshot& snap = state.snapshot();
    if (!same_shape(snap.descriptor, descriptor()))
        throw std::invalid_argument(
            "gradient_state must come from a forward kernel with the same descriptor (kernel size, "
            "channels, groups, stride, dilation) as this gradient kernel");
    require_same_shape("source_gradient", source_gradient, snap.destination, "forward destination");
    require_same_shape("source_image", source_image, snap.source, "forward source");
    const bool want_data =
        static_cast<int>(gradient_option) & static_cast<int>(GradientOption::Data);
    const bool want_weights =
        static_cast<int>(gradient_option) & static_cast<int>(GradientOption::WeightsAndBias);
    const auto& host = layer_weights()->host;
    detail::check_zero_copy(*device().backend(), source_image, "source_image");
    detail::check_zero_copy(*device().backend(), source_gradient, "source_gradient");
    if (destination_gradient)
        detail::check_zero_copy(*device().backend(), *destination_gradient, "destination_gradient");
    const detail::ViewRoles read_only{"source_image", "source_gradient", false};
    const ConvtParams params_w =
        detail::make_params(host, snap.placement, source_image, source_gradient, read_only);
    ConvtParams params_d{};
    TensorView dx;
    if (want_data) {
        if (!destination_gradient)
            throw std::invalid_argument(
                "destination_gradient must be given when gradient_option includes data");
        const TensorView& d = *destination_gradient;
        require_same_shape("destination_gradient", d, snap.source, "forward source");
        detail::check_destination_view("destination_gradient", d);
        if (d.may_overlap(source_gradient) || d.may_overlap(source_image))
            throw std::invalid_argument(
                "destination_gradient must not share memory with source_gradient or source_image");
        params_d = detail::make_params(host, snap.placement, d, source_gradient,
                                       {"destination_gradient", "source_gradient", false});
        dx = d;
    }
    float* dw = want_weights ? state.gradient_for_weights().data() : nullptr;
    float* db = want_weights ? state.gradient_for_biases().data() : nullptr;
    // The state is held by the work: its gradient buffers must outlive the command buffer.
    command_buffer.add([backend = device().backend(), weights = layer_weights(), params_w, params_d,
                        dy = source_gradient, x = source_image, dx, dw, db, accumulate, state_ptr] {
        const detail::GradientOutput out{dw, db, DataType::Float32, accumulate};
        if (dx.data) {
            std::shared_lock lock(weights->mutex);
            // All three in one go where the backend can share its passes over dY.
            if (dw && backend->backward_data_and_weights(params_d, *weights->device, dy, dx,
                                                         params_w, x, out))
                return;
            backend->backward_data(params_d, *weights->device, dy, dx);
        }
        if (dw) backend->backward_weights(params_w, x, dy, out);
    });
}

void ConvolutionTransposeGradient::encode_batch(
    CommandBuffer& command_buffer, const std::vector<TensorView>& source_gradients,
    const std::vector<TensorView>& source_images,
    const std::vector<std::shared_ptr<ConvolutionTransposeGradientState>>& states,
    const std::vector<const TensorView*>& destination_gradients) {
    const size_t n = source_gradients.size();
    for (auto [name, size] : {std::pair{"source_images", source_images.size()},
                              {"gradient_states", states.size()},
                              {"destination_gradients", destination_gradients.size()}})
        detail::require(size == n, concat(name, " length").c_str(), size,
                        concat("the number of source_gradients (", n, ")").c_str());
    std::vector<const ConvolutionTransposeGradientState*> seen;
    for (size_t i = 0; i < n; ++i) {
        if (!states[i])
            throw std::invalid_argument(concat("gradient_states[", i, "] must not be None"));
        const bool repeat = std::find(seen.begin(), seen.end(), states[i].get()) != seen.end();
        encode(command_buffer, source_gradients[i], source_images[i], states[i],
               destination_gradients[i], repeat);
        seen.push_back(states[i].get());
    }
}

OptimizerSGD::OptimizerSGD(float learning_rate_, float momentum_, float weight_decay_)
    : learning_rate(learning_rate_), momentum(momentum_), weight_decay(weight_decay_) {
    detail::require(momentum >= 0.f, "momentum", momentum, ">= 0");
}

void OptimizerSGD::encode(CommandBuffer& command_buffer,
                          std::shared_ptr<ConvolutionTransposeGradientState> gradient_state,
                          std::shared_ptr<WeightsAndBiasesState> weights) {
    if (!gradient_state || !weights)
        throw std::invalid_argument("gradient_state and weights_state must not be None");
    gradient_state->lifetime().check_usable(command_buffer, "gradient_state");
    weights->lifetime().check_usable(command_buffer, "weights_state");
    detail::require(
        gradient_state->gradient_for_weights().size() == weights->weights().size(),
        "weights_state.weights size", weights->weights().size(),
        concat("the gradient's size (", gradient_state->gradient_for_weights().size(), ")")
            .c_str());
    command_buffer.add_host([g = gradient_state, w = weights, velocity = velocity_,
                             lr = learning_rate, mu = momentum, decay = weight_decay] {
        auto& ws = w->weights();
        auto& bs = w->biases();
        const auto& gw = g->gradient_for_weights();
        const auto& gb = g->gradient_for_biases();
        std::vector<float>* vw = nullptr;
        std::vector<float>* vb = nullptr;
        if (mu != 0.f) {
            auto it = std::find_if(velocity->begin(), velocity->end(),
                                   [&](const Velocity& v) { return v.state.lock() == w; });
            if (it == velocity->end()) {
                velocity->push_back(
                    {w, std::vector<float>(ws.size(), 0.f), std::vector<float>(bs.size(), 0.f)});
                it = velocity->end() - 1;
            }
            vw = &it->weights, vb = &it->biases;
        }
        for (size_t i = 0; i < ws.size(); ++i) {
            float step = gw[i] + decay * ws[i];
            if (vw) step = (*vw)[i] = mu * (*vw)[i] + step;
            ws[i] -= lr * step;
        }
        for (size_t i = 0; i < bs.size() && i < gb.size(); ++i) {
            float step = gb[i];
            if (vb) step = (*vb)[i] = mu * (*vb)[i] + step;
            bs[i] -= lr * step;
        }
    });
}

}  // namespace convt
