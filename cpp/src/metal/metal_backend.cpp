// Metal backend on metal-cpp: device and queue, a pipeline cache keyed by kernel name and
// function constants, weights in MTLBuffers uploaded once per layer, caller memory wrapped
// without a copy when page-aligned (staged otherwise), and a status check after every wait.
#include "metal_backend.h"

#include <unistd.h>
#if CONVT_HAS_METALLIB
#include <dlfcn.h>
#endif

#include <Foundation/Foundation.hpp>
#include <Metal/Metal.hpp>
#include <cstring>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "../core/check.h"
#include "../core/gpu_bindings.h"
#include "../core/gpu_launch.h"

extern const char* const convt_kernel_source;  // generated from metal/*.metal

namespace convt::detail {
namespace {

struct Release {
    void operator()(NS::Object* o) const {
        if (o) o->release();
    }
};
template <typename T>
using Ref = std::unique_ptr<T, Release>;

// An autorelease pool for the duration of one entry point.
class Pool {
 public:
    Pool() : pool_(NS::AutoreleasePool::alloc()->init()) {}
    ~Pool() { pool_->release(); }
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

 private:
    NS::AutoreleasePool* pool_;
};

std::string describe(NS::Error* error) {
    return error && error->localizedDescription() ? error->localizedDescription()->utf8String()
                                                  : "unknown error";
}

struct MetalWeights : DeviceWeights {
    Ref<MTL::Buffer> weights, bias, slopes;
    bool finite = false;  // every weight finite (gpu::forward_rows_fit)
};

// convt.metallib next to the binary that holds this code (the Python extension module), if
// the build made one; empty otherwise.
std::string prebuilt_library_path() {
#if CONVT_HAS_METALLIB
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&prebuilt_library_path), &info) && info.dli_fname) {
        std::string path = info.dli_fname;
        path = path.substr(0, path.find_last_of('/') + 1) + "convt.metallib";
        if (access(path.c_str(), R_OK) == 0) return path;
    }
#endif
    return {};
}

size_t page_size() {
    static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return page;
}

// Caller memory as a buffer: wrapped in place when its first byte is page-aligned, otherwise
// copied into a staging buffer (and copied back after the work if it is written).
class Binding {
 public:
    Binding(MTL::Device* device, const void* first, size_t bytes, bool written)
        : host_(static_cast<char*>(const_cast<void*>(first))), bytes_(bytes), written_(written) {
        const size_t page = page_size();
        const size_t length = bytes ? bytes : 1;
        if (bytes && reinterpret_cast<uintptr_t>(first) % page == 0) {
            buffer_.reset(device->newBuffer(first, (length + page - 1) / page * page,
                                            MTL::ResourceStorageModeShared, nullptr));
        } else {
            staged_ = true;
            buffer_.reset(device->newBuffer(length, MTL::ResourceStorageModeShared));
            if (buffer_ && bytes) std::memcpy(buffer_->contents(), first, bytes);
        }
        if (!buffer_)
            throw std::runtime_error("[metal] could not create a buffer of " +
                                     std::to_string(length) + " bytes");
    }
    /// Scratch memory of the given size, for the kernels alone.
    Binding(MTL::Device* device, size_t bytes) : host_(nullptr), bytes_(0), written_(false) {
        buffer_.reset(device->newBuffer(bytes ? bytes : 1, MTL::ResourceStorageModeShared));
        if (!buffer_)
            throw std::runtime_error("[metal] could not create a buffer of " +
                                     std::to_string(bytes) + " bytes");
    }
    /// After the work completed: staged results go back to the caller's memory.
    void finish() {
        if (staged_ && written_ && bytes_) std::memcpy(host_, buffer_->contents(), bytes_);
    }
    MTL::Buffer* get() const { return buffer_.get(); }
    bool staged() const { return staged_; }
    bool same_region(const char* first, size_t bytes) const {
        return first == host_ && bytes == bytes_;
    }
    bool overlaps(const char* first, size_t bytes) const {
        return bytes && bytes_ && first < host_ + bytes_ && host_ < first + bytes;
    }
    void mark_written() { written_ = true; }

