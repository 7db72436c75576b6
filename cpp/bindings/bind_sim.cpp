// A test hook into the MSL simulation: dispatch a kernel by name on numpy buffers. Present
// only in builds with the simulation; used by the runtime's own strictness tests.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#if CONVT_HAS_MSLSIM
#include "runtime.h"
#endif

namespace py = pybind11;

namespace convt::bindings {

void bind_sim(py::module_& m) {
#if CONVT_HAS_MSLSIM
    m.def(
        "_sim_dispatch",
        [](const std::string& name, std::array<uint32_t, 3> groups, std::array<uint32_t, 3> threads,
           std::vector<py::array> buffers) {
            convt_sim::Dispatch d;
            d.name = name;
            d.entry = convt_sim::find_kernel(name);
            if (!d.entry) throw std::invalid_argument("no simulated kernel named " + name);
            std::vector<void*> pointers;
            for (auto& b : buffers) pointers.push_back(b.mutable_data());
            d.buffers = pointers.data();
            d.threadgroups = {groups[0], groups[1], groups[2]};
            d.threads_per_group = {threads[0], threads[1], threads[2]};
            py::gil_scoped_release release;
            convt_sim::run(d);
        },
        py::arg("name"), py::arg("threadgroups"), py::arg("threads_per_threadgroup"),
        py::arg("buffers"));
#else
    (void)m;
#endif
}

}  // namespace convt::bindings
