// Binary layout (little-endian), version 1:
//   "CONVTKRN" | u32 version | u32 kind | u64 payload size | u32 CRC-32 of the payload | payload
// The payload holds the descriptor, the kernel's properties and a weights block. Every read is
// bounds-checked and every count is checked against the descriptor before anything is allocated.
#include "convt/serialization.h"

#include <array>
#include <cstring>

#include "backend.h"
#include "check.h"
#include "half.h"

namespace convt {

namespace {

constexpr char kMagic[8] = {'C', 'O', 'N', 'V', 'T', 'K', 'R', 'N'};
constexpr uint32_t kVersion = 1;
enum Kind : uint32_t { kTranspose = 1, kGradient = 2 };

uint32_t crc32(const uint8_t* data, size_t size) {
    static const auto table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        return t;
    }();
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

[[noreturn]] void corrupt(const std::string& why) {
    throw std::invalid_argument("convt serialized data: " + why);
}

class Writer {
 public:
    template <typename T>
    void put(T v) {
        const auto* p = reinterpret_cast<const uint8_t*>(&v);
        bytes.insert(bytes.end(), p, p + sizeof(T));
    }
    void put_bytes(const void* data, size_t size) {
        const auto* p = static_cast<const uint8_t*>(data);
        bytes.insert(bytes.end(), p, p + size);
    }
    void put_floats(const std::vector<float>& v) {
        put<uint64_t>(v.size());
        put_bytes(v.data(), v.size() * sizeof(float));
    }
    void put_string(const std::string& s) {
        put<uint64_t>(s.size());
        put_bytes(s.data(), s.size());
    }
    std::vector<uint8_t> bytes;
};

class Reader {
 public:
    Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
    template <typename T>
    T get() {
        T v;
        std::memcpy(&v, take(sizeof(T)), sizeof(T));
        return v;
    }
    const uint8_t* take(size_t size) {
        if (size > static_cast<size_t>(end_ - p_)) corrupt("truncated");
        const uint8_t* at = p_;
        p_ += size;
        return at;
    }
    /// A count of `item`-byte elements, checked against what is left and against `expected`.
    uint64_t count(size_t item, const char* what, int64_t expected = -1) {
        const auto n = get<uint64_t>();
        if (expected >= 0 && n != static_cast<uint64_t>(expected))
            corrupt(detail::concat(what, " has ", n, " entries, expected ", expected));
        if (n > static_cast<uint64_t>(end_ - p_) / item)
            corrupt(detail::concat(what, " is truncated"));
        return n;
    }
    std::vector<float> floats(const char* what, int64_t expected = -1) {
        const uint64_t n = count(sizeof(float), what, expected);
        std::vector<float> v(n);
        if (n) std::memcpy(v.data(), take(n * sizeof(float)), n * sizeof(float));
        return v;
    }
    std::string string(const char* what) {
        const uint64_t n = count(1, what);
        return std::string(reinterpret_cast<const char*>(take(n)), n);
    }
    bool done() const { return p_ == end_; }

