// NeuronDescriptor and ConvolutionDescriptor.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "convt/descriptor.h"

namespace py = pybind11;

namespace convt::bindings {

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::vector<float> to_vector(const FloatArray& a, const char* name) {
    if (a.ndim() != 1)
        throw std::invalid_argument(std::string(name) + " must be 1-D, got " +
                                    std::to_string(a.ndim()) + "-D");
    return std::vector<float>(a.data(), a.data() + a.size());
}

py::object neuron_or_none(const ConvolutionDescriptor& d) {
    if (d.fused_neuron_descriptor.type == NeuronType::None) return py::none();
    return py::cast(d.fused_neuron_descriptor);
}

}  // namespace

void bind_descriptor(py::module_& m) {
    py::class_<NeuronDescriptor>(
        m, "NeuronDescriptor", "A fused activation; parameters left as None take convt's defaults.")
        .def(py::init([](NeuronType type, std::optional<float> a, std::optional<float> b,
                         std::optional<float> c, std::optional<FloatArray> data) {
                 NeuronDescriptor n = NeuronDescriptor::with_defaults(type);
                 if (a) n.a = *a;
                 if (b) n.b = *b;
                 if (c) n.c = *c;
                 if (data) n.data = to_vector(*data, "data");
                 if (type == NeuronType::PReLU && n.data.empty())
                     throw std::invalid_argument(
                         "data must hold one PReLU slope per output channel, got none");
                 return n;
             }),
             py::arg("type"), py::arg("a") = py::none(), py::arg("b") = py::none(),
             py::arg("c") = py::none(), py::arg("data") = py::none())
        .def_readwrite("type", &NeuronDescriptor::type)
        .def_readwrite("a", &NeuronDescriptor::a)
        .def_readwrite("b", &NeuronDescriptor::b)
        .def_readwrite("c", &NeuronDescriptor::c)
        .def_property_readonly("data", [](const NeuronDescriptor& n) -> py::object {
            if (n.data.empty()) return py::none();
            return FloatArray(static_cast<py::ssize_t>(n.data.size()), n.data.data());
        });

    py::class_<ConvolutionDescriptor>(m, "ConvolutionDescriptor")
        .def(py::init([](int64_t kw, int64_t kh, int64_t in_ch, int64_t out_ch,
                         std::optional<NeuronDescriptor> neuron) {
                 ConvolutionDescriptor d;
                 d.kernel_width = kw, d.kernel_height = kh;
                 d.input_feature_channels = in_ch, d.output_feature_channels = out_ch;
                 if (neuron) d.fused_neuron_descriptor = *neuron;
                 return d;
             }),
             py::arg("kernel_width"), py::arg("kernel_height"), py::arg("input_feature_channels"),
             py::arg("output_feature_channels"), py::arg("neuron") = py::none())
        .def_readwrite("kernel_width", &ConvolutionDescriptor::kernel_width)
        .def_readwrite("kernel_height", &ConvolutionDescriptor::kernel_height)
        .def_readwrite("input_feature_channels", &ConvolutionDescriptor::input_feature_channels)
        .def_readwrite("output_feature_channels", &ConvolutionDescriptor::output_feature_channels)
        .def_readwrite("stride_in_pixels_x", &ConvolutionDescriptor::stride_in_pixels_x)
        .def_readwrite("stride_in_pixels_y", &ConvolutionDescriptor::stride_in_pixels_y)
        .def_readwrite("dilation_rate_x", &ConvolutionDescriptor::dilation_rate_x)
        .def_readwrite("dilation_rate_y", &ConvolutionDescriptor::dilation_rate_y)
        .def_readwrite("groups", &ConvolutionDescriptor::groups)
        .def_property("fused_neuron_descriptor", &neuron_or_none,
                      [](ConvolutionDescriptor& d, std::optional<NeuronDescriptor> n) {
                          d.fused_neuron_descriptor = n ? *n : NeuronDescriptor{};
                      })
        .def(
            "set_batch_normalization_parameters_for_inference",
            [](ConvolutionDescriptor& d, const FloatArray& mean, const FloatArray& variance,
               const FloatArray& gamma, const FloatArray& beta, float epsilon) {
                d.set_batch_normalization_parameters_for_inference(
                    to_vector(mean, "mean"), to_vector(variance, "variance"),
                    to_vector(gamma, "gamma"), to_vector(beta, "beta"), epsilon);
            },
            py::arg("mean"), py::arg("variance"), py::arg("gamma"), py::arg("beta"),
            py::arg("epsilon"))
        .def("validate", &ConvolutionDescriptor::validate)
        .def_property_readonly("weight_count", &ConvolutionDescriptor::weight_count);
}

}  // namespace convt::bindings
