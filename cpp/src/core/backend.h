// The interface every backend implements. Core talks to backends only through this.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../../../metal/convt_params.h"
#include "convt/descriptor.h"

namespace convt::detail {

/// Weights after preparation (BN fold, dequantisation, precision rounding), in MPS's OHWI
/// layout [O][kH][kW][I/groups]. Values are exactly representable in `type`.
struct PreparedWeights {
    DataType type = DataType::Float16;  // what kernels read: Float32 or Float16
    int64_t out_channels = 0, kernel_h = 0, kernel_w = 0, in_per_group = 0, groups = 1;
    std::vector<float> values;
    std::vector<float> bias;  // empty: no bias
    NeuronDescriptor neuron;  // neuron.data: PReLU slopes per output channel
};

/// Backend-owned copy of a layer's weights (packed, or in device memory).
class DeviceWeights {
 public:
    virtual ~DeviceWeights() = default;
};

class Backend {
 public:
    virtual ~Backend() = default;
    virtual std::string kind() const = 0;
    virtual std::string name() const = 0;
    virtual std::unique_ptr<DeviceWeights> upload(const PreparedWeights& weights) = 0;
    /// One forward dispatch: `src`/`dst` are the views' base pointers; params hold the rest.
    virtual void forward(const ConvtParams& params, const DeviceWeights& weights, const void* src,
                         void* dst) = 0;
};

/// A layer's weights on the host and on its device; shared by the layer and in-flight work.
struct LayerWeights {
    PreparedWeights host;
    std::unique_ptr<DeviceWeights> device;
};

std::shared_ptr<Backend> make_cpu_backend();

}  // namespace convt::detail
