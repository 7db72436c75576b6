// A small persistent pool: parallel_for over task indices, the caller working too.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace convt::cpu {

class ThreadPool {
 public:
    static ThreadPool& instance();
    ~ThreadPool();

    /// Total threads used by parallel_for, the caller included (>= 1).
    void set_num_threads(int n);
    int num_threads() const { return num_threads_; }
    /// Runs fn(i) for every i in [0, count). Each index runs once, on one thread. Returns once
    /// every worker has taken the job up (a join). Concurrent callers are served one after
    /// another. The first exception thrown is rethrown here.
    void parallel_for(int64_t count, const std::function<void(int64_t)>& fn);

 private:
    ThreadPool();
    void start(int n);
    void stop();
    void worker_loop();
    void drain();

    std::mutex submit_mutex_;  // one job at a time
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> workers_;
    int num_threads_ = 1;
    // Written under mutex_; atomic so that threads may also poll them while they spin.
    std::atomic<bool> stopping_{false};
    std::atomic<uint64_t> generation_{0};
    const std::function<void(int64_t)>* fn_ = nullptr;
    int64_t count_ = 0;
    std::atomic<int64_t> next_{0};
    std::atomic<int> active_{0};
    std::atomic<int> arrived_{0};  // workers that took up the current job
    std::exception_ptr error_;
};

/// This thread's T, made on first use: scratch kept from task to task. Take the reference once a
/// task. The call is opaque, so the reference stays in a register; one bound straight to a
/// thread_local is recomputed where it is used, a __tls_get_addr call each time in a shared
/// library (7% of dw_k4s2's dX, inside its row loop). T names the object: every use of one type
/// on a thread gets the same one, so give each user its own struct.
template <class T>
[[gnu::noinline]] T& thread_scratch() {
    thread_local T value;
    return value;
}

}  // namespace convt::cpu
