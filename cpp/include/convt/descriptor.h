// MPSCNNConvolutionDescriptor and MPSNNNeuronDescriptor analogues.
#pragma once

#include <optional>
#include <vector>

#include "convt/types.h"

namespace convt {

/// A fused activation applied to every output value after bias and batch-norm folding.
/// Formulas (v = accumulated value, oc = output channel):
///   ReLU: v >= 0 ? v : a*v            Linear: a*v + b          Sigmoid: 1/(1+exp(-v))
///   HardSigmoid: clamp(a*v+b, 0, 1)   TanH: a*tanh(b*v)        Absolute: |v|
///   SoftPlus: a*log(1+exp(b*v))       SoftSign: v/(1+|v|)      ELU: v >= 0 ? v : a*(exp(v)-1)
///   PReLU: v >= 0 ? v : data[oc]*v    ReLUN: min(v >= 0 ? v : a*v, b)
///   Power: (a*v+b)^c   Exponential: c^(a*v+b)   Logarithm: log_c(a*v+b)  (c == -1: base e)
///   GELU: 0.5*v*(1+erf(v/sqrt(2)))
struct NeuronDescriptor {
    NeuronType type = NeuronType::None;
    float a = 0.f, b = 0.f, c = 0.f;
    std::vector<float> data;  // PReLU: one slope per output channel

    /// A descriptor with convt's documented default parameters for `type`.
    static NeuronDescriptor with_defaults(NeuronType type);
};

/// Inference batch-norm parameters, folded into weights and bias (spec §3).
struct BatchNormParameters {
    std::vector<float> mean, variance, gamma, beta;
    float epsilon = 0.f;
};

struct ConvolutionDescriptor {
    int64_t kernel_width = 3, kernel_height = 3;
    int64_t input_feature_channels = 0, output_feature_channels = 0;
    int64_t stride_in_pixels_x = 1, stride_in_pixels_y = 1;
    int64_t dilation_rate_x = 1, dilation_rate_y = 1;
    int64_t groups = 1;
    NeuronDescriptor fused_neuron_descriptor;
    std::optional<BatchNormParameters> batch_norm;

    void set_batch_normalization_parameters_for_inference(std::vector<float> mean,
                                                          std::vector<float> variance,
                                                          std::vector<float> gamma,
                                                          std::vector<float> beta, float epsilon);
    /// Throws std::invalid_argument naming the first field that breaks a rule.
    void validate() const;
    /// Number of OHWI weights: O * kH * kW * (I / groups).
    int64_t weight_count() const;
};

}  // namespace convt
