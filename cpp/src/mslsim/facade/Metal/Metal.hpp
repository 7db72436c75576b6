// metal-cpp-compatible facade (Linux simulation): the Metal subset the backend uses. Kernels
// come from the simulation's generated glue; "device memory" is host memory.
#pragma once

#include <Foundation/Foundation.hpp>
#include <map>
#include <string>
#include <vector>

namespace convt_sim {
struct Dispatch;
}

namespace MTL {

using NS::UInteger;

enum DataType : UInteger { DataTypeInt = 29, DataTypeBool = 53 };
enum ResourceOptions : UInteger { ResourceStorageModeShared = 0 };
enum CommandBufferStatus : UInteger {
    CommandBufferStatusNotEnqueued = 0,
    CommandBufferStatusCommitted = 2,
    CommandBufferStatusCompleted = 4,
    CommandBufferStatusError = 5,
};

struct Size {
    Size(UInteger w, UInteger h, UInteger d) : width(w), height(h), depth(d) {}
    UInteger width, height, depth;
};

class Buffer : public NS::Referencing<Buffer> {
 public:
    Buffer(void* pointer, UInteger length, bool owned);
    ~Buffer() override;
    void* contents() const { return data_; }
    UInteger length() const { return length_; }

 private:
    void* data_;
    UInteger length_;
    bool owned_;
};

class FunctionConstantValues : public NS::Referencing<FunctionConstantValues> {
 public:
    static FunctionConstantValues* alloc();
    FunctionConstantValues* init() { return this; }
    void setConstantValue(const void* value, DataType type, UInteger index);
    const std::map<UInteger, long>& values() const { return values_; }

 private:
    std::map<UInteger, long> values_;
};

class Function : public NS::Referencing<Function> {
 public:
    Function(std::string name, std::map<UInteger, long> constants)
        : name_(std::move(name)), constants_(std::move(constants)) {}
    const std::string& name() const { return name_; }
    const std::map<UInteger, long>& constants() const { return constants_; }

 private:
    std::string name_;
    std::map<UInteger, long> constants_;
};

class Library : public NS::Referencing<Library> {
 public:
    explicit Library(std::string source) : source_(std::move(source)) {}
    Function* newFunction(const NS::String* name, const FunctionConstantValues* constants,
                          NS::Error** error);

 private:
    std::string source_;
};

class ComputePipelineState : public NS::Referencing<ComputePipelineState> {
 public:
    explicit ComputePipelineState(const Function* f)
        : name_(f->name()), constants_(f->constants()) {}
    UInteger maxTotalThreadsPerThreadgroup() const { return 1024; }
    const std::string& name() const { return name_; }
    const std::map<UInteger, long>& constants() const { return constants_; }

 private:
    std::string name_;
    std::map<UInteger, long> constants_;
};

class CompileOptions;

class ComputeCommandEncoder : public NS::Referencing<ComputeCommandEncoder> {
 public:
    void setComputePipelineState(const ComputePipelineState* state) { state_ = state; }
    void setBuffer(const Buffer* buffer, UInteger offset, UInteger index);
    void setBytes(const void* bytes, UInteger length, UInteger index);
    void dispatchThreadgroups(Size threadgroupsPerGrid, Size threadsPerThreadgroup);
    void endEncoding() {}

 private:
    friend class CommandBuffer;
    struct Work {
        const ComputePipelineState* state;
        std::vector<void*> buffers;
        Size groups, threads;
    };
    const ComputePipelineState* state_ = nullptr;
    std::vector<void*> bindings_;
    std::vector<std::vector<unsigned char>> bytes_;  // setBytes copies, kept until completion
    std::vector<Work> work_;
};

class CommandBuffer : public NS::Referencing<CommandBuffer> {
 public:
    ~CommandBuffer() override;
    ComputeCommandEncoder* computeCommandEncoder();
    void commit();
    void waitUntilCompleted() {}
    CommandBufferStatus status() const { return status_; }
    NS::Error* error() const { return error_; }

 private:
    std::vector<ComputeCommandEncoder*> encoders_;
    CommandBufferStatus status_ = CommandBufferStatusNotEnqueued;
    NS::Error* error_ = nullptr;
};

class CommandQueue : public NS::Referencing<CommandQueue> {
 public:
    CommandBuffer* commandBuffer();
};

class Device : public NS::Referencing<Device> {
 public:
    NS::String* name() const;
    CommandQueue* newCommandQueue();
    Library* newLibrary(const NS::String* source, const CompileOptions* options, NS::Error** error);
    /// A prebuilt .metallib: the simulation has none (its kernels are compiled in).
    Library* newLibrary(const NS::String* filepath, NS::Error** error);
    ComputePipelineState* newComputePipelineState(const Function* function, NS::Error** error);
    Buffer* newBuffer(UInteger length, ResourceOptions options);
    Buffer* newBuffer(const void* pointer, UInteger length, ResourceOptions options,
                      void* deallocator);
};

Device* CreateSystemDefaultDevice();

}  // namespace MTL
