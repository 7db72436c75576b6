// Devices and command buffers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace convt {

namespace detail {
class Backend;
}

/// A compute device. Kinds: "cpu" always; others when built in. Unknown or unavailable kinds
/// raise std::invalid_argument; nothing falls back silently.
class Device {
 public:
    explicit Device(const std::string& kind = "cpu");
    const std::string& kind() const { return kind_; }
    std::string name() const;
    const std::shared_ptr<detail::Backend>& backend() const { return backend_; }

 private:
    std::string kind_;
    std::shared_ptr<detail::Backend> backend_;
};

/// Every device available in this build and on this machine.
std::vector<Device> devices();
/// The device kinds compiled into this library, usable here or not ("cpu", "metal", "metal-sim",
/// "cuda").
std::vector<std::string> built_device_kinds();
Device default_device();

/// MTLCommandBuffer analogue: encodes are recorded, then run by commit().
/// On the CPU the work runs inside commit(); wait_until_completed() reports its outcome.
class CommandBuffer {
 public:
    enum class Status { NotEnqueued, Committed, Completed, Error };

    explicit CommandBuffer(Device device);
    const Device& device() const { return device_; }
    /// Unique per command buffer in this process (never 0).
    uint64_t id() const { return id_; }
    /// Runs after the buffer's work, whether it succeeded or failed.
    void add_completed_handler(std::function<void()> handler);
    /// Records device work (dispatches); encoders call this after validating their arguments.
    /// A device may batch consecutive device work into one submission.
    void add(std::function<void()> work);
    /// Records host work (weight exports and reloads, optimiser steps): device work recorded
    /// before it has finished when it runs.
    void add_host(std::function<void()> work);
    void commit();
    /// Throws std::runtime_error carrying the device's message if the work failed.
    void wait_until_completed();
    Status status() const { return status_; }
    const std::string& error() const { return error_; }

 private:
    Device device_;
    uint64_t id_;
    struct Work {
        std::function<void()> run;
        bool host;
    };
    std::vector<Work> work_;
    std::vector<std::function<void()>> completed_handlers_;
    Status status_ = Status::NotEnqueued;
    std::string error_;
};

/// Worker threads used by the CPU backend (default: hardware concurrency).
void set_num_threads(int n);
int get_num_threads();
/// The instruction set of the CPU backend's kernels: "avx2" (AVX2+FMA, chosen at run time when
/// the CPU has it), "neon" (arm64: the GEMM micro-kernel in NEON intrinsics, the other loops
/// vectorised by the compiler) or "portable" (plain loops, vectorised by the compiler for the
/// build's baseline: SSE2 on x86-64, NEON on arm64). CONVT_CPU_ISA=portable forces the latter.
std::string cpu_kernel_isa();

}  // namespace convt
