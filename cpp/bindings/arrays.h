// numpy arrays <-> TensorView, without copies.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "convt/tensor.h"

namespace convt::bindings {

namespace py = pybind11;

/// Views a 4-D numpy array in `layout` ("NCHW" or "NHWC"). Raises TypeError for a non-array or a
/// non-float dtype, ValueError for a wrong ndim, layout or misaligned memory. `name` is the
/// caller's parameter name.
TensorView view_of(const py::handle& array, const std::string& layout, const char* name);
/// Views an N-D float array generically as (n, c, h, w) = shape padded on the left with 1s.
TensorView view_of_shape(const py::handle& array, int ndim, const char* name);
Layout parse_layout(const std::string& layout);
/// Raises ValueError naming `name` when the strides of `array` reach 2^62 bytes or further (a
/// view numpy's as_strided can describe but no memory holds; copying it would read wild memory).
void check_array_span(const py::array& array, const char* name);

}  // namespace convt::bindings
