// Saving and loading kernels (the NSCoding analogue, spec §7.4): a versioned binary format.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "convt/convolution_transpose.h"
#include "convt/convolution_transpose_gradient.h"

namespace convt {

/// Every property, the descriptor (neuron, batch norm) and the weights in their stored type.
/// Reads the data source again (load/weights/purge) unless a state was reloaded since, in which
/// case the kernel's current (already folded) weights are stored.
std::vector<uint8_t> serialize(ConvolutionTranspose& kernel);
std::vector<uint8_t> serialize(ConvolutionTransposeGradient& kernel);

/// Throw std::invalid_argument("convt serialized data: ...") for truncated, corrupt or foreign
/// input; never read outside [data, data + size).
std::unique_ptr<ConvolutionTranspose> deserialize_convolution_transpose(const uint8_t* data,
                                                                        size_t size, Device device);
std::unique_ptr<ConvolutionTransposeGradient> deserialize_convolution_transpose_gradient(
    const uint8_t* data, size_t size, Device device);

}  // namespace convt