 private:
    const uint8_t* p_;
    const uint8_t* end_;
};

template <typename E>
E enum_in(int32_t v, int32_t lo, int32_t hi, const char* what) {
    if (v < lo || v > hi) corrupt(detail::concat(what, " ", v, " is not valid"));
    return static_cast<E>(v);
}

void write_descriptor(Writer& w, const ConvolutionDescriptor& d) {
    for (int64_t v : {d.kernel_width, d.kernel_height, d.input_feature_channels,
                      d.output_feature_channels, d.stride_in_pixels_x, d.stride_in_pixels_y,
                      d.dilation_rate_x, d.dilation_rate_y, d.groups})
        w.put<int64_t>(v);
    const NeuronDescriptor& n = d.fused_neuron_descriptor;
    w.put<int32_t>(static_cast<int32_t>(n.type));
    w.put<float>(n.a), w.put<float>(n.b), w.put<float>(n.c);
    w.put_floats(n.data);
    w.put<uint8_t>(d.batch_norm.has_value());
    if (d.batch_norm) {
        const auto& bn = *d.batch_norm;
        for (const auto* v : {&bn.mean, &bn.variance, &bn.gamma, &bn.beta}) w.put_floats(*v);
        w.put<float>(bn.epsilon);
    }
}

ConvolutionDescriptor read_descriptor(Reader& r) {
    ConvolutionDescriptor d;
    for (int64_t* v : {&d.kernel_width, &d.kernel_height, &d.input_feature_channels,
                       &d.output_feature_channels, &d.stride_in_pixels_x, &d.stride_in_pixels_y,
                       &d.dilation_rate_x, &d.dilation_rate_y, &d.groups})
        *v = r.get<int64_t>();
    try {
        d.validate();  // before any count is trusted
    } catch (const std::invalid_argument& e) {
        corrupt(std::string("descriptor: ") + e.what());
    }
    const int64_t O = d.output_feature_channels;
    NeuronDescriptor& n = d.fused_neuron_descriptor;
    n.type = enum_in<NeuronType>(r.get<int32_t>(), 0, static_cast<int32_t>(NeuronType::GELU),
                                 "neuron type");
    n.a = r.get<float>(), n.b = r.get<float>(), n.c = r.get<float>();
    n.data = r.floats("neuron data", n.type == NeuronType::PReLU ? O : 0);
    const auto has_bn = r.get<uint8_t>();
    if (has_bn > 1) corrupt("batch-norm flag is not 0 or 1");
    if (has_bn) {
        BatchNormParameters bn;
        for (auto* v : {&bn.mean, &bn.variance, &bn.gamma, &bn.beta})
            *v = r.floats("batch norm", O);
        bn.epsilon = r.get<float>();
        d.batch_norm = std::move(bn);
    }
    return d;
}

}  // namespace

// Friend of ConvolutionWeightsKernel: reads what the data source (or the kernel) holds.
struct KernelSerializer {
    static void write_weights(Writer& w, ConvolutionWeightsKernel& k) {
        const ConvolutionDescriptor& d = k.descriptor();
        const int64_t count = d.weight_count(), O = d.output_feature_channels;
        w.put<uint8_t>(!k.weights_from_data_source());
        if (!k.weights_from_data_source()) {  // reloaded from a state: store W', bias' as kept
            std::vector<double> values, bias;
            k.copy_weights(values, bias);
            const DataType type = k.weights_data_type();
            w.put<int32_t>(static_cast<int32_t>(type == DataType::Float16 ? DataType::Float16
                                                                          : DataType::Float32));
            w.put<int32_t>(static_cast<int32_t>(type));
            w.put<int32_t>(static_cast<int32_t>(QuantizationType::None));
            w.put_floats({});
            w.put<uint64_t>(count);
            for (double v : values) {
                if (type == DataType::Float16)
                    w.put<uint16_t>(detail::float_to_half(static_cast<float>(v)));
                else
                    w.put<float>(static_cast<float>(v));
            }
            w.put_floats(std::vector<float>(bias.begin(), bias.end()));
            return;
        }
        DataSource& s = *k.data_source();
        if (!s.load()) throw std::runtime_error("data_source.load() returned false");
        struct Purge {
            DataSource& s;
            ~Purge() { s.purge(); }
        } purge{s};
        if (s.descriptor().weight_count() != count)
            throw std::invalid_argument(
                "data_source descriptor no longer matches the kernel; reload the kernel before "
                "serializing it");
        const DataType type = s.data_type();
        const QuantizationType q = s.weights_quantization_type();
        w.put<int32_t>(static_cast<int32_t>(type));
        w.put<int32_t>(static_cast<int32_t>(s.kernel_weights_data_type()));
        w.put<int32_t>(static_cast<int32_t>(type == DataType::UInt8 ? q : QuantizationType::None));
        std::vector<float> table;
        if (type == DataType::UInt8) {
            const float* t = q == QuantizationType::Linear ? s.ranges_for_uint8_kernel()
                                                           : s.lookup_table_for_uint8_kernel();
            if (!t)
                throw std::invalid_argument(
                    "data_source must provide its uint8 quantization table");
            table.assign(t, t + (q == QuantizationType::Linear ? 2 * O : 256));
        }
        w.put_floats(table);
        w.put<uint64_t>(count);
        w.put_bytes(s.weights(), static_cast<size_t>(count) * element_size(type));
        const float* bias = s.bias_terms();
        w.put_floats(bias ? std::vector<float>(bias, bias + O) : std::vector<float>{});
    }

