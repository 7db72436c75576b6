#include "convt/descriptor.h"

#include "check.h"

namespace convt {

NeuronDescriptor NeuronDescriptor::with_defaults(NeuronType type) {
    NeuronDescriptor n;
    n.type = type;
    switch (type) {
        case NeuronType::Linear:
            n.a = 1.f;
            break;
        case NeuronType::HardSigmoid:
            n.a = 0.2f;
            n.b = 0.5f;
            break;
        case NeuronType::TanH:
        case NeuronType::SoftPlus:
            n.a = 1.f;
            n.b = 1.f;
            break;
        case NeuronType::ELU:
            n.a = 1.f;
            break;
        case NeuronType::ReLUN:
            n.b = 6.f;
            break;
        case NeuronType::Power:
            n.a = 1.f;
            n.c = 1.f;
            break;
        case NeuronType::Exponential:
        case NeuronType::Logarithm:
            n.a = 1.f;
            n.c = -1.f;
            break;
        default:
            break;
    }
    return n;
}

void ConvolutionDescriptor::set_batch_normalization_parameters_for_inference(
    std::vector<float> mean, std::vector<float> variance, std::vector<float> gamma,
    std::vector<float> beta, float epsilon) {
    batch_norm = BatchNormParameters{std::move(mean), std::move(variance), std::move(gamma),
                                     std::move(beta), epsilon};
}

void ConvolutionDescriptor::validate() const {
    using detail::require_int32;
    using detail::require_positive;
    require_positive("kernel_width", kernel_width);
    require_positive("kernel_height", kernel_height);
    require_positive("input_feature_channels", input_feature_channels);
    require_positive("output_feature_channels", output_feature_channels);
    require_positive("stride_in_pixels_x", stride_in_pixels_x);
    require_positive("stride_in_pixels_y", stride_in_pixels_y);
    require_positive("dilation_rate_x", dilation_rate_x);
    require_positive("dilation_rate_y", dilation_rate_y);
    require_positive("groups", groups);
    for (auto [name, v] : {std::pair{"kernel_width", kernel_width},
                           {"kernel_height", kernel_height},
                           {"input_feature_channels", input_feature_channels},
                           {"output_feature_channels", output_feature_channels},
                           {"stride_in_pixels_x", stride_in_pixels_x},
                           {"stride_in_pixels_y", stride_in_pixels_y},
                           {"dilation_rate_x", dilation_rate_x},
                           {"dilation_rate_y", dilation_rate_y}})
        require_int32(name, v);
    if (input_feature_channels % groups != 0)
        throw std::invalid_argument(detail::concat(
            "input_feature_channels must be divisible by groups, got input_feature_channels=",
            input_feature_channels, ", groups=", groups));
    if (output_feature_channels % groups != 0)
        throw std::invalid_argument(detail::concat(
            "output_feature_channels must be divisible by groups, got output_feature_channels=",
            output_feature_channels, ", groups=", groups));
    require_int32("dilation_rate_x * (kernel_width - 1) + 1",
                  dilation_rate_x * (kernel_width - 1) + 1);
    require_int32("dilation_rate_y * (kernel_height - 1) + 1",
                  dilation_rate_y * (kernel_height - 1) + 1);
    // Every factor is < 2^31, so the product fits in 128 bits; weight_count() must fit in 64.
    const __int128 count = static_cast<__int128>(output_feature_channels) * kernel_height *
                           kernel_width * (input_feature_channels / groups);
    if (count > (__int128{1} << 40))
        throw std::invalid_argument(detail::concat(
            "kernel weight count output_feature_channels * kernel_height * kernel_width * "
            "input_feature_channels / groups must be <= 2^40, got ",
            output_feature_channels, " * ", kernel_height, " * ", kernel_width, " * ",
            input_feature_channels / groups));
    auto nt = static_cast<int>(fused_neuron_descriptor.type);
    detail::require(nt >= 0 && nt <= static_cast<int>(NeuronType::GELU),
                    "fused_neuron_descriptor.type", nt, "a NeuronType");
    const auto O = static_cast<size_t>(output_feature_channels);
    if (fused_neuron_descriptor.type == NeuronType::PReLU)
        detail::require(fused_neuron_descriptor.data.size() == O,
                        "fused_neuron_descriptor.data size", fused_neuron_descriptor.data.size(),
                        detail::concat("output_feature_channels (", O, ") for PReLU").c_str());
    if (batch_norm) {
        const auto& bn = *batch_norm;
        for (auto [name, v] : {std::pair{"batch_norm mean size", bn.mean.size()},
                               {"batch_norm variance size", bn.variance.size()},
                               {"batch_norm gamma size", bn.gamma.size()},
                               {"batch_norm beta size", bn.beta.size()}})
            detail::require(v == O, name, v,
                            detail::concat("output_feature_channels (", O, ")").c_str());
    }
}

int64_t ConvolutionDescriptor::weight_count() const {
    return output_feature_channels * kernel_height * kernel_width *
           (input_feature_channels / groups);
}

}  // namespace convt
