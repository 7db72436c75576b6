// Enums, regions, image descriptors, padding constants and the forward gradient state.
#include <pybind11/pybind11.h>

#include "convt/geometry.h"
#include "convt/types.h"

namespace py = pybind11;

namespace convt::bindings {

void bind_types(py::module_& m) {
    py::enum_<DataType>(m, "DataType")
        .value("float32", DataType::Float32)
        .value("float16", DataType::Float16)
        .value("uint8", DataType::UInt8);
    py::enum_<NeuronType>(m, "NeuronType")
        .value("none", NeuronType::None)
        .value("relu", NeuronType::ReLU)
        .value("linear", NeuronType::Linear)
        .value("sigmoid", NeuronType::Sigmoid)
        .value("hard_sigmoid", NeuronType::HardSigmoid)
        .value("tanh", NeuronType::TanH)
        .value("abs", NeuronType::Absolute)
        .value("softplus", NeuronType::SoftPlus)
        .value("softsign", NeuronType::SoftSign)
        .value("elu", NeuronType::ELU)
        .value("prelu", NeuronType::PReLU)
        .value("relun", NeuronType::ReLUN)
        .value("power", NeuronType::Power)
        .value("exponential", NeuronType::Exponential)
        .value("logarithm", NeuronType::Logarithm)
        .value("gelu", NeuronType::GELU);
    py::enum_<AccumulatorPrecision>(m, "AccumulatorPrecision")
        .value("half", AccumulatorPrecision::Half)
        .value("float", AccumulatorPrecision::Float);
    py::enum_<EdgeMode>(m, "EdgeMode")
        .value("zero", EdgeMode::Zero)
        .value("clamp", EdgeMode::Clamp);
    py::enum_<QuantizationType>(m, "QuantizationType")
        .value("none", QuantizationType::None)
        .value("linear", QuantizationType::Linear)
        .value("lookup_table", QuantizationType::LookupTable);

    auto pm = m.def_submodule("PaddingMethod", "MPSNNPaddingMethod bit values");
    pm.attr("ALIGN_CENTERED") = padding_method::AlignCentered;
    pm.attr("ALIGN_TOP_LEFT") = padding_method::AlignTopLeft;
    pm.attr("ALIGN_BOTTOM_RIGHT") = padding_method::AlignBottomRight;
    pm.attr("ADD_REMAINDER_TO_TOP_LEFT") = padding_method::AddRemainderToTopLeft;
    pm.attr("ADD_REMAINDER_TO_TOP_RIGHT") = padding_method::AddRemainderToTopRight;
    pm.attr("ADD_REMAINDER_TO_BOTTOM_LEFT") = padding_method::AddRemainderToBottomLeft;
    pm.attr("ADD_REMAINDER_TO_BOTTOM_RIGHT") = padding_method::AddRemainderToBottomRight;
    pm.attr("SIZE_VALID_ONLY") = padding_method::SizeValidOnly;
    pm.attr("SIZE_SAME") = padding_method::SizeSame;
    pm.attr("SIZE_FULL") = padding_method::SizeFull;
    pm.attr("CUSTOM") = padding_method::Custom;
    pm.attr("DEFAULT") = padding_method::Default;

    py::class_<Region>(
        m, "Region", "MTLRegion used as clip_rect: origin (x, y, z), size (width, height, depth).")
        .def(py::init([](int64_t x, int64_t y, int64_t z, int64_t width, int64_t height,
                         int64_t depth) { return Region{x, y, z, width, height, depth}; }),
             py::arg("x") = 0, py::arg("y") = 0, py::arg("z") = 0, py::arg("width"),
             py::arg("height"), py::arg("depth") = 1)
        .def_static("no_clip", &Region::no_clip, "MPSRectNoClip: the whole destination")
        .def_readwrite("x", &Region::x)
        .def_readwrite("y", &Region::y)
        .def_readwrite("z", &Region::z)
        .def_readwrite("width", &Region::width)
        .def_readwrite("height", &Region::height)
        .def_readwrite("depth", &Region::depth)
        .def("__eq__", &Region::operator==)
        .def("__repr__", [](const Region& r) {
            return "Region(x=" + std::to_string(r.x) + ", y=" + std::to_string(r.y) +
                   ", z=" + std::to_string(r.z) + ", width=" + std::to_string(r.width) +
                   ", height=" + std::to_string(r.height) + ", depth=" + std::to_string(r.depth) +
                   ")";
        });

    py::class_<ImageDescriptor>(m, "ImageDescriptor",
                                "Size of an auto-sized destination and the placement written back "
                                "onto the kernel; a custom padding hook may edit it.")
        .def(py::init<>())
        .def_readwrite("width", &ImageDescriptor::width)
        .def_readwrite("height", &ImageDescriptor::height)
        .def_readwrite("feature_channels", &ImageDescriptor::feature_channels)
        .def_readwrite("number_of_images", &ImageDescriptor::number_of_images)
        .def_readwrite("offset_x", &ImageDescriptor::offset_x)
        .def_readwrite("offset_y", &ImageDescriptor::offset_y)
        .def_readwrite("kernel_offset_x", &ImageDescriptor::kernel_offset_x)
        .def_readwrite("kernel_offset_y", &ImageDescriptor::kernel_offset_y)
        .def_readwrite("data_type", &ImageDescriptor::type);

    py::class_<ConvolutionGradientState>(
        m, "ConvolutionGradientState",
        "The sizing record of a forward MPSCNNConvolution, for the autoencoder path (spec 1.5).")
        .def_static("for_forward", &ConvolutionGradientState::for_forward, py::arg("source_width"),
                    py::arg("source_height"), py::arg("kernel_width"), py::arg("kernel_height"),
                    py::arg("stride_x") = 1, py::arg("stride_y") = 1, py::arg("dilation_x") = 1,
                    py::arg("dilation_y") = 1, py::arg("padding_method") = padding_method::Default)
        .def_readonly("source_width", &ConvolutionGradientState::source_width)
        .def_readonly("source_height", &ConvolutionGradientState::source_height)
        .def_readonly("kernel_width", &ConvolutionGradientState::kernel_width)
        .def_readonly("kernel_height", &ConvolutionGradientState::kernel_height)
        .def_readonly("stride_x", &ConvolutionGradientState::stride_x)
        .def_readonly("stride_y", &ConvolutionGradientState::stride_y)
        .def_readonly("dilation_x", &ConvolutionGradientState::dilation_x)
        .def_readonly("dilation_y", &ConvolutionGradientState::dilation_y)
        .def_readonly("offset_x", &ConvolutionGradientState::offset_x)
        .def_readonly("offset_y", &ConvolutionGradientState::offset_y)
        .def_readonly("destination_width", &ConvolutionGradientState::destination_width)
        .def_readonly("destination_height", &ConvolutionGradientState::destination_height);
}

}  // namespace convt::bindings
