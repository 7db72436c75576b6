#include "convt/data_source.h"

#include "check.h"

namespace convt {

ArrayDataSource::ArrayDataSource(ConvolutionDescriptor descriptor, std::vector<float> weights,
                                 std::vector<float> bias, DataType kernel_weights_data_type,
                                 std::string label)
    : descriptor_(std::move(descriptor)),
      data_type_(DataType::Float32),
      kernel_weights_type_(kernel_weights_data_type),
      weights_f32_(std::move(weights)),
      bias_(std::move(bias)),
      label_(std::move(label)) {
    descriptor_.validate();
    detail::require(static_cast<int64_t>(weights_f32_.size()) == descriptor_.weight_count(),
                    "weights size", weights_f32_.size(),
                    detail::concat("O*kH*kW*(I/groups) = ", descriptor_.weight_count()).c_str());
    detail::require(
        bias_.empty() || static_cast<int64_t>(bias_.size()) == descriptor_.output_feature_channels,
        "bias size", bias_.size(), "0 or output_feature_channels");
}

ArrayDataSource ArrayDataSource::quantized(ConvolutionDescriptor descriptor,
                                           std::vector<uint8_t> weights,
                                           QuantizationType quantization, std::vector<float> table,
                                           std::vector<float> bias, std::string label) {
    descriptor.validate();
    ArrayDataSource ds;
    ds.descriptor_ = std::move(descriptor);
    ds.data_type_ = DataType::UInt8;
    ds.quantization_ = quantization;
    ds.weights_u8_ = std::move(weights);
    ds.table_ = std::move(table);
    ds.bias_ = std::move(bias);
    ds.label_ = std::move(label);
    detail::require(static_cast<int64_t>(ds.weights_u8_.size()) == ds.descriptor_.weight_count(),
                    "weights size", ds.weights_u8_.size(), "O*kH*kW*(I/groups)");
    const size_t want = quantization == QuantizationType::Linear
                            ? 2 * static_cast<size_t>(ds.descriptor_.output_feature_channels)
                            : 256;
    detail::require(quantization != QuantizationType::None, "quantization",
                    static_cast<int>(quantization), "Linear or LookupTable for uint8 weights");
    detail::require(ds.table_.size() == want, "quantization table size", ds.table_.size(),
                    detail::concat(want).c_str());
    detail::require(ds.bias_.empty() || static_cast<int64_t>(ds.bias_.size()) ==
                                            ds.descriptor_.output_feature_channels,
                    "bias size", ds.bias_.size(), "0 or output_feature_channels");
    return ds;
}

ArrayDataSource ArrayDataSource::float16(ConvolutionDescriptor descriptor,
                                         std::vector<uint16_t> weights, std::vector<float> bias,
                                         std::string label) {
    descriptor.validate();
    ArrayDataSource ds;
    ds.descriptor_ = std::move(descriptor);
    ds.data_type_ = DataType::Float16;
    ds.weights_f16_ = std::move(weights);
    ds.bias_ = std::move(bias);
    ds.label_ = std::move(label);
    detail::require(static_cast<int64_t>(ds.weights_f16_.size()) == ds.descriptor_.weight_count(),
                    "weights size", ds.weights_f16_.size(), "O*kH*kW*(I/groups)");
    detail::require(ds.bias_.empty() || static_cast<int64_t>(ds.bias_.size()) ==
                                            ds.descriptor_.output_feature_channels,
                    "bias size", ds.bias_.size(), "0 or output_feature_channels");
    return ds;
}

const void* ArrayDataSource::weights() {
    switch (data_type_) {
        case DataType::UInt8:
            return weights_u8_.data();
        case DataType::Float16:
            return weights_f16_.data();
        default:
            return weights_f32_.data();
    }
}

const float* ArrayDataSource::ranges_for_uint8_kernel() {
    return quantization_ == QuantizationType::Linear ? table_.data() : nullptr;
}

const float* ArrayDataSource::lookup_table_for_uint8_kernel() {
    return quantization_ == QuantizationType::LookupTable ? table_.data() : nullptr;
}

}  // namespace convt
