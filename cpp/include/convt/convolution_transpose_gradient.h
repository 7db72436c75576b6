// MPSCNNConvolutionTransposeGradient analogue (spec §5.3).
#pragma once

#include <memory>
#include <vector>

#include "convt/kernel_base.h"
#include "convt/states.h"
#include "convt/tensor.h"

namespace convt {

/// Which gradients an encode computes.
enum class GradientOption : int32_t { Data = 1, WeightsAndBias = 2, All = 3 };

class ConvolutionTransposeGradient : public ConvolutionWeightsKernel {
 public:
    /// Same data source as the forward kernel; uint8 weights are rejected, as in MPS.
    ConvolutionTransposeGradient(Device device, std::shared_ptr<DataSource> data_source);

    GradientOption gradient_option = GradientOption::All;
    int64_t source_gradient_feature_channels() const { return output_feature_channels(); }
    int64_t source_image_feature_channels() const { return input_feature_channels(); }

    /// dY (`source_gradient`, shaped like the forward destination) and the forward source X give
    /// dX (into `destination_gradient`, shaped like X; may be null when data is not wanted) and
    /// dW, dB (into `state`, overwritten, or added to when `accumulate`).
    void encode(CommandBuffer& command_buffer, const TensorView& source_gradient,
                const TensorView& source_image,
                std::shared_ptr<ConvolutionTransposeGradientState> state,
                const TensorView* destination_gradient, bool accumulate = false);

    /// One encode per image; images sharing a state have their dW/dB summed.
    void encode_batch(CommandBuffer& command_buffer,
                      const std::vector<TensorView>& source_gradients,
                      const std::vector<TensorView>& source_images,
                      const std::vector<std::shared_ptr<ConvolutionTransposeGradientState>>& states,
                      const std::vector<const TensorView*>& destination_gradients);
};

/// Stochastic gradient descent on a WeightsAndBiasesState
/// (MPSNNOptimizerStochasticGradientDescent): v = momentum * v + (g + weight_decay * w); w -=
/// learning_rate * v (bias: g = dB, no decay).
class OptimizerSGD {
 public:
    explicit OptimizerSGD(float learning_rate, float momentum = 0.f, float weight_decay = 0.f);
    float learning_rate, momentum, weight_decay;
    /// Encoded: updates `weights` in place when the command buffer runs.
    void encode(CommandBuffer& command_buffer,
                std::shared_ptr<ConvolutionTransposeGradientState> gradient_state,
                std::shared_ptr<WeightsAndBiasesState> weights);

 private:
    struct Velocity {
        std::weak_ptr<WeightsAndBiasesState> state;
        std::vector<float> weights, biases;
    };
    // Momentum vectors, one set per weights state; shared with encoded work.
    std::shared_ptr<std::vector<Velocity>> velocity_ = std::make_shared<std::vector<Velocity>>();
};

}  // namespace convt