 private:
    Ref<MTL::Buffer> buffer_;
    char* host_;
    size_t bytes_;
    bool written_, staged_ = false;
};

// Device work of one convt command buffer: one MTL command buffer, and the bindings its
// dispatches use (alive until it completes; a staged one is shared by every dispatch that binds
// the same memory, so results flow from one dispatch to the next).
struct Batch {
    Ref<MTL::CommandBuffer> command_buffer;
    std::vector<std::unique_ptr<Binding>> bindings;
};

using gpu::Constants;

std::vector<int> constants(const ConvtParams& p, Constants c) {
    const auto fc = gpu::function_constants(p, c);
    return {fc.begin(), fc.end()};
}

std::string types(int32_t a, int32_t b) {
    return std::string(gpu::type_suffix(a, "Metal")) + "_" + gpu::type_suffix(b, "Metal");
}

MTL::Size size(const gpu::Dims& d) {
    return MTL::Size(static_cast<NS::UInteger>(d.x), static_cast<NS::UInteger>(d.y),
                     static_cast<NS::UInteger>(d.z));
}

class MetalBackend : public Backend {
 public:
    explicit MetalBackend(std::string kind) : kind_(std::move(kind)) {
        Pool pool;
        device_.reset(MTL::CreateSystemDefaultDevice());
        if (!device_) throw std::runtime_error("[metal] no Metal device is available");
        queue_.reset(device_->newCommandQueue());
        NS::Error* error = nullptr;
        const std::string metallib = prebuilt_library_path();
        if (!metallib.empty())  // built ahead of time by Apple's compiler
            library_.reset(device_->newLibrary(
                NS::String::string(metallib.c_str(), NS::UTF8StringEncoding), &error));
        else  // compiled from the embedded source at first use
            library_.reset(device_->newLibrary(
                NS::String::string(convt_kernel_source, NS::UTF8StringEncoding), nullptr, &error));
        if (!library_)
            throw std::runtime_error("[metal] kernel library " + metallib + ": " + describe(error));
        name_ = device_->name()->utf8String();
    }

    ~MetalBackend() override {
        for (auto& [key, pso] : pipelines_) pso->release();
    }

    std::string kind() const override { return kind_; }
    bool uses_in_place(const TensorView& v) const override {
        const char *first, *last;
        v.byte_extent(&first, &last);
        return v.numel() == 0 || reinterpret_cast<uintptr_t>(first) % page_size() == 0;
    }
    std::string name() const override { return kind_ + " (" + name_ + ")"; }
    bool writes_torch_gradients() const override { return true; }

    std::unique_ptr<DeviceWeights> upload(const PreparedWeights& pw) override {
        if (pw.type == DataType::Float64)
            throw TypeError("the Metal backend keeps float32 or float16 weights, got float64");
        Pool pool;
        auto w = std::make_unique<MetalWeights>();
        std::vector<float> values(pw.values.begin(), pw.values.end());
        w->finite = gpu::all_finite(pw.values);
        std::vector<float> bias(static_cast<size_t>(pw.out_channels), 0.f);
        std::copy(pw.bias.begin(), pw.bias.end(), bias.begin());
        std::vector<float> slopes(static_cast<size_t>(pw.out_channels), 0.f);
        if (pw.neuron.type == NeuronType::PReLU)
            std::copy(pw.neuron.data.begin(), pw.neuron.data.end(), slopes.begin());
        w->weights = copy_to_device(values);
        w->bias = copy_to_device(bias);
        w->slopes = copy_to_device(slopes);
        return w;
    }

    void begin_batch() override { batches()[this] = std::make_unique<Batch>(); }

    void flush() override {
        Batch* batch = current_batch();
        if (!batch || !batch->command_buffer) return;
        Ref<MTL::CommandBuffer> cb = std::move(batch->command_buffer);
        std::vector<std::unique_ptr<Binding>> bindings = std::move(batch->bindings);
        batch->bindings.clear();
        cb->commit();
        cb->waitUntilCompleted();
        check(cb.get(), "command buffer");
        for (auto& b : bindings) b->finish();
    }

