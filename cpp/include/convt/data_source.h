// MPSCNNConvolutionDataSource analogue: where a layer's weights come from.
#pragma once

#include <string>
#include <vector>

#include "convt/descriptor.h"

namespace convt {

/// Weights are OHWI: w[outputFeatureChannels][kH][kW][inputFeatureChannels / groups], as given
/// (no rotation). Pointers returned by weights()/bias_terms()/... stay valid from load() to
/// purge().
class DataSource {
 public:
    virtual ~DataSource() = default;
    virtual ConvolutionDescriptor descriptor() = 0;
    virtual DataType data_type() = 0;
    /// descriptor().weight_count() elements of data_type().
    virtual const void* weights() = 0;
    /// output_feature_channels floats, or nullptr for no bias.
    virtual const float* bias_terms() = 0;
    virtual bool load() = 0;
    virtual void purge() = 0;
    virtual std::string label() { return {}; }
    /// Float16 (default): weights are stored as fp16. Float32 keeps them (needs float
    /// accumulation).
    virtual DataType kernel_weights_data_type() { return DataType::Float16; }
    virtual QuantizationType weights_quantization_type() { return QuantizationType::None; }
    /// Linear uint8: output_feature_channels (min, max) pairs.
    virtual const float* ranges_for_uint8_kernel() { return nullptr; }
    /// Lookup-table uint8: 256 floats.
    virtual const float* lookup_table_for_uint8_kernel() { return nullptr; }
};

/// A DataSource over arrays it owns; the ready-made implementation for C++ callers.
class ArrayDataSource : public DataSource {
 public:
    /// float32 weights (OHWI) and an optional float32 bias (empty = none).
    ArrayDataSource(ConvolutionDescriptor descriptor, std::vector<float> weights,
                    std::vector<float> bias = {},
                    DataType kernel_weights_data_type = DataType::Float16, std::string label = {});
    /// float16 weights given as their IEEE bit patterns (stored as float16 kernel weights).
    static ArrayDataSource float16(ConvolutionDescriptor descriptor, std::vector<uint16_t> weights,
                                   std::vector<float> bias = {}, std::string label = {});
    /// uint8 weights with linear ranges (2 floats per output channel) or a 256-entry table.
    static ArrayDataSource quantized(ConvolutionDescriptor descriptor, std::vector<uint8_t> weights,
                                     QuantizationType quantization, std::vector<float> table,
                                     std::vector<float> bias = {}, std::string label = {});

    ConvolutionDescriptor descriptor() override { return descriptor_; }
    DataType data_type() override { return data_type_; }
    const void* weights() override;
    const float* bias_terms() override { return bias_.empty() ? nullptr : bias_.data(); }
    bool load() override { return true; }
    void purge() override {}
    std::string label() override { return label_; }
    DataType kernel_weights_data_type() override { return kernel_weights_type_; }
    QuantizationType weights_quantization_type() override { return quantization_; }
    const float* ranges_for_uint8_kernel() override;
    const float* lookup_table_for_uint8_kernel() override;

 private:
    ArrayDataSource() = default;
    ConvolutionDescriptor descriptor_;
    DataType data_type_ = DataType::Float32;
    DataType kernel_weights_type_ = DataType::Float16;
    QuantizationType quantization_ = QuantizationType::None;
    std::vector<float> weights_f32_;
    std::vector<uint8_t> weights_u8_;
    std::vector<uint16_t> weights_f16_;
    std::vector<float> bias_, table_;
    std::string label_;
};

}  // namespace convt
