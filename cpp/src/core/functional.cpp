#include "convt/functional.h"

#include "check.h"
#include "convt/geometry.h"
#include "plan.h"
#include "weights.h"

namespace convt {

using detail::concat;
using detail::require;

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

}  // namespace

ConvTransposeLayer::ConvTransposeLayer(Device device, const TensorView& weight,
                                       const TensorView* bias, const ConvTransposeOptions& options)
    : device_(std::move(device)), options_(options) {
    validate_options(options);
    if (weight.type != DataType::Float32 && weight.type != DataType::Float16)
        throw TypeError(
            concat("weight dtype must be float32 or float16, got ", to_string(weight.type)));
    for (auto [name, v] : {std::pair{"weight.shape[0] (in_channels)", weight.n},
                           {"weight.shape[1] (out_channels / groups)", weight.c},
                           {"weight.shape[2] (kernel height)", weight.h},
                           {"weight.shape[3] (kernel width)", weight.w}}) {
        detail::require_positive(name, v);
        detail::require_int32(name, v);
    }
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
    detail::Placement pl;
    pl.stride_y = options_.stride[0], pl.stride_x = options_.stride[1];
    pl.dilation_y = options_.dilation[0], pl.dilation_x = options_.dilation[1];
    pl.total_offset_y = geometry::torch_total_offset(
        geometry::effective_kernel(kernel_h_, options_.dilation[0]), options_.padding[0]);
    pl.total_offset_x = geometry::torch_total_offset(
        geometry::effective_kernel(kernel_w_, options_.dilation[1]), options_.padding[1]);
    const ConvtParams params = detail::make_params(weights_->host, pl, input, output, "x", "out");
    device_.backend()->forward(params, *weights_->device, input.data, output.data);
}

}  // namespace convt
