// The metal-cpp facade over the simulation runtime. Its errors travel the way Metal's do:
// NS::Error out-parameters at creation time, the command buffer's status and error after
// execution.
#include <Foundation/Foundation.hpp>
#include <Metal/Metal.hpp>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "runtime.h"

namespace NS {
namespace {
thread_local std::vector<std::vector<Object*>> tl_pools;
}

Object* Object::retain() {
    ++refs_;
    return this;
}

void Object::release() {
    if (--refs_ == 0) delete this;
}

Object* Object::autorelease() {
    if (tl_pools.empty()) std::abort();  // as in Foundation: autorelease needs a pool
    tl_pools.back().push_back(this);
    return this;
}

String* String::string(const char* utf8, StringEncoding) {
    return (new String(utf8 ? utf8 : ""))->autorelease();
}

AutoreleasePool* AutoreleasePool::alloc() { return new AutoreleasePool(); }

AutoreleasePool* AutoreleasePool::init() {
    tl_pools.emplace_back();
    return this;
}

AutoreleasePool::~AutoreleasePool() {
    std::vector<Object*> objects = std::move(tl_pools.back());
    tl_pools.pop_back();
    for (Object* o : objects) o->release();
}

}  // namespace NS

namespace MTL {

Buffer::Buffer(void* pointer, UInteger length, bool owned)
    : data_(pointer), length_(length), owned_(owned) {}

Buffer::~Buffer() {
    if (owned_) std::free(data_);
}

FunctionConstantValues* FunctionConstantValues::alloc() { return new FunctionConstantValues(); }

void FunctionConstantValues::setConstantValue(const void* value, DataType type, UInteger index) {
    if (type == DataTypeBool)
        values_[index] = *static_cast<const bool*>(value) ? 1 : 0;
    else
        values_[index] = *static_cast<const int*>(value);
}

Function* Library::newFunction(const NS::String* name, const FunctionConstantValues* constants,
                               NS::Error** error) {
    const std::string n = name->utf8String();
    if (!convt_sim::find_kernel(n) || source_.find(n) == std::string::npos) {
        if (error)
            *error =
                (new NS::Error("function " + n + " was not found in the library"))->autorelease();
        return nullptr;
    }
    return new Function(n, constants ? constants->values() : std::map<UInteger, long>{});
}

void ComputeCommandEncoder::setBuffer(const Buffer* buffer, UInteger offset, UInteger index) {
    if (bindings_.size() <= index) bindings_.resize(index + 1, nullptr);
    bindings_[index] = static_cast<char*>(buffer->contents()) + offset;
}

void ComputeCommandEncoder::setBytes(const void* bytes, UInteger length, UInteger index) {
    bytes_.emplace_back(static_cast<const unsigned char*>(bytes),
                        static_cast<const unsigned char*>(bytes) + length);
    if (bindings_.size() <= index) bindings_.resize(index + 1, nullptr);
    bindings_[index] = bytes_.back().data();
}

void ComputeCommandEncoder::dispatchThreadgroups(Size groups, Size threads) {
    work_.push_back(Work{state_, bindings_, groups, threads});
}

CommandBuffer::~CommandBuffer() {
    for (auto* e : encoders_) e->release();
}

ComputeCommandEncoder* CommandBuffer::computeCommandEncoder() {
    encoders_.push_back(new ComputeCommandEncoder());
    return encoders_.back();
}

void CommandBuffer::commit() {
    status_ = CommandBufferStatusCommitted;
    try {
        for (ComputeCommandEncoder* e : encoders_)
            for (const auto& w : e->work_) {
                convt_sim::Dispatch d;
                d.name = w.state->name();
                d.entry = convt_sim::find_kernel(d.name);
                d.buffers = w.buffers.data();
                d.threadgroups = {static_cast<uint32_t>(w.groups.width),
                                  static_cast<uint32_t>(w.groups.height),
                                  static_cast<uint32_t>(w.groups.depth)};
                d.threads_per_group = {static_cast<uint32_t>(w.threads.width),
                                       static_cast<uint32_t>(w.threads.height),
                                       static_cast<uint32_t>(w.threads.depth)};
                for (const auto& [index, value] : w.state->constants())
                    d.constants.values.emplace_back(static_cast<uint32_t>(index), value);
                convt_sim::run(d);
            }
        status_ = CommandBufferStatusCompleted;
    } catch (const std::exception& e) {
        status_ = CommandBufferStatusError;
        error_ = (new NS::Error(e.what()))->autorelease();
    }
}

CommandBuffer* CommandQueue::commandBuffer() { return (new CommandBuffer())->autorelease(); }

NS::String* Device::name() const {
    return NS::String::string("convt MSL simulation (CPU fibers)", NS::UTF8StringEncoding);
}

CommandQueue* Device::newCommandQueue() { return new CommandQueue(); }

Library* Device::newLibrary(const NS::String* source, const CompileOptions*, NS::Error** error) {
    if (!source || !*source->utf8String()) {
        if (error) *error = (new NS::Error("empty library source"))->autorelease();
        return nullptr;
    }
    return new Library(source->utf8String());
}

Library* Device::newLibrary(const NS::String* filepath, NS::Error** error) {
    if (error)
        *error = (new NS::Error(std::string("the simulation loads no .metallib (") +
                                (filepath ? filepath->utf8String() : "") + ")"))
                     ->autorelease();
    return nullptr;
}

ComputePipelineState* Device::newComputePipelineState(const Function* function, NS::Error** error) {
    if (!function) {
        if (error) *error = (new NS::Error("no function"))->autorelease();
        return nullptr;
    }
    return new ComputePipelineState(function);
}

Buffer* Device::newBuffer(UInteger length, ResourceOptions) {
    void* p = std::calloc(length ? length : 1, 1);
    return p ? new Buffer(p, length, true) : nullptr;
}

Buffer* Device::newBuffer(const void* pointer, UInteger length, ResourceOptions, void*) {
    return new Buffer(const_cast<void*>(pointer), length, false);
}

Device* CreateSystemDefaultDevice() { return new Device(); }

}  // namespace MTL
