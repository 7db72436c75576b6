// ConvolutionTransposeGradient (MPS-style). Python's subclass turns Images into arrays + layout.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "arrays.h"
#include "command_buffer.h"
#include "convt/convolution_transpose_gradient.h"
#include "convt/serialization.h"

namespace py = pybind11;

namespace convt::bindings {

void bind_gradient(py::module_& m) {
    using Grad = ConvolutionTransposeGradient;
    py::class_<Grad, ConvolutionWeightsKernel>(m, "_ConvolutionTransposeGradient")
        .def(py::init<Device, std::shared_ptr<DataSource>>(), py::arg("device"),
             py::arg("data_source"))
        .def(py::init([](Device device, const py::bytes& data) {
                 const std::string_view bytes = data;
                 return deserialize_convolution_transpose_gradient(
                     reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                     std::move(device));
             }),
             py::arg("device"), py::arg("data"))
        .def("to_bytes",
             [](Grad& k) {
                 const auto bytes = serialize(k);
                 return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
             })
        .def_readwrite("gradient_option", &Grad::gradient_option)
        .def_property_readonly("source_gradient_feature_channels",
                               &Grad::source_gradient_feature_channels)
        .def_property_readonly("source_image_feature_channels",
                               &Grad::source_image_feature_channels)
        .def(
            "_encode",
            [](Grad& k, PyCommandBuffer& cb, const py::object& dy, const std::string& dy_layout,
               const py::object& x, const std::string& x_layout,
               std::shared_ptr<ConvolutionTransposeGradientState> state, const py::object& dx,
               const std::string& dx_layout, bool accumulate) {
                const TensorView dy_view = view_of(dy, dy_layout, "source_gradient");
                const TensorView x_view = view_of(x, x_layout, "source_image");
                TensorView dx_view;
                if (!dx.is_none()) dx_view = view_of(dx, dx_layout, "destination_gradient");
                k.encode(cb.buffer, dy_view, x_view, std::move(state),
                         dx.is_none() ? nullptr : &dx_view, accumulate);
                for (const py::object* o : {&dy, &x, &dx}) cb.keep_alive.append(*o);
            },
            py::arg("command_buffer"), py::arg("source_gradient"),
            py::arg("source_gradient_layout"), py::arg("source_image"),
            py::arg("source_image_layout"), py::arg("gradient_state"),
            py::arg("destination_gradient"), py::arg("destination_gradient_layout"),
            py::arg("accumulate"));
}

}  // namespace convt::bindings
