// Gradient states, weights-and-biases states, gradient options and the SGD optimizer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "../src/core/snapshot.h"
#include "command_buffer.h"
#include "convt/convolution_transpose_gradient.h"
#include "convt/states.h"

namespace py = pybind11;

namespace convt::bindings {

namespace {

using GradState = ConvolutionTransposeGradientState;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// A numpy view of `data` whose base keeps `owner` alive.
py::array view(std::vector<float>& data, std::vector<py::ssize_t> shape, const py::object& owner,
               bool writable) {
    py::array a(py::dtype::of<float>(), std::move(shape), {}, data.data(), owner);
    if (!writable) a.attr("setflags")(py::arg("write") = false);
    return a;
}

std::vector<py::ssize_t> ohwi_shape(const ConvolutionDescriptor& d) {
    return {static_cast<py::ssize_t>(d.output_feature_channels),
            static_cast<py::ssize_t>(d.kernel_height), static_cast<py::ssize_t>(d.kernel_width),
            static_cast<py::ssize_t>(d.input_feature_channels / d.groups)};
}

std::vector<float> to_vector(const FloatArray& a) { return {a.data(), a.data() + a.size()}; }

}  // namespace

void bind_states(py::module_& m) {
    py::enum_<GradientOption>(m, "GradientOption")
        .value("data", GradientOption::Data)
        .value("weights_and_bias", GradientOption::WeightsAndBias)
        .value("all", GradientOption::All);

    py::class_<GradState, std::shared_ptr<GradState>>(
        m, "ConvolutionTransposeGradientState", py::dynamic_attr(),
        "The forward geometry of one encode, and dW (OHWI) / dB written by a gradient kernel.")
        .def_property_readonly("gradient_for_weights",
                               [](py::object self) {
                                   auto& s = self.cast<GradState&>();
                                   return view(s.gradient_for_weights(),
                                               ohwi_shape(s.snapshot().descriptor), self, false);
                               })
        .def_property_readonly("gradient_for_biases",
                               [](py::object self) {
                                   auto& s = self.cast<GradState&>();
                                   auto& b = s.gradient_for_biases();
                                   return view(b, {static_cast<py::ssize_t>(b.size())}, self,
                                               false);
                               })
        .def_property_readonly("is_temporary",
                               [](const GradState& s) { return s.lifetime().is_temporary(); })
        .def_property_readonly("is_valid",
                               [](const GradState& s) { return s.lifetime().is_valid(); })
        .def_property_readonly("convolution", &GradState::convolution)
        .def_property_readonly("offset",
                               [](const GradState& s) {
                                   const Offset o = s.offset();
                                   return py::make_tuple(o.x, o.y, o.z);
                               })
        .def_property_readonly("kernel_offset_x", &GradState::kernel_offset_x)
        .def_property_readonly("kernel_offset_y", &GradState::kernel_offset_y)
        .def_property_readonly("clip_rect", &GradState::clip_rect)
        .def_property_readonly("source_width", &GradState::source_width)
        .def_property_readonly("source_height", &GradState::source_height)
        .def_property_readonly("destination_width", &GradState::destination_width)
        .def_property_readonly("destination_height", &GradState::destination_height);

    py::class_<WeightsAndBiasesState, std::shared_ptr<WeightsAndBiasesState>>(
        m, "WeightsAndBiasesState",
        "MPSCNNConvolutionWeightsAndBiasesState: float32 weights (OHWI) and biases, owned here.")
        .def(py::init([](const FloatArray& weights, std::optional<FloatArray> biases) {
                 return std::make_shared<WeightsAndBiasesState>(
                     to_vector(weights), biases ? to_vector(*biases) : std::vector<float>{});
             }),
             py::arg("weights"), py::arg("biases") = py::none(),
             "Copies the arrays into the state's own storage.")
        .def_property_readonly("weights",
                               [](py::object self) {
                                   auto& w = self.cast<WeightsAndBiasesState&>().weights();
                                   return view(w, {static_cast<py::ssize_t>(w.size())}, self, true);
                               })
        .def_property_readonly("biases",
                               [](py::object self) -> py::object {
                                   auto& b = self.cast<WeightsAndBiasesState&>().biases();
                                   if (b.empty()) return py::none();
                                   return view(b, {static_cast<py::ssize_t>(b.size())}, self, true);
                               })
        .def_property_readonly("is_temporary", [](const WeightsAndBiasesState& s) {
            return s.lifetime().is_temporary();
        });

    py::class_<OptimizerSGD>(m, "OptimizerSGD",
                             "Stochastic gradient descent on a WeightsAndBiasesState: "
                             "v = momentum*v + (g + weight_decay*w); w -= learning_rate*v.")
        .def(py::init<float, float, float>(), py::arg("learning_rate"), py::arg("momentum") = 0.f,
             py::arg("weight_decay") = 0.f)
        .def_readwrite("learning_rate", &OptimizerSGD::learning_rate)
        .def_readwrite("momentum", &OptimizerSGD::momentum)
        .def_readwrite("weight_decay", &OptimizerSGD::weight_decay)
        .def(
            "encode",
            [](OptimizerSGD& o, PyCommandBuffer& cb, std::shared_ptr<GradState> g,
               std::shared_ptr<WeightsAndBiasesState> w) { o.encode(cb.buffer, g, w); },
            py::arg("command_buffer"), py::arg("gradient_state"), py::arg("weights_state"));
}

}  // namespace convt::bindings