    void end_batch() override { batches().erase(this); }

    void forward(const ConvtParams& params, const DeviceWeights& weights, const TensorView& src,
                 const TensorView& dst) override {
        if (params.num_images == 0 || params.clip_w == 0 || params.clip_h == 0) return;
        const auto& w = static_cast<const MetalWeights&>(weights);
        Pool pool;
        Call call(*this);
        ConvtParams p = params;
        MTL::Buffer* s = call.bind(src, false, &p.src_base);
        MTL::Buffer* d = call.bind(dst, true, &p.dst_base);
        run(gpu::forward(p, w.finite), types(p.src_type, p.dst_type), p, {},
            {s, d, w.weights.get(), w.bias.get(), w.slopes.get()});
        call.done();
    }

    void backward_data(const ConvtParams& params, const DeviceWeights& weights,
                       const TensorView& dy, const TensorView& dx) override {
        if (params.num_images == 0 || params.src_w == 0 || params.src_h == 0) return;
        const auto& w = static_cast<const MetalWeights&>(weights);
        Pool pool;
        Call call(*this);
        ConvtParams p = params;
        MTL::Buffer* y = call.bind(dy, false, &p.dst_base);
        MTL::Buffer* x = call.bind(dx, true, &p.src_base);
        run(gpu::backward_data(p), types(p.dst_type, p.src_type), p, {}, {y, x, w.weights.get()});
        call.done();
    }

    void backward_weights(const ConvtParams& params, const TensorView& x, const TensorView& dy,
                          const GradientOutput& out) override {
        Pool pool;
        Call call(*this);
        ConvtParams p = params;
        MTL::Buffer* xs = call.bind(x, false, &p.src_base);
        MTL::Buffer* ys = call.bind(dy, false, &p.dst_base);
        gpu::backward_weights<MTL::Buffer*>(
            p, xs, ys, out, call,
            [this](const gpu::Launch& l, const std::string& t, const ConvtParams& q, Constants c,
                   std::initializer_list<MTL::Buffer*> b) { run(l, t, q, c, b); },
            "Metal");
        call.done();
    }

 private:
    // The pipeline for a kernel specialised by its function constants, built once.
    MTL::ComputePipelineState* pipeline(const std::string& name, const std::vector<int>& fc) {
        std::ostringstream key;
        key << name;
        for (int v : fc) key << ':' << v;
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = pipelines_.find(key.str());
        if (it != pipelines_.end()) return it->second;
        Ref<MTL::FunctionConstantValues> values(MTL::FunctionConstantValues::alloc()->init());
        for (size_t i = 0; i < fc.size(); ++i) {
            // Indices 1, 2 and 9 are bools in the kernels; the rest ints.
            if (i == 1 || i == 2 || i == 9) {
                const bool b = fc[i] != 0;
                values->setConstantValue(&b, MTL::DataTypeBool, i);
            } else {
                values->setConstantValue(&fc[i], MTL::DataTypeInt, i);
            }
        }
        NS::Error* error = nullptr;
        Ref<MTL::Function> function(library_->newFunction(
            NS::String::string(name.c_str(), NS::UTF8StringEncoding), values.get(), &error));
        if (!function)
            throw std::runtime_error("[metal::pipeline] " + name + ": " + describe(error));
        MTL::ComputePipelineState* pso = device_->newComputePipelineState(function.get(), &error);
        if (!pso) throw std::runtime_error("[metal::pipeline] " + name + ": " + describe(error));
        pipelines_.emplace(key.str(), pso);
        return pso;
    }

