// Device, devices(), CommandBuffer and thread control.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "command_buffer.h"
#include "convt/device.h"

namespace py = pybind11;

namespace convt::bindings {

void bind_device(py::module_& m) {
    py::class_<Device>(m, "Device", "A compute device; kind is 'cpu' (others when built in).")
        .def(py::init<const std::string&>(), py::arg("kind") = "cpu")
        .def_property_readonly("kind", &Device::kind)
        .def_property_readonly("name", &Device::name)
        .def("__eq__", [](const Device& a, const Device& b) { return a.kind() == b.kind(); })
        .def("__hash__", [](const Device& d) { return py::hash(py::str(d.kind())); })
        .def("__repr__", [](const Device& d) { return "Device('" + d.kind() + "')"; });
    m.def("devices", &devices, "Every device available in this build and on this machine.");
    m.def("default_device", &default_device);
    m.def("built_device_kinds", &built_device_kinds,
          "The device kinds compiled into this build, whether or not this machine can use them.");
    m.def("set_num_threads", &set_num_threads, py::arg("n"),
          "Threads used by the CPU backend, the caller included.");
    m.def("get_num_threads", &get_num_threads);
    m.def("cpu_kernel_isa", &cpu_kernel_isa,
          "Instruction set of the CPU kernels: 'avx2', 'neon' (arm64) or 'portable' "
          "(CONVT_CPU_ISA=portable).");

    py::class_<PyCommandBuffer>(m, "CommandBuffer",
                                "MTLCommandBuffer analogue. On the CPU, work runs in commit().")
        .def(py::init<Device>(), py::arg("device"))
        .def_property_readonly("device", [](const PyCommandBuffer& c) { return c.buffer.device(); })
        .def("commit",
             [](PyCommandBuffer& c) {
                 {
                     py::gil_scoped_release release;
                     c.buffer.commit();
                 }
                 c.keep_alive = py::list();
             })
        .def("wait_until_completed", [](PyCommandBuffer& c) { c.buffer.wait_until_completed(); })
        .def_property_readonly("status",
                               [](const PyCommandBuffer& c) {
                                   switch (c.buffer.status()) {
                                       case CommandBuffer::Status::NotEnqueued:
                                           return "not_enqueued";
                                       case CommandBuffer::Status::Committed:
                                           return "committed";
                                       case CommandBuffer::Status::Completed:
                                           return "completed";
                                       default:
                                           return "error";
                                   }
                               })
        .def_property_readonly("error", [](const PyCommandBuffer& c) -> py::object {
            if (c.buffer.error().empty()) return py::none();
            return py::str(c.buffer.error());
        });
}

}  // namespace convt::bindings