    // The data source a loaded kernel gets: the stored weights, and the descriptor without batch
    // norm when the weights were stored already folded.
    static std::shared_ptr<ArrayDataSource> read_weights(Reader& r,
                                                         const ConvolutionDescriptor& desc,
                                                         const std::string& label, bool* folded) {
        const auto f = r.get<uint8_t>();
        if (f > 1) corrupt("folded flag is not 0 or 1");
        *folded = f == 1;
        ConvolutionDescriptor d = desc;
        if (*folded) d.batch_norm.reset();
        const auto type = enum_in<DataType>(r.get<int32_t>(), 0, 2, "weights data type");
        const auto kernel_type =
            enum_in<DataType>(r.get<int32_t>(), 0, 1, "kernel weights data type");
        const auto q = enum_in<QuantizationType>(r.get<int32_t>(), 0, 2, "quantization type");
        const int64_t O = d.output_feature_channels, count = d.weight_count();
        if ((type == DataType::UInt8) != (q != QuantizationType::None))
            corrupt("quantization does not match the weights data type");
        std::vector<float> table =
            r.floats("quantization table", q == QuantizationType::Linear        ? 2 * O
                                           : q == QuantizationType::LookupTable ? 256
                                                                                : 0);
        r.count(element_size(type), "weights", count);
        const uint8_t* raw = r.take(static_cast<size_t>(count) * element_size(type));
        const uint64_t nb = r.count(sizeof(float), "bias");
        if (nb != 0 && nb != static_cast<uint64_t>(O)) corrupt("bias has the wrong length");
        std::vector<float> bias(nb);
        if (nb) std::memcpy(bias.data(), r.take(nb * 4), nb * 4);
        try {
            switch (type) {
                case DataType::UInt8:
                    return std::make_shared<ArrayDataSource>(
                        ArrayDataSource::quantized(d, std::vector<uint8_t>(raw, raw + count), q,
                                                   std::move(table), std::move(bias), label));
                case DataType::Float16: {
                    if (kernel_type != DataType::Float16)
                        corrupt("float16 weights need float16 kernel weights");
                    std::vector<uint16_t> bits(static_cast<size_t>(count));
                    std::memcpy(bits.data(), raw, bits.size() * 2);
                    return std::make_shared<ArrayDataSource>(
                        ArrayDataSource::float16(d, std::move(bits), std::move(bias), label));
                }
                default: {
                    std::vector<float> values(static_cast<size_t>(count));
                    std::memcpy(values.data(), raw, values.size() * 4);
                    return std::make_shared<ArrayDataSource>(d, std::move(values), std::move(bias),
                                                             kernel_type, label);
                }
            }
        } catch (const std::invalid_argument& e) {
            corrupt(e.what());
        }
    }

