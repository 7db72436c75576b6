// Fused activations on the host, in fp32 (formulas in convt/descriptor.h).
#pragma once

#include <algorithm>
#include <cmath>

#include "convt/types.h"

namespace convt::cpu {

inline float apply_neuron(NeuronType type, float v, float a, float b, float c, float slope) {
    switch (type) {
        case NeuronType::None:
            return v;
        case NeuronType::ReLU:
            return v >= 0.f ? v : a * v;
        case NeuronType::Linear:
            return a * v + b;
        case NeuronType::Sigmoid:
            return 1.f / (1.f + std::exp(-v));
        case NeuronType::HardSigmoid: {
            // Comparisons, not std::min/max, so that NaN stays NaN (std::max(0, NaN) is 0).
            const float h = a * v + b;
            return h < 0.f ? 0.f : (h > 1.f ? 1.f : h);
        }
        case NeuronType::TanH:
            return a * std::tanh(b * v);
        case NeuronType::Absolute:
            return std::fabs(v);
        case NeuronType::SoftPlus:
            return a * std::log1p(std::exp(b * v));
        case NeuronType::SoftSign:
            return v / (1.f + std::fabs(v));
        case NeuronType::ELU:
            return v >= 0.f ? v : a * std::expm1(v);
        case NeuronType::PReLU:
            return v >= 0.f ? v : slope * v;
        case NeuronType::ReLUN: {
            const float r = v >= 0.f ? v : a * v;
            return r > b ? b : r;  // NaN stays NaN
        }
        case NeuronType::Power:
            return std::pow(a * v + b, c);
        case NeuronType::Exponential:
            return c == -1.f ? std::exp(a * v + b) : std::pow(c, a * v + b);
        case NeuronType::Logarithm:
            return c == -1.f ? std::log(a * v + b) : std::log(a * v + b) / std::log(c);
        case NeuronType::GELU:
            return 0.5f * v * (1.f + std::erf(v * 0.70710678118654752f));
    }
    return v;
}

}  // namespace convt::cpu
