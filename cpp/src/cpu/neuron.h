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
        case NeuronType::HardSigmoid:
            return std::min(1.f, std::max(0.f, a * v + b));
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
        case NeuronType::ReLUN:
            return std::min(v >= 0.f ? v : a * v, b);
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
