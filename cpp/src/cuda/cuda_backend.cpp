// CUDA backend on the runtime API: the kernels of metal/*.metal compiled by nvcc through
// metal/prelude_cuda.h and generated glue. Weights live in device memory, uploaded once per
// layer; device memory (DLPack tensors) is used in place; host memory (numpy) is staged through
// device buffers, copied in before and out after the work. Work runs on the legacy default
// stream, PyTorch's and CuPy's default, so it is ordered with theirs.
#include "cuda_backend.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <unordered_map>
#include <vector>

#include "../core/check.h"
#include "../core/gpu_bindings.h"
#include "../core/gpu_launch.h"
#include "launch.h"

namespace convt::detail {
namespace {

// CUDA's per-launch limits on gridDim.y and gridDim.z; larger dispatches go out in chunks.
constexpr uint64_t kMaxGridYZ = 65535, kMaxGridX = 2147483647;

void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess)
        throw std::runtime_error(concat("[cuda] ", what, ": ", cudaGetErrorName(status), ": ",
                                        cudaGetErrorString(status)));
}

// Whether the current device has stream-ordered memory pools (cudaMallocAsync).
bool has_memory_pools() {
    int device = 0, supported = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device) !=
            cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return supported != 0;
}

struct DeviceBuffer {
    void* ptr = nullptr;
    bool stream_ordered = false;
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t bytes) { allocate(bytes); }
    /// Memory used only by work on the legacy default stream (scratch, and staged copies of host
    /// views, whose copies in and out run there too): allocated and freed in that
    /// stream's order where the device has memory pools, so freeing it waits for nothing (a
    /// cudaMalloc/cudaFree pair cost ~80 us and a device-wide wait on every GPU backward).
    struct OnStream {};
    DeviceBuffer(size_t bytes, OnStream) {
        static const bool pools = has_memory_pools();
        if (!pools) {
            allocate(bytes);
            return;
        }
        check(cudaMallocAsync(&ptr, bytes ? bytes : 1, cudaStreamLegacy),
              concat("cudaMallocAsync(", bytes, " bytes)").c_str());
        stream_ordered = true;
    }
    void allocate(size_t bytes) {
        release();
        check(cudaMalloc(&ptr, bytes ? bytes : 1), concat("cudaMalloc(", bytes, " bytes)").c_str());
    }
    ~DeviceBuffer() { release(); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

 private:
    void release() {
        if (ptr && stream_ordered)
            cudaFreeAsync(ptr, cudaStreamLegacy);  // after the work queued before it
        else if (ptr)
            cudaFree(ptr);  // waits for work that may still read it
        ptr = nullptr;
        stream_ordered = false;
    }
};

struct CudaWeights : DeviceWeights {
    DeviceBuffer weights, bias, slopes;
    bool finite = false;  // every weight finite (gpu::forward_rows_fit)
};

bool is_device_memory(const void* p) {
    if (!p) return false;
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
        cudaGetLastError();  // clear: plain host memory can report an error on older drivers
        return false;
    }
    return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

// Caller memory as a device pointer: used in place when it is device memory, otherwise staged in
// a device buffer (copied in now, copied back by finish() when written).
class Binding {
 public:
    /// `read`: the work reads the memory's contents (written views are copied in too, since
    /// kernels write only their region of them; outputs overwritten whole need no copy).
    Binding(const char* first, size_t bytes, bool written, bool read = true)
        : host_(const_cast<char*>(first)), bytes_(bytes), written_(written) {
        if (bytes == 0 || is_device_memory(first)) {
            device_ = host_;
            return;
        }
        // Stream-ordered like the scratch below: every use of the copy is on the legacy stream.
        staging_ = std::make_unique<DeviceBuffer>(bytes, DeviceBuffer::OnStream{});
        if (read)
            check(cudaMemcpy(staging_->ptr, first, bytes, cudaMemcpyHostToDevice),
                  "copy to device");
        device_ = static_cast<char*>(staging_->ptr);
    }
    /// Device-only scratch memory.
    explicit Binding(size_t bytes)
        : host_(nullptr),
          bytes_(0),
          written_(false),
          staging_(std::make_unique<DeviceBuffer>(bytes, DeviceBuffer::OnStream{})) {
        device_ = static_cast<char*>(staging_->ptr);
    }
    void finish() {
        if (staging_ && written_ && host_)
            check(cudaMemcpy(host_, staging_->ptr, bytes_, cudaMemcpyDeviceToHost),
                  "copy from device");
    }
    char* get() const { return device_; }
    bool staged() const { return staging_ != nullptr && host_ != nullptr; }
    bool same_region(const char* first, size_t bytes) const {
        return first == host_ && bytes == bytes_;
    }
    bool overlaps(const char* first, size_t bytes) const {
        return bytes && bytes_ && first < host_ + bytes_ && host_ < first + bytes;
    }
    void mark_written() { written_ = true; }

 private:
    char* host_;
    size_t bytes_;
    bool written_;
    char* device_ = nullptr;
    std::unique_ptr<DeviceBuffer> staging_;
};

