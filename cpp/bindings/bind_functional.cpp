// ConvTransposeLayer: the PyTorch-convention path (functional API and layer objects).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "arrays.h"
#include "convt/functional.h"

namespace py = pybind11;

namespace convt::bindings {

namespace {

using Pair = std::array<int64_t, 2>;

std::optional<Pair> optional_pair(const std::optional<std::tuple<int64_t, int64_t>>& t) {
    if (!t) return std::nullopt;
    return Pair{std::get<0>(*t), std::get<1>(*t)};
}

// A (Cout,) array as a view whose channels are its entries.
TensorView bias_view(const py::object& array, const char* name) {
    TensorView b = view_of_shape(array, 1, name);
    b.c = b.w, b.stride_c = b.stride_w, b.w = 1, b.stride_w = 0;
    return b;
}

}  // namespace

void bind_functional(py::module_& m) {
    py::class_<ConvTransposeLayer>(m, "_ConvTransposeLayer")
        .def(py::init([](Device device, const py::object& weight, const py::object& bias,
                         Pair stride, Pair padding, Pair output_padding, Pair dilation,
                         int64_t groups) {
                 ConvTransposeOptions o;
                 o.stride = stride, o.padding = padding, o.output_padding = output_padding;
                 o.dilation = dilation, o.groups = groups;
                 const TensorView w = view_of_shape(weight, 4, "weight");
                 if (bias.is_none())
                     return std::make_unique<ConvTransposeLayer>(device, w, nullptr, o);
                 TensorView b = view_of_shape(bias, 1, "bias");
                 b.c = b.w, b.stride_c = b.stride_w, b.w = 1,
                 b.stride_w = 0;  // (Cout,) -> channels
                 return std::make_unique<ConvTransposeLayer>(device, w, &b, o);
             }),
             py::arg("device"), py::arg("weight"), py::arg("bias"), py::arg("stride"),
             py::arg("padding"), py::arg("output_padding"), py::arg("dilation"), py::arg("groups"))
        .def_property_readonly("in_channels", &ConvTransposeLayer::in_channels)
        .def_property_readonly("out_channels", &ConvTransposeLayer::out_channels)
        .def(
            "output_shape",
            [](const ConvTransposeLayer& l, const py::object& x, const std::string& layout,
               std::optional<std::tuple<int64_t, int64_t>> output_size) {
                const auto size = optional_pair(output_size);
                auto s = l.output_shape(view_of(x, layout, "x"), size ? &*size : nullptr);
                if (parse_layout(layout) == Layout::NHWC)
                    return py::make_tuple(s[0], s[2], s[3], s[1]);
                return py::make_tuple(s[0], s[1], s[2], s[3]);
            },
            py::arg("x"), py::arg("layout"), py::arg("output_size") = py::none())
        .def(
            "forward",
            [](ConvTransposeLayer& l, const py::object& x, const py::object& out,
               const std::string& layout, std::optional<std::tuple<int64_t, int64_t>> output_size,
               bool copy) {
                TensorView in = view_of(x, layout, "x");
                TensorView o = view_of(out, layout, "out");
                in.require_zero_copy = o.require_zero_copy = !copy;
                const auto size = optional_pair(output_size);
                py::gil_scoped_release release;
                l.forward(in, o, size ? &*size : nullptr);
            },
            py::arg("x"), py::arg("out"), py::arg("layout"), py::arg("output_size") = py::none(),
            py::arg("copy") = true)
        .def(
            "backward",
            [](ConvTransposeLayer& l, const py::object& x, const py::object& grad_output,
               const std::string& layout, const py::object& grad_input,
               const py::object& grad_weight, const py::object& grad_bias) {
                const TensorView in = view_of(x, layout, "x");
                const TensorView go = view_of(grad_output, layout, "grad_output");
                TensorView gi, gw, gb;
                if (!grad_input.is_none()) gi = view_of(grad_input, layout, "grad_input");
                if (!grad_weight.is_none()) gw = view_of_shape(grad_weight, 4, "grad_weight");
                if (!grad_bias.is_none()) gb = bias_view(grad_bias, "grad_bias");
                py::gil_scoped_release release;
                l.backward(in, go, grad_input.is_none() ? nullptr : &gi,
                           grad_weight.is_none() ? nullptr : &gw,
                           grad_bias.is_none() ? nullptr : &gb);
            },
            py::arg("x"), py::arg("grad_output"), py::arg("layout"), py::arg("grad_input"),
            py::arg("grad_weight"), py::arg("grad_bias"));
}

}  // namespace convt::bindings