    using Batches = std::unordered_map<const MetalBackend*, std::unique_ptr<Batch>>;
    // Open batches, per thread: a command buffer commits on the thread that called commit().
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
        explicit Call(MetalBackend& backend)
            : backend_(backend), bindings_(batch_list(backend.current_batch())) {}
        /// Binds a view; adds the element offset of its origin to `base` (staged copies take
        /// the view's contents whether or not the work reads them: unified memory, no transfer).
        MTL::Buffer* bind(const TensorView& v, bool written, int64_t* base, bool /*read*/ = true) {
            const char* first;
            size_t bytes;
            Bindings::extent(v, &first, &bytes, base);
            return region(first, bytes, written);
        }
        /// A dense gradient buffer (staged copies are copied in whether or not the work reads
        /// them: they are small).
        MTL::Buffer* bind_raw(void* data, size_t bytes, bool /*read*/) {
            return region(static_cast<const char*>(data), bytes, true);
        }
        /// Device scratch, alive until the work is done.
        MTL::Buffer* scratch(size_t bytes) {
            return bindings_.add(std::make_unique<Binding>(backend_.device_.get(), bytes));
        }
        void done() {
            if (!bindings_.batched())
                for (auto& b : bindings_.own()) b->finish();
        }

     private:
        using Bindings = gpu::CallBindings<Binding>;
        static Bindings::List* batch_list(Batch* batch) {
            return batch ? &batch->bindings : nullptr;
        }
        MTL::Buffer* region(const char* first, size_t bytes, bool written) {
            return bindings_.region(
                first, bytes, written,
                [&] {
                    return std::make_unique<Binding>(backend_.device_.get(), first, bytes, written);
                },
                [&] { backend_.flush(); });
        }

        MetalBackend& backend_;
        Bindings bindings_;
    };

    void check(MTL::CommandBuffer* cb, const std::string& what) {
        if (cb->status() != MTL::CommandBufferStatusCompleted)
            throw std::runtime_error("[metal] " + what + ": " + describe(cb->error()));
    }

    // One dispatch: into the open batch's command buffer, or committed and checked at once.
    void run(const gpu::Launch& l, const std::string& types, const ConvtParams& p, Constants c,
             std::initializer_list<MTL::Buffer*> buffers) {
        if (l.groups.x <= 0 || l.groups.y <= 0 || l.groups.z <= 0) return;
        const std::string name = l.kernel + types;
        MTL::ComputePipelineState* pso = pipeline(name, constants(p, c));
        Batch* batch = current_batch();
        MTL::CommandBuffer* cb = nullptr;
        if (batch) {
            if (!batch->command_buffer)
                batch->command_buffer.reset(queue_->commandBuffer()->retain());
            cb = batch->command_buffer.get();
        } else {
            cb = queue_->commandBuffer();
        }
        MTL::ComputeCommandEncoder* encoder = cb->computeCommandEncoder();
        encoder->setComputePipelineState(pso);
        NS::UInteger index = 0;
        for (MTL::Buffer* b : buffers) encoder->setBuffer(b, 0, index++);
        encoder->setBytes(&p, sizeof(p), index);
        encoder->dispatchThreadgroups(size(l.groups), size(l.threads));
        encoder->endEncoding();
        if (batch) return;
        cb->commit();
        cb->waitUntilCompleted();
        check(cb, name);
    }

    Ref<MTL::Buffer> copy_to_device(const std::vector<float>& v) {
        Ref<MTL::Buffer> b(
            device_->newBuffer(v.size() * sizeof(float) + 1, MTL::ResourceStorageModeShared));
        if (!b) throw std::runtime_error("[metal] could not allocate weights");
        std::memcpy(b->contents(), v.data(), v.size() * sizeof(float));
        return b;
    }

    std::string kind_, name_;
    Ref<MTL::Device> device_;
    Ref<MTL::CommandQueue> queue_;
    Ref<MTL::Library> library_;
    std::mutex mutex_;
    std::unordered_map<std::string, MTL::ComputePipelineState*> pipelines_;
};

}  // namespace

std::shared_ptr<Backend> make_metal_backend(const std::string& kind) {
    return std::make_shared<MetalBackend>(kind);
}

}  // namespace convt::detail
