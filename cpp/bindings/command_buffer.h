// A CommandBuffer plus the Python objects its recorded work reads or writes.
#pragma once

#include <pybind11/pybind11.h>

#include "convt/device.h"

namespace convt::bindings {

struct PyCommandBuffer {
    explicit PyCommandBuffer(Device device) : buffer(std::move(device)) {}
    CommandBuffer buffer;
    pybind11::list keep_alive;  // arrays referenced by encoded work, released after commit
};

}  // namespace convt::bindings
