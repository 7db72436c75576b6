#include "convt/device.h"

#include <atomic>
#include <mutex>

#include "backend.h"
#include "check.h"
#if CONVT_HAS_MSLSIM || CONVT_HAS_METAL
#include "../metal/metal_backend.h"
#endif
#if CONVT_HAS_CUDA
#include "../cuda/cuda_backend.h"
#endif

namespace convt {

namespace {

// Device kinds built into this library, in the order devices() lists them.
const std::vector<std::string>& built_kinds() {
    static const std::vector<std::string> kinds{
        "cpu",
#if CONVT_HAS_METAL
        "metal",
#endif
#if CONVT_HAS_MSLSIM
        "metal-sim",
#endif
#if CONVT_HAS_CUDA
        "cuda",
#endif
    };
    return kinds;
}

std::shared_ptr<detail::Backend> backend_for(const std::string& kind) {
    if (kind == "cpu") {
        static std::shared_ptr<detail::Backend> cpu = detail::make_cpu_backend();
        return cpu;
    }
#if CONVT_HAS_METAL
    if (kind == "metal") {
        static std::shared_ptr<detail::Backend> metal = detail::make_metal_backend("metal");
        return metal;
    }
#endif
#if CONVT_HAS_MSLSIM
    if (kind == "metal-sim") {
        static std::shared_ptr<detail::Backend> sim = detail::make_metal_backend("metal-sim");
        return sim;
    }
#endif
#if CONVT_HAS_CUDA
    if (kind == "cuda") {
        static std::shared_ptr<detail::Backend> cuda = detail::make_cuda_backend();
        return cuda;
    }
#endif
    std::string list;
    for (const auto& k : built_kinds()) list += (list.empty() ? "'" : ", '") + k + "'";
    throw std::invalid_argument(detail::concat("device kind must be one of the available devices [",
                                               list, "], got '", kind, "'"));
}

}  // namespace

Device::Device(const std::string& kind) : kind_(kind), backend_(backend_for(kind)) {}

std::string Device::name() const { return backend_->name(); }

std::vector<Device> devices() {
    std::vector<Device> out;
    for (const auto& kind : built_kinds()) {
        try {
            out.emplace_back(kind);
        } catch (const std::runtime_error&) {
            // Built in but not usable here (a Mac without a Metal device): not listed.
        }
    }
    return out;
}

std::vector<std::string> built_device_kinds() { return built_kinds(); }

Device default_device() { return devices().front(); }

CommandBuffer::CommandBuffer(Device device) : device_(std::move(device)) {
    static std::atomic<uint64_t> next_id{1};
    id_ = next_id.fetch_add(1);
}

void CommandBuffer::add_completed_handler(std::function<void()> handler) {
    if (status_ != Status::NotEnqueued)
        throw std::invalid_argument("command_buffer must not be committed yet to add a handler");
    completed_handlers_.push_back(std::move(handler));
}

void CommandBuffer::add(std::function<void()> work) {
    if (status_ != Status::NotEnqueued)
        throw std::invalid_argument("command_buffer must not be committed yet to encode into it");
    work_.push_back({std::move(work), false});
}

void CommandBuffer::add_host(std::function<void()> work) {
    if (status_ != Status::NotEnqueued)
        throw std::invalid_argument("command_buffer must not be committed yet to encode into it");
    work_.push_back({std::move(work), true});
}

void CommandBuffer::commit() {
    if (status_ != Status::NotEnqueued)
        throw std::invalid_argument("command_buffer must be committed only once");
    status_ = Status::Committed;
    detail::Backend& backend = *device_.backend();
    try {
        // Device work between host work goes to the device as one batch.
        backend.begin_batch();
        for (auto& work : work_) {
            if (work.host) backend.flush();
            work.run();
        }
        backend.flush();
        backend.end_batch();
        status_ = Status::Completed;
    } catch (const std::exception& e) {
        backend.end_batch();
        status_ = Status::Error;
        error_ = detail::concat("[", device_.kind(), "] ", e.what());
    }
    work_.clear();
    for (auto& handler : completed_handlers_) handler();
    completed_handlers_.clear();
}

void CommandBuffer::wait_until_completed() {
    if (status_ == Status::NotEnqueued)
        throw std::invalid_argument("command_buffer must be committed before wait_until_completed");
    if (status_ == Status::Error) throw std::runtime_error(error_);
}

}  // namespace convt
