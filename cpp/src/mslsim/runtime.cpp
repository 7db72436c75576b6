// Fibers (ucontext) run the threads of one threadgroup cooperatively on one worker thread; a
// thread yields only at a barrier or a SIMD-group operation, so scheduling is deterministic.
#include "runtime.h"

#include <ucontext.h>

#include <algorithm>
#include <memory>
#include <sstream>

#include "../cpu/thread_pool.h"

namespace convt_sim {
namespace {

constexpr size_t kStackBytes = 64 * 1024;
constexpr uint32_t kSimdWidth = 32;
constexpr uint32_t kMaxThreadsPerGroup = 1024;

enum class FiberState { Ready, AtBarrier, AtSimd, Done };
enum class SimdOp { Sum, Max, Broadcast };

struct Fiber {
    ucontext_t context;
    FiberState state = FiberState::Ready;
    const char* site = nullptr;
    ThreadArgs args;
    SimdOp op = SimdOp::Sum;
    float value = 0.f, result = 0.f;
    uint32_t lane = 0;
};

struct Group {
    ucontext_t scheduler;
    std::vector<Fiber> fibers;
    size_t current = 0;
    KernelEntry entry = nullptr;
    const FunctionConstants* constants = nullptr;
};

thread_local Group* tl_group = nullptr;
thread_local std::vector<std::unique_ptr<char[]>> tl_stacks;  // reused across groups

void fiber_main() {
    Group* g = tl_group;
    Fiber& f = g->fibers[g->current];
    g->entry(f.args);
    f.state = FiberState::Done;
    // uc_link returns to the scheduler.
}

Fiber& current_fiber() {
    if (!tl_group) throw KernelError("a kernel builtin was called outside a dispatch");
    return tl_group->fibers[tl_group->current];
}

void yield(Fiber& f) { swapcontext(&f.context, &tl_group->scheduler); }

[[noreturn]] void fail(const std::string& kernel, const std::string& what) {
    throw KernelError("[metal-sim] kernel " + kernel + ": " + what);
}

std::string where(const char* site) { return site ? site : "?"; }

// All threads wait at a barrier, or some wait and the rest are done / elsewhere.
void release_barrier(Group& g, const std::string& kernel) {
    const char* site = nullptr;
    size_t waiting = 0, done = 0, simd = 0;
    for (const Fiber& f : g.fibers) {
        if (f.state == FiberState::AtBarrier) {
            if (site && std::string(site) != f.site)
                fail(kernel, "divergent threadgroup_barrier: threads wait at " + where(site) +
                                 " and at " + where(f.site));
            site = f.site, ++waiting;
        }
        done += f.state == FiberState::Done;
        simd += f.state == FiberState::AtSimd;
    }
    if (done)
        fail(kernel, "threadgroup_barrier at " + where(site) + " reached by " +
                         std::to_string(waiting) + " of " + std::to_string(g.fibers.size()) +
                         " threads; the others returned (a barrier after an early return)");
    if (simd)
        fail(kernel, "divergent control flow: threads wait at threadgroup_barrier " + where(site) +
                         " while others wait at a SIMD-group operation");
    for (Fiber& f : g.fibers) f.state = FiberState::Ready;
}

void release_simd(Group& g, const std::string& kernel) {
    const size_t n = g.fibers.size();
    for (size_t first = 0; first < n; first += kSimdWidth) {
        const size_t last = std::min(n, first + kSimdWidth);
        size_t at = 0;
        const Fiber* lead = nullptr;
        for (size_t i = first; i < last; ++i)
            if (g.fibers[i].state == FiberState::AtSimd) {
                const Fiber& f = g.fibers[i];
                if (lead && (std::string(lead->site) != f.site || lead->op != f.op))
                    fail(kernel, "divergent SIMD-group operations at " + where(lead->site) +
                                     " and " + where(f.site));
                lead = &f, ++at;
            }
        if (!at) continue;
        if (at != last - first)
            fail(kernel, "SIMD-group operation at " + where(lead->site) + " reached by " +
                             std::to_string(at) + " of " + std::to_string(last - first) +
                             " lanes of SIMD-group " + std::to_string(first / kSimdWidth) +
                             "; every lane must reach it");
        float r = 0.f;
        switch (lead->op) {
            case SimdOp::Sum:
                for (size_t i = first; i < last; ++i) r += g.fibers[i].value;
                break;
            case SimdOp::Max:
                r = g.fibers[first].value;
                for (size_t i = first; i < last; ++i) r = std::max(r, g.fibers[i].value);
                break;
            case SimdOp::Broadcast:
                if (lead->lane >= last - first)
                    fail(kernel, "simd_broadcast at " + where(lead->site) + " reads lane " +
                                     std::to_string(lead->lane) + " of a " +
                                     std::to_string(last - first) + "-lane SIMD-group");
                r = g.fibers[first + lead->lane].value;
                break;
        }
        for (size_t i = first; i < last; ++i) {
            g.fibers[i].result = r;
            g.fibers[i].state = FiberState::Ready;
        }
    }
}

void run_group(const Dispatch& d, uint3v tg) {
    const uint3v& ts = d.threads_per_group;
    const size_t n = static_cast<size_t>(ts.x) * ts.y * ts.z;
    Group g;
    g.entry = d.entry;
    g.constants = &d.constants;
    g.fibers.resize(n);
    while (tl_stacks.size() < n) tl_stacks.emplace_back(new char[kStackBytes]);
    for (size_t i = 0; i < n; ++i) {
        ThreadArgs& a = g.fibers[i].args;
        a.buffers = d.buffers;
        a.threadgroup_position_in_grid = tg;
        a.threads_per_threadgroup = ts;
        a.threadgroups_per_grid = d.threadgroups;
        a.thread_position_in_threadgroup = {static_cast<uint32_t>(i % ts.x),
                                            static_cast<uint32_t>((i / ts.x) % ts.y),
                                            static_cast<uint32_t>(i / (size_t(ts.x) * ts.y))};
        const uint3v& t = a.thread_position_in_threadgroup;
        a.thread_position_in_grid = {tg.x * ts.x + t.x, tg.y * ts.y + t.y, tg.z * ts.z + t.z};
        a.thread_index_in_threadgroup = static_cast<uint32_t>(i);
        a.thread_index_in_simdgroup = static_cast<uint32_t>(i % kSimdWidth);
        a.simdgroup_index_in_threadgroup = static_cast<uint32_t>(i / kSimdWidth);
    }
    Group* saved = tl_group;
    tl_group = &g;
    struct Restore {
        Group* saved;
        ~Restore() { tl_group = saved; }
    } restore{saved};
    for (size_t i = 0; i < n; ++i) {
        Fiber& f = g.fibers[i];
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = tl_stacks[i].get();
        f.context.uc_stack.ss_size = kStackBytes;
        f.context.uc_link = &g.scheduler;
        makecontext(&f.context, fiber_main, 0);
    }
    for (;;) {
        for (size_t i = 0; i < n; ++i)
            if (g.fibers[i].state == FiberState::Ready) {
                g.current = i;
                swapcontext(&g.scheduler, &g.fibers[i].context);
            }
        bool any_barrier = false, any_simd = false, all_done = true;
        for (const Fiber& f : g.fibers) {
            any_barrier |= f.state == FiberState::AtBarrier;
            any_simd |= f.state == FiberState::AtSimd;
            all_done &= f.state == FiberState::Done;
        }
        if (all_done) return;
        if (any_barrier)
            release_barrier(g, d.name);
        else if (any_simd)
            release_simd(g, d.name);
    }
}

float simd_op(SimdOp op, float value, uint32_t lane, const char* site) {
    Fiber& f = current_fiber();
    f.state = FiberState::AtSimd;
    f.op = op, f.value = value, f.lane = lane, f.site = site;
    yield(f);
    return f.result;
}

}  // namespace

void run(const Dispatch& d) {
    if (!d.entry) throw KernelError("[metal-sim] dispatch of " + d.name + " has no kernel");
    const uint3v& ts = d.threads_per_group;
    const uint64_t threads = uint64_t(ts.x) * ts.y * ts.z;
    if (threads == 0 || threads > kMaxThreadsPerGroup)
        fail(d.name,
             "threads per threadgroup must be in [1, 1024], got " + std::to_string(threads));
    const uint3v& g = d.threadgroups;
    const int64_t groups = int64_t(g.x) * g.y * g.z;
    convt::cpu::ThreadPool::instance().parallel_for(groups, [&](int64_t i) {
        const uint3v tg{static_cast<uint32_t>(i % g.x), static_cast<uint32_t>((i / g.x) % g.y),
                        static_cast<uint32_t>(i / (int64_t(g.x) * g.y))};
        run_group(d, tg);
    });
}

void barrier(const char* site) {
    Fiber& f = current_fiber();
    f.state = FiberState::AtBarrier;
    f.site = site;
    yield(f);
}

float simd_sum(float value, const char* site) { return simd_op(SimdOp::Sum, value, 0, site); }
float simd_max(float value, const char* site) { return simd_op(SimdOp::Max, value, 0, site); }
float simd_broadcast(float value, uint32_t lane, const char* site) {
    return simd_op(SimdOp::Broadcast, value, lane, site);
}

int64_t function_constant(uint32_t index) {
    if (!tl_group) throw KernelError("function constant read outside a dispatch");
    for (const auto& [i, v] : tl_group->constants->values)
        if (i == index) return v;
    return 0;
}

bool function_constant_defined(uint32_t index) {
    if (!tl_group) return false;
    for (const auto& [i, v] : tl_group->constants->values)
        if (i == index) return true;
    return false;
}

}  // namespace convt_sim
