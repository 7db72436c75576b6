#include "thread_pool.h"

#include <chrono>
#ifdef __linux__
#include <pthread.h>
#endif
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace convt::cpu {
namespace {

// How long a thread polls before it blocks: a worker for the next job, the caller for the
// workers. Waking a blocked thread costs far more on a VM whose idle vCPU has halted, and not
// only between the loops of one call: after an idle pause, dcgan_out's backward (2 threads, N=8)
// took 1.8-4.3 ms (median 3.3) in the call after a priming call with a 250 us poll, 1.8-2.0 ms
// (median 1.9) with 3 ms, as in a loop of calls; 1 ms was not enough. OpenMP runtimes poll as
// long or longer (torch's workers about 10 ms here). The cost: up to 3 ms of a core after the
// last call of a burst.
constexpr std::chrono::microseconds kSpin{3000};

// A worker yet to take a job up is polled for this long, then waited for blocked.
constexpr std::chrono::microseconds kArrivalSpin{50};

// Polls ready() until it is true or `limit` has passed; returns its last value.
template <typename Ready>
bool spin_until(const Ready& ready, std::chrono::microseconds limit = kSpin) {
    const auto until = std::chrono::steady_clock::now() + limit;
    for (int i = 0;; ++i) {
        if (ready()) return true;
        if (i % 64 == 63 && std::chrono::steady_clock::now() > until) return false;
#if defined(__x86_64__) || defined(__i386__)
        _mm_pause();
#endif
    }
}

}  // namespace

ThreadPool& ThreadPool::instance() {
    // Never destroyed: joining workers from a static destructor at process exit races with
    // whatever else exit does (threads of other libraries, forked children).
    static ThreadPool* pool = new ThreadPool();
    return *pool;
}

ThreadPool::ThreadPool() {
    const unsigned hw = std::thread::hardware_concurrency();
    start(hw == 0 ? 1 : static_cast<int>(hw));
}

ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::start(int n) {
    num_threads_ = n;
    stopping_ = false;
    for (int i = 1; i < n; ++i) {
        workers_.emplace_back([this] { worker_loop(); });
#ifdef __linux__
        // Named for top -H, perf and debuggers (15 characters at most).
        pthread_setname_np(workers_.back().native_handle(), "convt-pool");
#endif
    }
}

void ThreadPool::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
}

void ThreadPool::set_num_threads(int n) {
    if (n < 1) throw std::invalid_argument("num_threads must be >= 1, got " + std::to_string(n));
    std::lock_guard<std::mutex> submit(submit_mutex_);
    if (n == num_threads_) return;
    stop();
    start(n);
}

void ThreadPool::drain() {
    for (int64_t i; (i = next_.fetch_add(1)) < count_;) {
        try {
            (*fn_)(i);
        } catch (...) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!error_) error_ = std::current_exception();
            next_.store(count_);  // stop handing out work
        }
    }
}

void ThreadPool::worker_loop() {
    uint64_t seen = 0;
    for (;;) {
        spin_until([&] { return stopping_.load() || generation_.load() != seen; });
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
            if (stopping_) return;
            seen = generation_;
            ++active_;
            ++arrived_;
        }
        drain();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (--active_ == 0) done_.notify_all();
        }
    }
}

void ThreadPool::parallel_for(int64_t count, const std::function<void(int64_t)>& fn) {
    if (count <= 0) return;
    std::lock_guard<std::mutex> submit(submit_mutex_);
    if (workers_.empty() || count == 1) {
        for (int64_t i = 0; i < count; ++i) fn(i);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        fn_ = &fn;
        count_ = count;
        next_.store(0);
        error_ = nullptr;
        arrived_.store(0);
        ++generation_;
    }
    wake_.notify_all();
    drain();
    // A join, as in OpenMP: the job ends once every worker has taken it up, even one that woke too
    // late to find work. Returning before a late worker arrived left the next call to the caller
    // alone (the worker, woken after an idle pause, was still on its way: dcgan_out's backward,
    // 2 threads, took 3.5-4.7 ms instead of 1.9 in a quarter of the calls after a priming call).
    // Polls while workers that took the job still run it; one yet to arrive is polled for
    // briefly (a spinning worker arrives within microseconds), then waited for blocked, which
    // frees this core for it when the machine is oversubscribed.
    const int workers = static_cast<int>(workers_.size());
    auto joined = [&] { return active_.load() == 0 && arrived_.load() == workers; };
    if (spin_until([&] { return active_.load() == 0; })) spin_until(joined, kArrivalSpin);
    std::exception_ptr error;
    {
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, joined);
        fn_ = nullptr;
        error = error_;
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace convt::cpu
