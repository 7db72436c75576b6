#include "arrays.h"

#include <sstream>

namespace convt::bindings {

namespace {

py::array as_array(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw TypeError(std::string(name) + " must be a numpy.ndarray, got " +
                        std::string(py::str(py::type::of(obj).attr("__name__"))));
    return py::reinterpret_borrow<py::array>(obj);
}

DataType float_type(const py::array& a, const char* name) {
    if (a.dtype().is(py::dtype::of<float>())) return DataType::Float32;
    if (a.dtype().equal(py::dtype("float16"))) return DataType::Float16;
    if (a.dtype().is(py::dtype::of<double>())) return DataType::Float64;
    throw TypeError(std::string(name) + " dtype must be float32 or float16, got " +
                    std::string(py::str(a.dtype())));
}

int64_t element_stride(const py::array& a, int axis, const char* name) {
    const auto bytes = static_cast<int64_t>(a.strides(axis));
    const auto item = static_cast<int64_t>(a.itemsize());
    if (bytes % item != 0)
        throw std::invalid_argument(std::string(name) +
                                    " strides must be multiples of the item size (" +
                                    std::to_string(item) + " bytes), got " + std::to_string(bytes));
    return bytes / item;
}

TensorView base_view(const py::array& a, const char* name) {
    TensorView v;
    v.type = float_type(a, name);
    v.data = const_cast<void*>(a.data());
    if (reinterpret_cast<uintptr_t>(v.data) % a.itemsize() != 0)
        throw std::invalid_argument(
            std::string(name) + " data must be aligned to its item size, got a misaligned pointer");
    v.writable = a.writeable();
    return v;
}

// numpy's as_strided can describe views no memory could hold; their address arithmetic would
// overflow, so they are refused before anything compares or walks them.
void check_span(const TensorView& v, const char* name) {
    if (!v.span_fits())
        throw std::invalid_argument(std::string(name) + " strides must span less than 2^62 bytes");
}

}  // namespace

void check_array_span(const py::array& a, const char* name) {
    __int128 span = 0;
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (a.shape(i) == 0) return;
        const __int128 stride = a.strides(i) < 0 ? -static_cast<__int128>(a.strides(i))
                                                 : static_cast<__int128>(a.strides(i));
        span += (a.shape(i) - 1) * stride;
    }
    if (span + a.itemsize() > (__int128{1} << 62))
        throw std::invalid_argument(std::string(name) + " strides must span less than 2^62 bytes");
}

Layout parse_layout(const std::string& layout) {
    if (layout == "NCHW") return Layout::NCHW;
    if (layout == "NHWC") return Layout::NHWC;
    throw std::invalid_argument("layout must be 'NCHW' or 'NHWC', got '" + layout + "'");
}

TensorView view_of(const py::handle& obj, const std::string& layout, const char* name) {
    const Layout l = parse_layout(layout);
    py::array a = as_array(obj, name);
    if (a.ndim() != 4)
        throw std::invalid_argument(std::string(name) + " must be 4-D (" + layout + "), got " +
                                    std::to_string(a.ndim()) + "-D");
    TensorView v = base_view(a, name);
    const int ax_c = l == Layout::NCHW ? 1 : 3, ax_h = l == Layout::NCHW ? 2 : 1,
              ax_w = l == Layout::NCHW ? 3 : 2;
    v.n = a.shape(0), v.c = a.shape(ax_c), v.h = a.shape(ax_h), v.w = a.shape(ax_w);
    v.stride_n = element_stride(a, 0, name);
    v.stride_c = element_stride(a, ax_c, name);
    v.stride_h = element_stride(a, ax_h, name);
    v.stride_w = element_stride(a, ax_w, name);
    check_span(v, name);
    return v;
}

TensorView view_of_shape(const py::handle& obj, int ndim, const char* name) {
    py::array a = as_array(obj, name);
    if (a.ndim() != ndim)
        throw std::invalid_argument(std::string(name) + " must be " + std::to_string(ndim) +
                                    "-D, got " + std::to_string(a.ndim()) + "-D");
    TensorView v = base_view(a, name);
    int64_t dims[4] = {1, 1, 1, 1}, strides[4] = {0, 0, 0, 0};
    for (int i = 0; i < ndim; ++i) {
        dims[4 - ndim + i] = a.shape(i);
        strides[4 - ndim + i] = element_stride(a, i, name);
    }
    v.n = dims[0], v.c = dims[1], v.h = dims[2], v.w = dims[3];
    v.stride_n = strides[0], v.stride_c = strides[1], v.stride_h = strides[2],
    v.stride_w = strides[3];
    check_span(v, name);
    return v;
}

}  // namespace convt::bindings
