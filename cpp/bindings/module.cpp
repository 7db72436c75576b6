// The _core extension module: one bind_* function per area.
#include <pybind11/pybind11.h>

#include "convt/types.h"

namespace py = pybind11;

namespace convt::bindings {
void bind_types(py::module_& m);
void bind_descriptor(py::module_& m);
void bind_data_source(py::module_& m);
void bind_device(py::module_& m);
void bind_convolution_transpose(py::module_& m);
void bind_functional(py::module_& m);
void bind_states(py::module_& m);
void bind_gradient(py::module_& m);
void bind_sim(py::module_& m);
}  // namespace convt::bindings

PYBIND11_MODULE(_core, m) {
    m.doc() = "convt C++ core";
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const convt::TypeError& e) {
            PyErr_SetString(PyExc_TypeError, e.what());
        }
    });
    using namespace convt::bindings;
    bind_types(m);
    bind_descriptor(m);
    bind_data_source(m);
    bind_device(m);
    bind_states(m);
    bind_convolution_transpose(m);
    bind_gradient(m);
    bind_sim(m);
    bind_functional(m);
}
