#include "convt/functional.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>

#include "../cpu/half_rows.h"
#include "../cpu/thread_pool.h"
#include "../cpu/transpose.h"
#include "check.h"
#include "convt/geometry.h"
#include "half.h"
#include "plan.h"
#include "weights.h"

namespace convt {

using detail::concat;
using detail::require;

namespace detail {
bool poison_scratch() {
    const char* v = std::getenv("CONVT_POISON_SCRATCH");
    return v && v[0] == '1';
}
}  // namespace detail

namespace {

const char* axis_name(int axis) { return axis == 0 ? "[0] (height)" : "[1] (width)"; }

void validate_options(const ConvTransposeOptions& o) {
    detail::require_positive("groups", o.groups);
    for (int a = 0; a < 2; ++a) {
        require(o.stride[a] >= 1, concat("stride", axis_name(a)).c_str(), o.stride[a], ">= 1");
        require(o.dilation[a] >= 1, concat("dilation", axis_name(a)).c_str(), o.dilation[a],
                ">= 1");
        require(o.padding[a] >= 0, concat("padding", axis_name(a)).c_str(), o.padding[a], ">= 0");
        require(o.output_padding[a] >= 0, concat("output_padding", axis_name(a)).c_str(),
                o.output_padding[a], ">= 0");
        const int64_t bound = std::max(o.stride[a], o.dilation[a]);
        require(o.output_padding[a] < bound, concat("output_padding", axis_name(a)).c_str(),
                o.output_padding[a], concat("< max(stride, dilation) = ", bound).c_str());
        for (auto [name, v] : {std::pair{"stride", o.stride[a]},
                               {"dilation", o.dilation[a]},
                               {"padding", o.padding[a]}})
            detail::require_int32(name, v);
    }
}

// The filter placement PyTorch's arguments imply (spec §1.8).
detail::Placement placement(const ConvTransposeOptions& o, int64_t kernel_h, int64_t kernel_w) {
    detail::Placement pl;
    pl.stride_y = o.stride[0], pl.stride_x = o.stride[1];
    pl.dilation_y = o.dilation[0], pl.dilation_x = o.dilation[1];
    pl.total_offset_y = geometry::torch_total_offset(
        geometry::effective_kernel(kernel_h, o.dilation[0]), o.padding[0]);
    pl.total_offset_x = geometry::torch_total_offset(
        geometry::effective_kernel(kernel_w, o.dilation[1]), o.padding[1]);
    return pl;
}

}  // namespace

ConvTransposeLayer::ConvTransposeLayer(Device device, const TensorView& weight,
                                       const TensorView* bias, const ConvTransposeOptions& options)
    : device_(std::move(device)), options_(options) {
    validate_options(options);
    if (weight.device_memory || (bias && bias->device_memory))
        throw std::invalid_argument(
            concat(weight.device_memory ? "weight" : "bias",
                   " must be host memory (weights are prepared on the host once per layer), got "
                   "CUDA memory; copy it to the host first (tensor.cpu(), cupy.asnumpy)"));
    if (weight.type != DataType::Float32 && weight.type != DataType::Float16 &&
        !(weight.type == DataType::Float64 && device_.backend()->supports_float64()))
        throw TypeError(concat("weight dtype must be float32 or float16",
                               device_.backend()->supports_float64() ? " (or float64)" : "",
                               ", got ", to_string(weight.type)));
    for (auto [name, v] : {std::pair{"weight.shape[0] (in_channels)", weight.n},
                           {"weight.shape[1] (out_channels / groups)", weight.c},
                           {"weight.shape[2] (kernel height)", weight.h},
                           {"weight.shape[3] (kernel width)", weight.w}}) {
        detail::require_positive(name, v);
        detail::require_int32(name, v);
    }
    // Each dimension is < 2^31; their product (the weights the layer copies) must stay sane.
    if (static_cast<__int128>(weight.n) * weight.c * weight.h * weight.w > (__int128{1} << 40))
        throw std::invalid_argument(concat("weight must have <= 2^40 elements, got shape (",
                                           weight.n, ", ", weight.c, ", ", weight.h, ", ", weight.w,
                                           ")"));
    if (weight.n % options.groups != 0)
        throw std::invalid_argument(
            concat("weight.shape[0] (in_channels=", weight.n,
                   ") must be divisible by groups, got groups=", options.groups));
    in_channels_ = weight.n;
    out_channels_ = weight.c * options.groups;
    kernel_h_ = weight.h, kernel_w_ = weight.w;
    dtype_ = weight.type;
    for (int a = 0; a < 2; ++a)
        detail::require_int32("dilation * (kernel_size - 1) + 1",
                              options.dilation[a] * ((a ? kernel_w_ : kernel_h_) - 1) + 1);
    if (bias) {
        if (bias->type != weight.type)
            throw TypeError(concat("bias dtype must match weight dtype (", to_string(weight.type),
                                   "), got ", to_string(bias->type)));
        require(bias->c == out_channels_, "bias length", bias->c,
                concat("out_channels = ", out_channels_).c_str());
    }
    auto weights = std::make_shared<detail::LayerWeights>();
    weights->host = detail::prepare_from_torch(weight, bias, options.groups);
    weights->device = device_.backend()->upload(weights->host);
    weights_ = std::move(weights);
}

ConvTransposeLayer::~ConvTransposeLayer() = default;

std::array<int64_t, 4> ConvTransposeLayer::output_shape(
    const TensorView& input, const std::array<int64_t, 2>* output_size) const {
    detail::check_image_view("x", input);
    require(input.c == in_channels_, "x channels", input.c,
            concat("equal to weight.shape[0] (", in_channels_, ")").c_str());
    std::array<int64_t, 4> shape{input.n, out_channels_, 0, 0};
    for (int a = 0; a < 2; ++a) {
        const int64_t n = a ? input.w : input.h;
        const int64_t keff =
            geometry::effective_kernel(a ? kernel_w_ : kernel_h_, options_.dilation[a]);
        const int64_t min_size = geometry::torch_output_size(
            n, options_.stride[a], options_.padding[a], options_.padding[a], keff, 0);
        int64_t size = min_size + options_.output_padding[a];
        if (output_size) {
            size = (*output_size)[a];
            const int64_t max_size = min_size + options_.stride[a] - 1;
            if (size < min_size || size > max_size)
                throw std::invalid_argument(concat("output_size", axis_name(a), " must be in [",
                                                   min_size, ", ", max_size, "], got ", size));
        }
        if (size < 0)
            throw std::invalid_argument(concat("padding", axis_name(a), " (", options_.padding[a],
                                               ") must leave an output size >= 0, got ", size));
        detail::require_int32("output size", size);
        shape[2 + a] = size;
    }
    return shape;
}

void ConvTransposeLayer::forward(const TensorView& input, const TensorView& output,
                                 const std::array<int64_t, 2>* output_size) {
    if (input.type != dtype_)
        throw TypeError(concat("x dtype must match weight dtype (", to_string(dtype_), "), got ",
                               to_string(input.type)));
    if (output.type != dtype_)
        throw TypeError(concat("out dtype must match x dtype (", to_string(dtype_), "), got ",
                               to_string(output.type)));
    const auto shape = output_shape(input, output_size);
    if (output.n != shape[0] || output.c != shape[1] || output.h != shape[2] ||
        output.w != shape[3])
        throw std::invalid_argument(concat("out shape must be (", shape[0], ", ", shape[1], ", ",
                                           shape[2], ", ", shape[3], ") in NCHW order, got (",
                                           output.n, ", ", output.c, ", ", output.h, ", ", output.w,
                                           ")"));
    const ConvtParams params = detail::make_params(
        weights_->host, placement(options_, kernel_h_, kernel_w_), input, output, {"x", "out"});
    detail::check_zero_copy(*device_.backend(), input, "x");
    detail::check_zero_copy(*device_.backend(), output, "out");
    device_.backend()->forward(params, *weights_->device, input, output);
}

void ConvTransposeLayer::check_grad_output(const TensorView& input,
                                           const TensorView& grad_output) const {
    detail::check_image_view("grad_output", grad_output);
    const auto shape = output_shape(input);
    if (grad_output.n == shape[0] && grad_output.c == shape[1] && grad_output.h == shape[2] &&
        grad_output.w == shape[3])
        return;
    // A forward run with output_size gives a larger output; accept exactly those sizes.
    const std::array<int64_t, 2> size{grad_output.h, grad_output.w};
    std::array<int64_t, 4> sized{};
    try {
        sized = output_shape(input, &size);
    } catch (const std::invalid_argument&) {
        sized = {-1, -1, -1, -1};
    }
    if (grad_output.n != sized[0] || grad_output.c != sized[1])
        throw std::invalid_argument(concat("grad_output shape must be (", shape[0], ", ", shape[1],
                                           ", ", shape[2], ", ", shape[3], ") in NCHW order, got (",
                                           grad_output.n, ", ", grad_output.c, ", ", grad_output.h,
                                           ", ", grad_output.w, ")"));
}

namespace {

void store_value(const TensorView& v, int64_t index, double value) {
    char* base = static_cast<char*>(v.data) + index * static_cast<int64_t>(element_size(v.type));
    switch (v.type) {
        case DataType::Float16: {
            const uint16_t h = detail::float_to_half(static_cast<float>(value));
            std::memcpy(base, &h, 2);
            break;
        }
        case DataType::Float64:
            std::memcpy(base, &value, 8);
            break;
        default: {
            const float f = static_cast<float>(value);
            std::memcpy(base, &f, 4);
        }
    }
}

void require_output(const char* name, const TensorView& v, DataType type,
                    std::array<int64_t, 4> shape) {
    if (v.type != type)
        throw TypeError(
            concat(name, " dtype must be ", to_string(type), ", got ", to_string(v.type)));
    if (v.n != shape[0] || v.c != shape[1] || v.h != shape[2] || v.w != shape[3])
        throw std::invalid_argument(concat(name, " must have shape (", shape[0], ", ", shape[1],
                                           ", ", shape[2], ", ", shape[3], "), got (", v.n, ", ",
                                           v.c, ", ", v.h, ", ", v.w, ")"));
    detail::check_destination_view(name, v);
}

}  // namespace

void ConvTransposeLayer::backward(const TensorView& input, const TensorView& grad_output,
                                  const TensorView* grad_input, const TensorView* grad_weight,
                                  const TensorView* grad_bias) {
    detail::check_image_view("x", input);
    if (input.type != dtype_ || grad_output.type != dtype_)
        throw TypeError(concat("x and grad_output dtype must match weight dtype (",
                               to_string(dtype_), "), got ", to_string(input.type), " and ",
                               to_string(grad_output.type)));
    check_grad_output(input, grad_output);
    detail::Backend& backend = *device_.backend();
    detail::check_zero_copy(backend, input, "x");
    detail::check_zero_copy(backend, grad_output, "grad_output");
    for (auto [name, v] : {std::pair{"grad_weight", grad_weight}, {"grad_bias", grad_bias}})
        if (v) detail::check_zero_copy(backend, *v, name);
    const detail::Placement pl = placement(options_, kernel_h_, kernel_w_);
    const auto& host = weights_->host;
    ConvtParams pd{};
    if (grad_input) {
        const TensorView& gi = *grad_input;
        require_output("grad_input", gi, dtype_, {input.n, input.c, input.h, input.w});
        if (gi.may_overlap(grad_output) || gi.may_overlap(input))
            throw std::invalid_argument("grad_input must not share memory with x or grad_output");
        detail::check_zero_copy(backend, gi, "grad_input");
        pd = detail::make_params(host, pl, gi, grad_output, {"grad_input", "grad_output", false});
    }
    if (!grad_weight && !grad_bias) {
        if (grad_input) backend.backward_data(pd, *weights_->device, grad_output, *grad_input);
        return;
    }
    const int64_t ig = host.in_per_group, og = host.out_channels / host.groups;
    if (grad_weight)
        require_output("grad_weight", *grad_weight, dtype_,
                       {in_channels_, og, kernel_h_, kernel_w_});
    if (grad_bias) require_output("grad_bias", *grad_bias, dtype_, {1, out_channels_, 1, 1});
    // GPU backends write the gradients in place, after reading x and dY and writing dX.
    for (auto [name, v] : {std::pair{"grad_weight", grad_weight}, {"grad_bias", grad_bias}})
        if (v && (v->may_overlap(input) || v->may_overlap(grad_output) ||
                  (grad_input && v->may_overlap(*grad_input))))
            throw std::invalid_argument(
                concat(name, " must not share memory with x, grad_output or grad_input"));
    if (grad_weight && grad_bias && grad_weight->may_overlap(*grad_bias))
        throw std::invalid_argument("grad_weight must not share memory with grad_bias");
    const ConvtParams p =
        detail::make_params(host, pl, input, grad_output, {"x", "grad_output", false});
    if (backend.writes_torch_gradients()) {
        // Finished on the device, straight into the caller's views (their layout and dtype).
        detail::GradientOutput out;
        out.weight_view = grad_weight, out.bias_view = grad_bias;
        if (grad_input) backend.backward_data(pd, *weights_->device, grad_output, *grad_input);
        backend.backward_weights(p, input, grad_output, out);
        return;
    }
    // Gradients land in float32 (float64 for float64 layers) before taking the weight's dtype.
    // dW's buffer is not cleared: every CPU dW path writes each weight (clearing it was 4.7% of
    // dcgan_g2's dW profile, on one thread while the other waited). CONVT_POISON_SCRATCH=1 fills
    // it with NaN first, so the tests catch a path that leaves a weight unwritten.
    const bool f64 = dtype_ == DataType::Float64;
    const size_t nw = grad_weight ? host.values.size() : 0, nb = grad_bias ? out_channels_ : 0;
    const std::unique_ptr<double[]> dw(f64 && nw ? new double[nw] : nullptr);
    const std::unique_ptr<float[]> dw32(!f64 && nw ? new float[nw] : nullptr);
    std::vector<double> db(f64 ? nb : 0);
    std::vector<float> db32(f64 ? 0 : nb);
    if (nw && detail::poison_scratch()) {
        if (f64)
            std::fill_n(dw.get(), nw, std::numeric_limits<double>::quiet_NaN());
        else
            std::fill_n(dw32.get(), nw, std::numeric_limits<float>::quiet_NaN());
    }
    const detail::GradientOutput out{
        grad_weight ? (f64 ? static_cast<void*>(dw.get()) : dw32.get()) : nullptr,
        grad_bias ? (f64 ? static_cast<void*>(db.data()) : db32.data()) : nullptr,
        f64 ? DataType::Float64 : DataType::Float32, false};
    // All three in one go where the backend can share its passes over dY (CPU depthwise).
    if (!grad_input || !backend.backward_data_and_weights(pd, *weights_->device, grad_output,
                                                          *grad_input, p, input, out)) {
        if (grad_input) backend.backward_data(pd, *weights_->device, grad_output, *grad_input);
        backend.backward_weights(p, input, grad_output, out);
    }
    if (grad_weight) {
        if (f64)
            store_weight_gradient(dw.get(), *grad_weight, og, ig);
        else
            store_weight_gradient(dw32.get(), *grad_weight, og, ig);
    }
    if (grad_bias)
        for (int64_t oc = 0; oc < out_channels_; ++oc)
            store_value(*grad_bias, oc * grad_bias->stride_c, f64 ? db[oc] : db32[oc]);
}

template <typename T>
void ConvTransposeLayer::store_weight_gradient(const T* dw, const TensorView& gw, int64_t og,
                                               int64_t ig) const {
    // OHWI -> PyTorch's [Cin][Cout/groups][kH][kW], flipped back. One output channel's taps x ig
    // block of OHWI (a few KB) stays in L1 while every input channel takes its taps from it, so
    // each write run is one input channel's kernel window (element-wise scattered stores cost
    // ~20 ns each on 2M-weight layers; a 32x32 blocked transpose still took 5 ms on dcgan_g2).
    const int64_t taps = kernel_h_ * kernel_w_;
    std::vector<int64_t> tap_offset(static_cast<size_t>(taps));
    for (int64_t t = 0; t < taps; ++t)
        tap_offset[t] = (kernel_h_ - 1 - t / kernel_w_) * gw.stride_h +
                        (kernel_w_ - 1 - t % kernel_w_) * gw.stride_w;
    // On the host pool, by runs of output channels of at least 32K weights (waking the pool costs
    // more on small layers): each task writes its own elements (2M-weight layers took 2-3 ms on
    // one thread, 6% of dcgan_g2's dW).
    const int64_t channels = out_channels_;
    const int64_t blocks = std::clamp<int64_t>(channels * taps * ig / 32768, 1, channels);
    // Float32 with each kernel window contiguous: 8 taps x 8 input channels at a time, the taps
    // read from the last down (the flip) by a negative row stride (dcgan_g2 dW 23.8 -> 21.3 ms
    // on one thread). A 1D layer's window is its one row, whatever its row stride (numpy gives
    // an inserted axis stride 0; hifigan_up1's dW spent 9% in the scalar stores).
    const bool by_8x8 = gw.stride_w == 1 && (kernel_h_ == 1 || gw.stride_h == kernel_w_);
    // `block_of(oc)`: output channel oc's [tap][icl] values as `convert` takes them.
    auto transpose = [&](auto* out, auto block_of, auto convert) {
        cpu::ThreadPool::instance().parallel_for(blocks, [&](int64_t b) {
            for (int64_t oc = b * channels / blocks; oc < (b + 1) * channels / blocks; ++oc) {
                const int64_t g = oc / og, ocl = oc % og;
                const auto* block = block_of(oc);
                if constexpr (std::is_same_v<
                                  std::remove_cv_t<std::remove_pointer_t<decltype(block)>>,
                                  float> &&
                              std::is_same_v<std::remove_pointer_t<decltype(out)>, float>) {
                    if (by_8x8) {
                        cpu::taps_to_windows(block, taps, ig, 0, ig,
                                             out + g * ig * gw.stride_n + ocl * gw.stride_c,
                                             gw.stride_n);
                        continue;
                    }
                }
                for (int64_t i = 0; i < ig; ++i) {
                    auto* o = out + (g * ig + i) * gw.stride_n + ocl * gw.stride_c;
                    for (int64_t t = 0; t < taps; ++t)
                        o[tap_offset[t]] = convert(block[t * ig + i]);
                }
            }
        });
    };
    auto own = [&](int64_t oc) { return dw + oc * taps * ig; };
    switch (gw.type) {
        case DataType::Float16:
            if constexpr (std::is_same_v<T, float>) {
                // The block converted at once (F16C where the CPU has it): element by element,
                // the conversion was a library call, a fifth of dcgan_g2's fp16 dW.
                auto halves = [&](int64_t oc) {
                    thread_local std::vector<uint16_t> bits;
                    bits.resize(static_cast<size_t>(taps * ig));
                    cpu::floats_to_halves(own(oc), static_cast<int>(taps * ig), bits.data());
                    return static_cast<const uint16_t*>(bits.data());
                };
                transpose(static_cast<uint16_t*>(gw.data), halves, [](uint16_t v) { return v; });
            } else {
                transpose(static_cast<uint16_t*>(gw.data), own,
                          [](T v) { return detail::float_to_half(static_cast<float>(v)); });
            }
            break;
        case DataType::Float64:
            transpose(static_cast<double*>(gw.data), own,
                      [](T v) { return static_cast<double>(v); });
            break;
        default:
            transpose(static_cast<float*>(gw.data), own, [](T v) { return static_cast<float>(v); });
    }
}

}  // namespace convt