    static void set_descriptor(ConvolutionWeightsKernel& k, ConvolutionDescriptor d) {
        k.set_descriptor(std::move(d));
        k.weights_from_data_source_ = false;
    }
};

namespace {

std::vector<uint8_t> frame(Kind kind, const std::vector<uint8_t>& payload) {
    Writer w;
    w.put_bytes(kMagic, sizeof(kMagic));
    w.put<uint32_t>(kVersion);
    w.put<uint32_t>(kind);
    w.put<uint64_t>(payload.size());
    w.put<uint32_t>(crc32(payload.data(), payload.size()));
    w.put_bytes(payload.data(), payload.size());
    return std::move(w.bytes);
}

Reader unframe(const uint8_t* data, size_t size, Kind kind) {
    if (!data && size) corrupt("no data");
    Reader r(data, size);
    if (size < sizeof(kMagic) || std::memcmp(r.take(sizeof(kMagic)), kMagic, sizeof(kMagic)) != 0)
        corrupt("not a convt kernel (bad magic)");
    const auto version = r.get<uint32_t>();
    if (version != kVersion)
        corrupt(detail::concat("version ", version, " is not supported (expected ", kVersion, ")"));
    const auto got = r.get<uint32_t>();
    if (got != kind)
        corrupt(detail::concat(
            "holds kernel kind ", got, ", expected ", static_cast<uint32_t>(kind), " (",
            kind == kTranspose ? "ConvolutionTranspose" : "ConvolutionTransposeGradient", ")"));
    const auto payload_size = r.get<uint64_t>();
    const auto crc = r.get<uint32_t>();
    const size_t header = sizeof(kMagic) + 4 + 4 + 8 + 4;
    if (payload_size != size - header) corrupt("payload size does not match the data's length");
    const uint8_t* payload = data + header;
    if (crc32(payload, payload_size) != crc) corrupt("checksum mismatch");
    return Reader(payload, payload_size);
}

void write_common(Writer& w, ConvolutionWeightsKernel& k) {
    write_descriptor(w, k.descriptor());
    w.put_string(k.label);
}

}  // namespace

std::vector<uint8_t> serialize(ConvolutionTranspose& k) {
    Writer w;
    write_common(w, k);
    for (int64_t v : {k.kernel_offset_x, k.kernel_offset_y, k.offset.x, k.offset.y, k.offset.z,
                      k.clip_rect.x, k.clip_rect.y, k.clip_rect.z, k.clip_rect.width,
                      k.clip_rect.height, k.clip_rect.depth, k.source_feature_channel_offset,
                      k.source_feature_channel_max_count, k.destination_feature_channel_offset})
        w.put<int64_t>(v);
    w.put<int32_t>(static_cast<int32_t>(k.edge_mode));
    w.put<uint32_t>(k.padding.method);
    w.put<int32_t>(static_cast<int32_t>(k.accumulator_precision));
    KernelSerializer::write_weights(w, k);
    return frame(kTranspose, w.bytes);
}

std::vector<uint8_t> serialize(ConvolutionTransposeGradient& k) {
    Writer w;
    write_common(w, k);
    w.put<int32_t>(static_cast<int32_t>(k.gradient_option));
    KernelSerializer::write_weights(w, k);
    return frame(kGradient, w.bytes);
}

std::unique_ptr<ConvolutionTranspose> deserialize_convolution_transpose(const uint8_t* data,
                                                                        size_t size,
                                                                        Device device) {
    Reader r = unframe(data, size, kTranspose);
    const ConvolutionDescriptor desc = read_descriptor(r);
    const std::string label = r.string("label");
    int64_t v[14];
    for (int64_t& x : v) x = r.get<int64_t>();
    const auto edge = enum_in<EdgeMode>(r.get<int32_t>(), 0, 1, "edge mode");
    const auto method = r.get<uint32_t>();
    const auto acc = enum_in<AccumulatorPrecision>(r.get<int32_t>(), 0, 1, "accumulator precision");
    bool folded = false;
    auto source = KernelSerializer::read_weights(r, desc, label, &folded);
    if (!r.done()) corrupt("trailing bytes after the weights");
    auto k = std::make_unique<ConvolutionTranspose>(std::move(device), std::move(source));
    if (folded) KernelSerializer::set_descriptor(*k, desc);
    k->label = label;
    k->kernel_offset_x = v[0], k->kernel_offset_y = v[1];
    k->offset = Offset{v[2], v[3], v[4]};
    k->clip_rect = Region{v[5], v[6], v[7], v[8], v[9], v[10]};
    k->source_feature_channel_offset = v[11];
    k->source_feature_channel_max_count = v[12];
    k->destination_feature_channel_offset = v[13];
    k->edge_mode = edge;
    k->padding.method = method;
    k->accumulator_precision = acc;
    return k;
}

std::unique_ptr<ConvolutionTransposeGradient> deserialize_convolution_transpose_gradient(
    const uint8_t* data, size_t size, Device device) {
    Reader r = unframe(data, size, kGradient);
    const ConvolutionDescriptor desc = read_descriptor(r);
    const std::string label = r.string("label");
    const auto option = enum_in<GradientOption>(r.get<int32_t>(), 1, 3, "gradient option");
    bool folded = false;
    auto source = KernelSerializer::read_weights(r, desc, label, &folded);
    if (!r.done()) corrupt("trailing bytes after the weights");
    auto k = std::make_unique<ConvolutionTransposeGradient>(std::move(device), std::move(source));
    if (folded) KernelSerializer::set_descriptor(*k, desc);
    k->label = label;
    k->gradient_option = option;
    return k;
}

}  // namespace convt
