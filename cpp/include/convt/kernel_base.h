// What the forward and gradient kernels share: a device, a data source and the layer's weights.
#pragma once

#include <memory>
#include <string>

#include "convt/data_source.h"
#include "convt/device.h"
#include "convt/states.h"

namespace convt {

namespace detail {
struct LayerWeights;
struct PreparedWeights;
}  // namespace detail

class ConvolutionWeightsKernel {
 public:
    virtual ~ConvolutionWeightsKernel();
    ConvolutionWeightsKernel(const ConvolutionWeightsKernel&) = delete;
    ConvolutionWeightsKernel& operator=(const ConvolutionWeightsKernel&) = delete;

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
    /// The type the weights are stored and read in: Float16 (default) or Float32.
    DataType weights_data_type() const;
    /// True while the weights are the data source's (no state was reloaded since).
    bool weights_from_data_source() const { return weights_from_data_source_; }

    std::string label;

    /// Encoded: after `command_buffer` runs, the state holds the current W' and bias' (float32).
    std::shared_ptr<WeightsAndBiasesState> export_weights_and_biases(
        CommandBuffer& command_buffer, bool result_state_can_be_temporary = false);
    /// Encoded: work after this in the command buffer (and later ones) uses the state's values,
    /// rounded to weights_data_type().
    void reload_weights_and_biases(CommandBuffer& command_buffer,
                                   std::shared_ptr<WeightsAndBiasesState> state);
    /// Synchronous: load(), weights(), purge() again, and prepare as at construction.
    void reload_weights_and_biases_from_data_source();

    /// The prepared weights (for serialization and tests): OHWI W', bias' (empty: none).
    void copy_weights(std::vector<double>& weights, std::vector<double>& bias) const;

 protected:
    ConvolutionWeightsKernel(Device device, std::shared_ptr<DataSource> data_source);
    /// Replaces the descriptor shown by descriptor() (deserialization of folded weights).
    void set_descriptor(ConvolutionDescriptor descriptor) { desc_ = std::move(descriptor); }
    const std::shared_ptr<detail::LayerWeights>& layer_weights() const { return weights_; }

 private:
    Device device_;
    std::shared_ptr<DataSource> data_source_;
    ConvolutionDescriptor desc_;
    std::shared_ptr<detail::LayerWeights> weights_;
    bool weights_from_data_source_ = true;
    friend struct KernelSerializer;
};

}  // namespace convt
