#include "arrays.h"

#include <sstream>
#include <vector>

namespace convt::bindings {

namespace {

// DLPack's C ABI (dlpack.h, v0.8 and later: the legacy "dltensor" capsule), declared here from the
// published specification.
struct DLDevice {
    int32_t device_type;  // kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13
    int32_t device_id;
};
struct DLDataType {
    uint8_t code;  // kDLFloat = 2
    uint8_t bits;
    uint16_t lanes;
};
struct DLTensor {
    void* data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t* shape;
    int64_t* strides;  // in elements; null: compact row-major
    uint64_t byte_offset;
};
struct DLManagedTensor {
    DLTensor dl_tensor;
    void* manager_ctx;
    void (*deleter)(DLManagedTensor*);
};
constexpr int32_t kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13;
constexpr int64_t kLegacyDefaultStream = 1;  // the DLPack protocol's code for CUDA stream 0

// A DLPack tensor's shape, element strides and memory. The pointer stays valid while the caller's
// object lives (the call's duration): the capsule is only a handle, released on return.
struct ArrayView {
    TensorView view;
    std::vector<int64_t> shape, strides;
};

// PyTorch's __dlpack__(stream=1) records an event and makes a stream wait on every call (18 us
// on an H200, against 4 us without a stream). When torch's current stream is the legacy default
// stream, which convt runs on, there is nothing to order and the handshake is skipped.
bool torch_on_default_stream(const py::handle& obj) {
    const py::handle type = py::type::of(obj);
    if (std::string(py::str(type.attr("__module__"))) != "torch") return false;
    // Never destroyed: it must not be released after the interpreter has finalised.
    static py::object* current_stream =
        new py::object(py::module_::import("torch.cuda").attr("current_stream"));
    return (*current_stream)().attr("cuda_stream").cast<intptr_t>() == 0;
}

ArrayView dlpack_view(const py::handle& obj, const char* name) {
    const py::tuple dev = obj.attr("__dlpack_device__")();
    const int32_t type = dev[0].cast<int32_t>();
    if (type != kDLCPU && type != kDLCUDA && type != kDLCUDAHost && type != kDLCUDAManaged)
        throw std::invalid_argument(std::string(name) +
                                    " must be in host or CUDA memory, got DLPack device type " +
                                    std::to_string(type));
    const bool gpu = type == kDLCUDA || type == kDLCUDAManaged;
    // The producer orders its pending work before ours (we run on the legacy default stream).
    py::object capsule = gpu && !torch_on_default_stream(obj)
                             ? obj.attr("__dlpack__")(py::arg("stream") = kLegacyDefaultStream)
                             : obj.attr("__dlpack__")();
    auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
    if (!managed) {
        PyErr_Clear();
        throw TypeError(std::string(name) + " gave no usable DLPack capsule");
    }
    const DLTensor& t = managed->dl_tensor;
    ArrayView out;
    TensorView& v = out.view;
    if (t.dtype.code == 2 && t.dtype.lanes == 1 && t.dtype.bits == 32)
        v.type = DataType::Float32;
    else if (t.dtype.code == 2 && t.dtype.lanes == 1 && t.dtype.bits == 16)
        v.type = DataType::Float16;
    else if (t.dtype.code == 2 && t.dtype.lanes == 1 && t.dtype.bits == 64)
        v.type = DataType::Float64;
    else
        throw TypeError(std::string(name) + " dtype must be float32 or float16, got DLPack code " +
                        std::to_string(t.dtype.code) + " with " + std::to_string(t.dtype.bits) +
                        " bits");
    out.shape.assign(t.shape, t.shape + t.ndim);
    out.strides.resize(static_cast<size_t>(t.ndim));
    int64_t step = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
        out.strides[i] = t.strides ? t.strides[i] : step;
        step *= out.shape[i];
    }
    v.data = static_cast<char*>(t.data) + t.byte_offset;
    if (reinterpret_cast<uintptr_t>(v.data) % element_size(v.type) != 0)
        throw std::invalid_argument(
            std::string(name) + " data must be aligned to its item size, got a misaligned pointer");
    v.device_memory = gpu;
    return out;
}

bool is_dlpack(const py::handle& obj) {
    return !py::isinstance<py::array>(obj) && py::hasattr(obj, "__dlpack__") &&
           py::hasattr(obj, "__dlpack_device__");
}

py::array as_array(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw TypeError(std::string(name) + " must be a numpy.ndarray or a DLPack tensor, got " +
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

// numpy arrays and DLPack tensors alike.
ArrayView array_view(const py::handle& obj, const char* name) {
    if (is_dlpack(obj)) return dlpack_view(obj, name);
    py::array a = as_array(obj, name);
    ArrayView out;
    out.view = base_view(a, name);
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        out.shape.push_back(a.shape(i));
        out.strides.push_back(element_stride(a, static_cast<int>(i), name));
    }
    return out;
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
    ArrayView a = array_view(obj, name);
    if (a.shape.size() != 4)
        throw std::invalid_argument(std::string(name) + " must be 4-D (" + layout + "), got " +
                                    std::to_string(a.shape.size()) + "-D");
    const int c = l == Layout::NCHW ? 1 : 3, h = l == Layout::NCHW ? 2 : 1,
              w = l == Layout::NCHW ? 3 : 2;
    TensorView& v = a.view;
    v.n = a.shape[0], v.c = a.shape[c], v.h = a.shape[h], v.w = a.shape[w];
    v.stride_n = a.strides[0], v.stride_c = a.strides[c], v.stride_h = a.strides[h],
    v.stride_w = a.strides[w];
    check_span(v, name);
    return v;
}

TensorView view_of_shape(const py::handle& obj, int ndim, const char* name) {
    ArrayView a = array_view(obj, name);
    if (static_cast<int>(a.shape.size()) != ndim)
        throw std::invalid_argument(std::string(name) + " must be " + std::to_string(ndim) +
                                    "-D, got " + std::to_string(a.shape.size()) + "-D");
    int64_t dims[4] = {1, 1, 1, 1}, strides[4] = {0, 0, 0, 0};
    for (int i = 0; i < ndim; ++i) {
        dims[4 - ndim + i] = a.shape[i];
        strides[4 - ndim + i] = a.strides[i];
    }
    TensorView& v = a.view;
    v.n = dims[0], v.c = dims[1], v.h = dims[2], v.w = dims[3];
    v.stride_n = strides[0], v.stride_c = strides[1], v.stride_h = strides[2],
    v.stride_w = strides[3];
    check_span(v, name);
    return v;
}

}  // namespace convt::bindings
