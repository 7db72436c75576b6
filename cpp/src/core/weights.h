// Weight preparation, done once per layer.
#pragma once

#include "backend.h"
#include "convt/data_source.h"
#include "convt/tensor.h"

namespace convt::detail {

/// load() -> read -> dequantise -> BN fold (fp32) -> round to the kernel weight type -> purge().
/// `descriptor` receives the data source's (validated) descriptor.
PreparedWeights prepare_from_data_source(DataSource& source, ConvolutionDescriptor& descriptor);

/// PyTorch layout [Cin][Cout/groups][kH][kW] -> OHWI, flipped 180°, keeping the weight's dtype.
PreparedWeights prepare_from_torch(const TensorView& weight, const TensorView* bias,
                                   int64_t groups);

/// Reads element i of a float32/float16/float64 buffer as double (exactly).
double load_as_double(const void* data, DataType type, int64_t i);
/// Rounds every value to what `type` can hold (fp16 or fp32; float64 unchanged).
void round_to_type(std::vector<double>& values, DataType type);

}  // namespace convt::detail
