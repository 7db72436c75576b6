// ConvolutionTranspose (MPS-style). Python's subclass turns Image objects into arrays + layout.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "arrays.h"
#include "command_buffer.h"
#include "convt/convolution_transpose.h"
#include "convt/serialization.h"

namespace py = pybind11;

namespace convt::bindings {

namespace {

using Kernel = ConvolutionTranspose;

// A hook that copies the descriptor into Python, lets it edit the copy, and copies it back.
std::function<void(ImageDescriptor&)> python_hook(py::object hook) {
    if (hook.is_none()) return {};
    return [hook = std::move(hook)](ImageDescriptor& d) {
        py::gil_scoped_acquire gil;
        py::object copy = py::cast(d);
        hook(copy);
        d = copy.cast<ImageDescriptor>();
    };
}

}  // namespace

void bind_convolution_transpose(py::module_& m) {
    py::class_<ConvolutionWeightsKernel>(m, "_WeightsKernel")
        .def_property_readonly("input_feature_channels",
                               &ConvolutionWeightsKernel::input_feature_channels)
        .def_property_readonly("output_feature_channels",
                               &ConvolutionWeightsKernel::output_feature_channels)
        .def_property_readonly("groups", &ConvolutionWeightsKernel::groups)
        .def_property_readonly("kernel_width", &ConvolutionWeightsKernel::kernel_width)
        .def_property_readonly("kernel_height", &ConvolutionWeightsKernel::kernel_height)
        .def_property_readonly("stride_in_pixels_x", &ConvolutionWeightsKernel::stride_in_pixels_x)
        .def_property_readonly("stride_in_pixels_y", &ConvolutionWeightsKernel::stride_in_pixels_y)
        .def_property_readonly("dilation_rate_x", &ConvolutionWeightsKernel::dilation_rate_x)
        .def_property_readonly("dilation_rate_y", &ConvolutionWeightsKernel::dilation_rate_y)
        .def_property_readonly("descriptor", &ConvolutionWeightsKernel::descriptor)
        .def_property_readonly("device", &ConvolutionWeightsKernel::device)
        .def_property_readonly("weights_data_type", &ConvolutionWeightsKernel::weights_data_type)
        .def_property_readonly("_core_data_source", &ConvolutionWeightsKernel::data_source)
        .def_readwrite("label", &ConvolutionWeightsKernel::label)
        .def(
            "export_weights_and_biases",
            [](ConvolutionWeightsKernel& k, PyCommandBuffer& cb, bool temporary) {
                return k.export_weights_and_biases(cb.buffer, temporary);
            },
            py::arg("command_buffer"), py::arg("result_state_can_be_temporary") = false,
            "Encoded: after the command buffer runs, the state holds the current weights and "
            "biases (float32, OHWI).")
        .def(
            "reload_weights_and_biases",
            [](ConvolutionWeightsKernel& k, PyCommandBuffer& cb,
               std::shared_ptr<WeightsAndBiasesState> state) {
                k.reload_weights_and_biases(cb.buffer, std::move(state));
            },
            py::arg("command_buffer"), py::arg("state"),
            "Encoded: later work uses the state's weights, rounded to weights_data_type.")
        .def("reload_weights_and_biases_from_data_source",
             &ConvolutionWeightsKernel::reload_weights_and_biases_from_data_source,
             "Synchronous: load(), weights(), purge() again and prepare the weights.");

    py::class_<Kernel, ConvolutionWeightsKernel>(m, "_ConvolutionTranspose")
        .def(py::init<Device, std::shared_ptr<DataSource>>(), py::arg("device"),
             py::arg("data_source"))
        .def(py::init([](Device device, const py::bytes& data) {
                 const std::string_view bytes = data;
                 return deserialize_convolution_transpose(
                     reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                     std::move(device));
             }),
             py::arg("device"), py::arg("data"))
        .def("to_bytes",
             [](Kernel& k) {
                 const auto bytes = serialize(k);
                 return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
             })
        .def_readwrite("kernel_offset_x", &Kernel::kernel_offset_x)
        .def_readwrite("kernel_offset_y", &Kernel::kernel_offset_y)
        .def_property(
            "offset",
            [](const Kernel& k) { return py::make_tuple(k.offset.x, k.offset.y, k.offset.z); },
            [](Kernel& k, std::tuple<int64_t, int64_t, int64_t> o) {
                k.offset = Offset{std::get<0>(o), std::get<1>(o), std::get<2>(o)};
            },
            "MPSOffset (x, y, z): x, y in source pixels; z the first source image")
        .def_readwrite("clip_rect", &Kernel::clip_rect)
        .def_readwrite("edge_mode", &Kernel::edge_mode)
        .def_readwrite("accumulator_precision", &Kernel::accumulator_precision)
        .def_readwrite("source_feature_channel_offset", &Kernel::source_feature_channel_offset)
        .def_readwrite("source_feature_channel_max_count",
                       &Kernel::source_feature_channel_max_count)
        .def_readwrite("destination_feature_channel_offset",
                       &Kernel::destination_feature_channel_offset)
        .def_property_readonly("_padding_method", [](const Kernel& k) { return k.padding.method; })
        .def(
            "_set_padding",
            [](Kernel& k, uint32_t method, py::object hook) {
                k.padding = PaddingPolicy{method, python_hook(std::move(hook))};
            },
            py::arg("method"), py::arg("hook"))
        .def(
            "_destination_image_descriptor",
            [](Kernel& k, const py::object& source, const std::string& layout,
               const ConvolutionGradientState* state) {
                return k.destination_image_descriptor(view_of(source, layout, "source_image"),
                                                      state);
            },
            py::arg("source"), py::arg("layout"), py::arg("state"))
        .def(
            "_encode",
            [](Kernel& k, PyCommandBuffer& cb, const py::object& source,
               const std::string& source_layout, const py::object& destination,
               const std::string& destination_layout, bool copy) {
                TensorView src = view_of(source, source_layout, "source_image");
                TensorView dst = view_of(destination, destination_layout, "destination_image");
                src.require_zero_copy = dst.require_zero_copy = !copy;
                k.encode(cb.buffer, src, dst);
                cb.keep_alive.append(source);
                cb.keep_alive.append(destination);
            },
            py::arg("command_buffer"), py::arg("source"), py::arg("source_layout"),
            py::arg("destination"), py::arg("destination_layout"), py::arg("copy") = true)
        .def(
            "_result_state",
            [](const Kernel& k, const py::object& source, const std::string& source_layout,
               const py::object& destination, const std::string& destination_layout,
               const ConvolutionGradientState* convolution_state, PyCommandBuffer* cb) {
                return k.result_state(view_of(source, source_layout, "source_image"),
                                      view_of(destination, destination_layout, "destination_image"),
                                      convolution_state, cb ? &cb->buffer : nullptr);
            },
            py::arg("source"), py::arg("source_layout"), py::arg("destination"),
            py::arg("destination_layout"), py::arg("convolution_state"), py::arg("command_buffer"));
}

}  // namespace convt::bindings
