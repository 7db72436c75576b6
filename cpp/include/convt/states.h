// Training states: MPSCNNConvolutionTransposeGradientState and
// MPSCNNConvolutionWeightsAndBiasesState analogues.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <vector>

#include "convt/descriptor.h"
#include "convt/device.h"
#include "convt/geometry.h"
#include "convt/tensor.h"

namespace convt {

namespace detail {
struct ForwardSnapshot;
}

/// When a state may be used: always, or (temporary) only inside one command buffer.
class StateLifetime {
 public:
    /// A permanent lifetime.
    StateLifetime() = default;
    /// Valid until `command_buffer` completes.
    static StateLifetime temporary(CommandBuffer& command_buffer);

    bool is_temporary() const { return command_buffer_id_ != 0; }
    bool is_valid() const { return !valid_ || valid_->load(); }
    /// Throws std::runtime_error if the state is no longer valid.
    void check_valid(const char* what) const;
    /// Also throws std::invalid_argument if a temporary state meets another command buffer.
    void check_usable(const CommandBuffer& command_buffer, const char* what) const;

 private:
    uint64_t command_buffer_id_ = 0;
    std::shared_ptr<std::atomic<bool>> valid_;
};

/// Float32 weights (OHWI) and biases that kernels export, reload and optimisers update.
class WeightsAndBiasesState {
 public:
    WeightsAndBiasesState(std::vector<float> weights, std::vector<float> biases,
                          StateLifetime lifetime = {});
    std::vector<float>& weights();
    std::vector<float>& biases();
    const StateLifetime& lifetime() const { return lifetime_; }

 private:
    std::vector<float> weights_, biases_;
    StateLifetime lifetime_;
};

/// The forward geometry of one encode, and the weight and bias gradients a gradient kernel
/// writes (float32, OHWI and [O]).
class ConvolutionTransposeGradientState {
 public:
    ConvolutionTransposeGradientState(std::shared_ptr<const detail::ForwardSnapshot> snapshot,
                                      std::optional<ConvolutionGradientState> convolution,
                                      StateLifetime lifetime);
    ~ConvolutionTransposeGradientState();

    /// Throw std::runtime_error for a temporary state whose command buffer has completed.
    std::vector<float>& gradient_for_weights();
    std::vector<float>& gradient_for_biases();
    const StateLifetime& lifetime() const { return lifetime_; }
    /// The forward convolution's state given at creation; throws std::invalid_argument if none.
    const ConvolutionGradientState& convolution() const;
    bool has_convolution() const { return convolution_.has_value(); }
    const detail::ForwardSnapshot& snapshot() const { return *snapshot_; }

    // The forward kernel's properties when the state was made.
    Offset offset() const;
    int64_t kernel_offset_x() const;
    int64_t kernel_offset_y() const;
    Region clip_rect() const;
    int64_t source_width() const;
    int64_t source_height() const;
    int64_t destination_width() const;
    int64_t destination_height() const;

 private:
    std::shared_ptr<const detail::ForwardSnapshot> snapshot_;
    std::optional<ConvolutionGradientState> convolution_;
    StateLifetime lifetime_;
    std::vector<float> weight_gradient_, bias_gradient_;
};

}  // namespace convt