// Device work of one convt command buffer: the bindings its dispatches share until flush().
struct Batch {
    std::vector<std::unique_ptr<Binding>> bindings;
    bool pending = false;  // work enqueued since the last flush
};

using gpu::Constants;

void set_constants(ConvtCudaLaunch& l, const ConvtParams& p, Constants c) {
    const auto fc = gpu::function_constants(p, c);
    static_assert(sizeof(l.constants) >= sizeof(fc), "launch glue holds every function constant");
    std::memcpy(l.constants, fc.data(), sizeof(fc));
}

std::string types(int32_t a, int32_t b) {
    return std::string(gpu::type_suffix(a, "CUDA")) + "_" + gpu::type_suffix(b, "CUDA");
}

class CudaBackend : public Backend {
 public:
    CudaBackend() {
        int count = 0;
        const cudaError_t status = cudaGetDeviceCount(&count);
        if (status != cudaSuccess || count == 0) {
            cudaGetLastError();
            throw std::runtime_error(
                concat("[cuda] no CUDA device is available (", cudaGetErrorString(status), ")"));
        }
        check(cudaGetDevice(&device_), "cudaGetDevice");
        cudaDeviceProp prop{};
        check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
        name_ = prop.name;
    }

    std::string kind() const override { return "cuda"; }
    std::string name() const override { return "cuda (" + name_ + ")"; }
    bool uses_in_place(const TensorView& v) const override {
        return v.numel() == 0 || is_device_memory(v.data);
    }
    bool accepts_device_memory() const override { return true; }
    bool writes_torch_gradients() const override { return true; }

    std::unique_ptr<DeviceWeights> upload(const PreparedWeights& pw) override {
        if (pw.type == DataType::Float64)
            throw TypeError("the CUDA backend keeps float32 or float16 weights, got float64");
        auto w = std::make_unique<CudaWeights>();
        std::vector<float> values(pw.values.begin(), pw.values.end());
        w->finite = gpu::all_finite(pw.values);
        std::vector<float> bias(static_cast<size_t>(pw.out_channels), 0.f);
        std::copy(pw.bias.begin(), pw.bias.end(), bias.begin());
        std::vector<float> slopes(static_cast<size_t>(pw.out_channels), 0.f);
        if (pw.neuron.type == NeuronType::PReLU)
            std::copy(pw.neuron.data.begin(), pw.neuron.data.end(), slopes.begin());
        copy_in(w->weights, values);
        copy_in(w->bias, bias);
        copy_in(w->slopes, slopes);
        return w;
    }

    void begin_batch() override { batches()[this] = std::make_unique<Batch>(); }

    void flush() override {
        Batch* batch = current_batch();
        if (!batch) return;
        std::vector<std::unique_ptr<Binding>> bindings = std::move(batch->bindings);
        batch->bindings.clear();
        if (batch->pending) {
            batch->pending = false;
            check(cudaStreamSynchronize(stream()), "command buffer");
        }
        for (auto& b : bindings) b->finish();
    }

    void end_batch() override { batches().erase(this); }

    void forward(const ConvtParams& params, const DeviceWeights& weights, const TensorView& src,
                 const TensorView& dst) override {
        if (params.num_images == 0 || params.clip_w == 0 || params.clip_h == 0) return;
        const auto& w = static_cast<const CudaWeights&>(weights);
        Call call(*this);
        ConvtParams p = params;
        const void* s = call.bind(src, false, &p.src_base);
        const void* d = call.bind(dst, true, &p.dst_base);
        run(gpu::forward(p, w.finite), types(p.src_type, p.dst_type), p, {},
            {s, d, w.weights.ptr, w.bias.ptr, w.slopes.ptr});
        call.done();
    }

    void backward_data(const ConvtParams& params, const DeviceWeights& weights,
                       const TensorView& dy, const TensorView& dx) override {
        if (params.num_images == 0 || params.src_w == 0 || params.src_h == 0) return;
        const auto& w = static_cast<const CudaWeights&>(weights);
        Call call(*this);
        ConvtParams p = params;
        const void* y = call.bind(dy, false, &p.dst_base);
        const void* x = call.bind(dx, true, &p.src_base);
        run(gpu::backward_data(p), types(p.dst_type, p.src_type), p, {}, {y, x, w.weights.ptr});
        call.done();
    }

    void backward_weights(const ConvtParams& params, const TensorView& x, const TensorView& dy,
                          const GradientOutput& out) override {
        Call call(*this);
        ConvtParams p = params;
        const void* xs = call.bind(x, false, &p.src_base);
        const void* ys = call.bind(dy, false, &p.dst_base);
        gpu::backward_weights<const void*>(
            p, xs, ys, out, call,
            [this](const gpu::Launch& l, const std::string& t, const ConvtParams& q, Constants c,
                   std::initializer_list<const void*> b) { run(l, t, q, c, b); },
            "CUDA");
        call.done();
    }

