#include "weights.h"

#include <cmath>

#include "check.h"
#include "half.h"

namespace convt::detail {

double load_as_double(const void* data, DataType type, int64_t i) {
    switch (type) {
        case DataType::Float16:
            return half_to_float(static_cast<const uint16_t*>(data)[i]);
        case DataType::Float64:
            return static_cast<const double*>(data)[i];
        default:
            return static_cast<const float*>(data)[i];
    }
}

void round_to_type(std::vector<double>& values, DataType type) {
    if (type == DataType::Float16)
        for (double& v : values) v = round_to_half(static_cast<float>(v));
    else if (type == DataType::Float32)
        for (double& v : values) v = static_cast<float>(v);
}

namespace {

// Calls purge() however preparation ends.
struct PurgeGuard {
    DataSource& source;
    ~PurgeGuard() { source.purge(); }
};

std::vector<float> dequantize(DataSource& source, const uint8_t* q, int64_t count,
                              int64_t out_channels) {
    std::vector<float> w(static_cast<size_t>(count));
    const int64_t per_channel = count / out_channels;
    switch (source.weights_quantization_type()) {
        case QuantizationType::Linear: {
            const float* ranges = source.ranges_for_uint8_kernel();
            if (!ranges)
                throw std::invalid_argument(
                    "ranges_for_uint8_kernel must be given for linear uint8 weights, got none");
            for (int64_t i = 0; i < count; ++i) {
                const float lo = ranges[2 * (i / per_channel)],
                            hi = ranges[2 * (i / per_channel) + 1];
                w[i] = (static_cast<float>(q[i]) / 255.f) * (hi - lo) + lo;
            }
            break;
        }
        case QuantizationType::LookupTable: {
            const float* table = source.lookup_table_for_uint8_kernel();
            if (!table)
                throw std::invalid_argument(
                    "lookup_table_for_uint8_kernel must be given for lookup-table uint8 weights, "
                    "got none");
            for (int64_t i = 0; i < count; ++i) w[i] = table[q[i]];
            break;
        }
        default:
            throw std::invalid_argument(
                "weights_quantization_type must be linear or lookup_table for uint8 weights, got "
                "none");
    }
    return w;
}

// In fp32, as MPS does, on fp32 values held in doubles.
void fold_batch_norm(const BatchNormParameters& bn, PreparedWeights& p) {
    const int64_t O = p.out_channels, per = p.kernel_h * p.kernel_w * p.in_per_group;
    if (p.bias.empty()) p.bias.assign(static_cast<size_t>(O), 0.0);
    for (int64_t o = 0; o < O; ++o) {
        const float scale = bn.gamma[o] / std::sqrt(bn.variance[o] + bn.epsilon);
        const float shift = bn.beta[o] - scale * bn.mean[o];
        for (int64_t i = 0; i < per; ++i)
            p.values[o * per + i] = static_cast<float>(p.values[o * per + i]) * scale;
        p.bias[o] = static_cast<float>(p.bias[o]) * scale + shift;
    }
}

}  // namespace

PreparedWeights prepare_from_data_source(DataSource& source, ConvolutionDescriptor& descriptor) {
    if (!source.load()) throw std::runtime_error("data_source.load() returned false");
    PurgeGuard guard{source};
    descriptor = source.descriptor();
    descriptor.validate();
    const DataType type = source.data_type();
    const DataType kernel_type = source.kernel_weights_data_type();
    require(kernel_type == DataType::Float16 || kernel_type == DataType::Float32,
            "kernel_weights_data_type", to_string(kernel_type), "float16 or float32");
    require(kernel_type == DataType::Float16 || type == DataType::Float32,
            "data_type for float32 kernel weights", to_string(type), "float32");

    PreparedWeights p;
    p.type = kernel_type;
    p.out_channels = descriptor.output_feature_channels;
    p.kernel_h = descriptor.kernel_height;
    p.kernel_w = descriptor.kernel_width;
    p.in_per_group = descriptor.input_feature_channels / descriptor.groups;
    p.groups = descriptor.groups;
    p.neuron = descriptor.fused_neuron_descriptor;

    const int64_t count = descriptor.weight_count();
    const void* raw = source.weights();
    if (!raw) throw std::invalid_argument("data_source.weights() must return weights, got none");
    if (type == DataType::UInt8) {
        const auto w = dequantize(source, static_cast<const uint8_t*>(raw), count, p.out_channels);
        p.values.assign(w.begin(), w.end());
    } else {
        require(type == DataType::Float32 || type == DataType::Float16, "data_type",
                to_string(type), "float32, float16 or uint8");
        p.values.resize(static_cast<size_t>(count));
        for (int64_t i = 0; i < count; ++i) p.values[i] = load_as_double(raw, type, i);
    }
    if (const float* bias = source.bias_terms()) p.bias.assign(bias, bias + p.out_channels);
    if (descriptor.batch_norm) fold_batch_norm(*descriptor.batch_norm, p);
    round_to_type(p.values, p.type);
    return p;
}

PreparedWeights prepare_from_torch(const TensorView& weight, const TensorView* bias,
                                   int64_t groups) {
    const int64_t cin = weight.n, cout_g = weight.c, kh = weight.h, kw = weight.w;
    PreparedWeights p;
    p.type = weight.type;
    p.groups = groups;
    p.out_channels = cout_g * groups;
    p.kernel_h = kh, p.kernel_w = kw;
    p.in_per_group = cin / groups;
    p.values.resize(static_cast<size_t>(p.out_channels * kh * kw * p.in_per_group));
    const auto* base = static_cast<const char*>(weight.data);
    const auto item = static_cast<int64_t>(element_size(weight.type));
    for (int64_t oc = 0; oc < p.out_channels; ++oc) {
        const int64_t g = oc / cout_g, ocl = oc % cout_g;
        for (int64_t ky = 0; ky < kh; ++ky)
            for (int64_t kx = 0; kx < kw; ++kx)
                for (int64_t icl = 0; icl < p.in_per_group; ++icl) {
                    const int64_t src = (g * p.in_per_group + icl) * weight.stride_n +
                                        ocl * weight.stride_c + (kh - 1 - ky) * weight.stride_h +
                                        (kw - 1 - kx) * weight.stride_w;
                    p.values[((oc * kh + ky) * kw + kx) * p.in_per_group + icl] =
                        load_as_double(base + src * item, weight.type, 0);
                }
    }
    if (bias) {
        p.bias.resize(static_cast<size_t>(p.out_channels));
        const auto* b = static_cast<const char*>(bias->data);
        const auto bitem = static_cast<int64_t>(element_size(bias->type));
        for (int64_t oc = 0; oc < p.out_channels; ++oc)
            p.bias[oc] = load_as_double(b + oc * bias->stride_c * bitem, bias->type, 0);
    }
    return p;
}

}  // namespace convt::detail
