// DataSource, subclassable from Python: the trampoline validates what Python returns.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>

#include "arrays.h"
#include "convt/data_source.h"

namespace py = pybind11;

namespace convt::bindings {

namespace {

std::string type_name(const py::handle& o) { return py::str(py::type::of(o).attr("__name__")); }

py::dtype numpy_dtype(DataType t) {
    switch (t) {
        case DataType::Float16:
            return py::dtype("float16");
        case DataType::UInt8:
            return py::dtype("uint8");
        default:
            return py::dtype("float32");
    }
}

class PyDataSource : public DataSource {
 public:
    ConvolutionDescriptor descriptor() override {
        return returned<ConvolutionDescriptor>("descriptor", "a convt.ConvolutionDescriptor");
    }
    DataType data_type() override { return returned<DataType>("data_type", "a convt.DataType"); }
    bool load() override {
        py::gil_scoped_acquire gil;
        py::object ok = call("load", false);
        return ok.is_none() ? true : ok.cast<bool>();
    }
    void purge() override {
        py::gil_scoped_acquire gil;
        if (py::function f = py::get_override(this, "purge")) f();
        kept_ = py::list();
    }
    std::string label() override {
        return returned<std::string>("label", "a str", DataSource::label());
    }
    DataType kernel_weights_data_type() override {
        return returned<DataType>("kernel_weights_data_type", "a convt.DataType",
                                  DataSource::kernel_weights_data_type());
    }
    QuantizationType weights_quantization_type() override {
        return returned<QuantizationType>("weights_quantization_type", "a convt.QuantizationType",
                                          DataSource::weights_quantization_type());
    }

    const void* weights() override {
        py::gil_scoped_acquire gil;
        const ConvolutionDescriptor d = descriptor();
        const DataType t = data_type();
        return keep("weights", call("weights", true), numpy_dtype(t), d.weight_count(),
                    "O*kH*kW*(I/groups)");
    }
    const float* bias_terms() override {
        py::gil_scoped_acquire gil;
        py::object b = call("bias_terms", false);
        if (b.is_none()) return nullptr;
        return static_cast<const float*>(keep("bias_terms", b, py::dtype("float32"),
                                              descriptor().output_feature_channels,
                                              "output_feature_channels"));
    }
    const float* ranges_for_uint8_kernel() override {
        py::gil_scoped_acquire gil;
        py::object r = call("ranges_for_uint8_kernel", false);
        if (r.is_none()) return nullptr;
        return static_cast<const float*>(keep("ranges_for_uint8_kernel", r, py::dtype("float32"),
                                              2 * descriptor().output_feature_channels,
                                              "2 * output_feature_channels"));
    }
    const float* lookup_table_for_uint8_kernel() override {
        py::gil_scoped_acquire gil;
        py::object r = call("lookup_table_for_uint8_kernel", false);
        if (r.is_none()) return nullptr;
        return static_cast<const float*>(
            keep("lookup_table_for_uint8_kernel", r, py::dtype("float32"), 256, "256"));
    }

 private:
    py::object call(const char* method, bool required) {
        py::function f = py::get_override(this, method);
        if (!f) {
            if (required)
                throw TypeError(std::string("DataSource subclasses must implement ") + method +
                                "()");
            return py::none();
        }
        return f();
    }

    // What a Python override returned, as T; a wrong type raises TypeError naming the method
    // (pybind11's own cast error is a RuntimeError that names nothing). `fallback` is the C++
    // default of an optional method.
    template <typename T>
    T returned(const char* method, const char* expected, std::optional<T> fallback = {}) {
        py::gil_scoped_acquire gil;
        py::function f = py::get_override(this, method);
        if (!f && fallback) return *fallback;
        py::object o = call(method, true);
        try {
            return o.cast<T>();
        } catch (const py::cast_error&) {
        } catch (const py::reference_cast_error&) {  // None for a value type
        }
        throw TypeError(std::string("DataSource.") + method + "() must return " + expected +
                        ", got " + type_name(o));
    }

    // Checks an array returned by Python and keeps it alive until purge().
    const void* keep(const char* what, const py::object& obj, const py::dtype& dtype, int64_t count,
                     const char* rule) {
        if (!py::isinstance<py::array>(obj))
            throw TypeError(std::string(what) + "() must return a numpy.ndarray, got " +
                            type_name(obj));
        py::array a = py::reinterpret_borrow<py::array>(obj);
        if (!a.dtype().equal(dtype))
            throw TypeError(std::string(what) + "() dtype must be " + std::string(py::str(dtype)) +
                            ", got " + std::string(py::str(a.dtype())));
        if (a.size() != count)
            throw std::invalid_argument(std::string(what) + "() size must be " + rule + " = " +
                                        std::to_string(count) + ", got " +
                                        std::to_string(a.size()));
        check_array_span(a, (std::string(what) + "()").c_str());
        a = py::array::ensure(a, py::array::c_style);
        kept_.append(a);
        return a.data();
    }

    py::list kept_;
};

}  // namespace

void bind_data_source(py::module_& m) {
    py::class_<DataSource, PyDataSource, std::shared_ptr<DataSource>>(
        m, "DataSource",
        "MPSCNNConvolutionDataSource: subclass and implement descriptor(), data_type(), "
        "weights() (OHWI numpy array) and bias_terms() (float32[O] or None).")
        .def(py::init<>())
        .def("load", [](DataSource&) { return true; })
        .def("purge", [](DataSource&) {})
        .def("label", [](DataSource&) { return std::string(); })
        .def("kernel_weights_data_type", [](DataSource&) { return DataType::Float16; })
        .def("weights_quantization_type", [](DataSource&) { return QuantizationType::None; })
        .def("bias_terms", [](DataSource&) { return py::none(); })
        .def("ranges_for_uint8_kernel", [](DataSource&) { return py::none(); })
        .def("lookup_table_for_uint8_kernel", [](DataSource&) { return py::none(); });

    // The C++ array-backed source that deserialized kernels hold; read-only from Python.
    py::class_<ArrayDataSource, DataSource, std::shared_ptr<ArrayDataSource>>(
        m, "StoredDataSource", "The weights a deserialized kernel was loaded with (read-only).")
        .def("descriptor", &ArrayDataSource::descriptor)
        .def("data_type", &ArrayDataSource::data_type)
        .def("label", &ArrayDataSource::label)
        .def("kernel_weights_data_type", &ArrayDataSource::kernel_weights_data_type)
        .def("weights_quantization_type", &ArrayDataSource::weights_quantization_type)
        .def("weights",
             [](ArrayDataSource& s) {
                 const ConvolutionDescriptor d = s.descriptor();
                 const std::vector<py::ssize_t> shape{
                     static_cast<py::ssize_t>(d.output_feature_channels),
                     static_cast<py::ssize_t>(d.kernel_height),
                     static_cast<py::ssize_t>(d.kernel_width),
                     static_cast<py::ssize_t>(d.input_feature_channels / d.groups)};
                 py::array a(numpy_dtype(s.data_type()), shape, {}, s.weights());  // a copy
                 return a;
             })
        .def("bias_terms", [](ArrayDataSource& s) -> py::object {
            const float* b = s.bias_terms();
            if (!b) return py::none();
            return py::array_t<float>(
                static_cast<py::ssize_t>(s.descriptor().output_feature_channels), b);
        });
}

}  // namespace convt::bindings