 private:
    static cudaStream_t stream() { return cudaStreamLegacy; }

    using Batches = std::unordered_map<const CudaBackend*, std::unique_ptr<Batch>>;
    static Batches& batches() {
        thread_local Batches open;
        return open;
    }
    Batch* current_batch() {
        auto it = batches().find(this);
        return it == batches().end() ? nullptr : it->second.get();
    }

    // The bindings of one call (cpp/src/core/gpu_bindings.h).
    class Call {
     public:
        explicit Call(CudaBackend& backend)
            : backend_(backend), bindings_(batch_list(backend.current_batch())) {}
        /// Binds a view; adds the element offset of its origin to `base`. `read`: a staged copy
        /// takes the view's contents first (false for outputs the work overwrites whole).
        const void* bind(const TensorView& v, bool written, int64_t* base, bool read = true) {
            const char* first;
            size_t bytes;
            Bindings::extent(v, &first, &bytes, base);
            return region(first, bytes, written, read);
        }
        /// A dense gradient buffer; `read` when the work adds to it.
        const void* bind_raw(void* data, size_t bytes, bool read) {
            return region(static_cast<const char*>(data), bytes, true, read);
        }
        /// Device scratch, alive until the work is done.
        const void* scratch(size_t bytes) {
            return bindings_.add(std::make_unique<Binding>(bytes));
        }
        /// Without a batch: work that staged memory is waited for and its results copied back
        /// now; work on device memory alone stays queued on the stream, as CUDA libraries do.
        void done() {
            if (bindings_.batched()) return;
            bool staged = false;
            for (auto& b : bindings_.own()) staged = staged || b->staged();
            if (staged) check(cudaStreamSynchronize(stream()), "dispatch");
            for (auto& b : bindings_.own()) b->finish();
        }

     private:
        using Bindings = gpu::CallBindings<Binding>;
        static Bindings::List* batch_list(Batch* batch) {
            return batch ? &batch->bindings : nullptr;
        }
        const void* region(const char* first, size_t bytes, bool written, bool read) {
            return bindings_.region(
                first, bytes, written,
                [&] { return std::make_unique<Binding>(first, bytes, written, read); },
                [&] { backend_.flush(); });
        }

        CudaBackend& backend_;
        Bindings bindings_;
    };

    // One dispatch, split into launches that fit CUDA's grid limits.
    void run(const gpu::Launch& l, const std::string& types, const ConvtParams& p, Constants c,
             std::initializer_list<const void*> buffers) {
        const gpu::Dims& g = l.groups;
        if (g.x <= 0 || g.y <= 0 || g.z <= 0) return;
        const std::string name = l.kernel + types;
        const void* fn = convt_cuda_find_kernel(name.c_str());
        if (!fn) throw std::runtime_error("[cuda] no kernel named " + name);
        if (uint64_t(g.x) > kMaxGridX)
            throw std::invalid_argument(
                concat("[cuda] ", name, ": ", g.x, " threadgroups along x exceed CUDA's limit"));
        ConvtCudaLaunch launch{};
        size_t i = 0;
        for (const void* b : buffers) launch.buffers[i++] = b;
        set_constants(launch, p, c);
        static_assert(sizeof(ConvtParams) <= CONVT_CUDA_BYTES, "ConvtParams too large");
        std::memcpy(launch.bytes, &p, sizeof(p));
        launch.grid[0] = static_cast<uint32_t>(g.x);
        launch.grid[1] = static_cast<uint32_t>(g.y);
        launch.grid[2] = static_cast<uint32_t>(g.z);
        const dim3 block(static_cast<unsigned>(l.threads.x), static_cast<unsigned>(l.threads.y),
                         static_cast<unsigned>(l.threads.z));
        void* args[] = {&launch};
        const uint64_t gy = uint64_t(g.y), gz = uint64_t(g.z);
        for (uint64_t z0 = 0; z0 < gz; z0 += kMaxGridYZ)
            for (uint64_t y0 = 0; y0 < gy; y0 += kMaxGridYZ) {
                launch.group_offset[1] = static_cast<uint32_t>(y0);
                launch.group_offset[2] = static_cast<uint32_t>(z0);
                const dim3 grid(static_cast<unsigned>(g.x),
                                static_cast<unsigned>(std::min(kMaxGridYZ, gy - y0)),
                                static_cast<unsigned>(std::min(kMaxGridYZ, gz - z0)));
                check(cudaLaunchKernel(fn, grid, block, args, 0, stream()), name.c_str());
            }
        if (Batch* batch = current_batch()) batch->pending = true;
    }

    void copy_in(DeviceBuffer& buffer, const std::vector<float>& v) {
        buffer.allocate(v.size() * sizeof(float));
        check(cudaMemcpy(buffer.ptr, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice),
              "copy weights to device");
    }

    int device_ = 0;
    std::string name_;
};

}  // namespace

std::shared_ptr<Backend> make_cuda_backend() { return std::make_shared<CudaBackend>(); }

}  // namespace convt::detail
