// Host prelude: compiles MSL kernels as C++ for the simulation (cpp/src/mslsim). Address-space
// qualifiers vanish, threadgroup arrays become per-worker statics (a threadgroup runs on one
// worker thread), and barriers / SIMD-group operations call the fiber runtime.
#ifndef CONVT_PRELUDE_HOST_H
#define CONVT_PRELUDE_HOST_H

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "runtime.h"

#define kernel
#define device
#define constant const
#define threadgroup static thread_local
#define thread

#define CONVT_STR2(x) #x
#define CONVT_STR(x) CONVT_STR2(x)
#define CONVT_SITE __FILE__ ":" CONVT_STR(__LINE__)

typedef _Float16 half;
typedef uint32_t uint;
typedef uint16_t ushort;
typedef uint8_t uchar;

struct uint3 {
    uint x, y, z;
};

namespace metal {
enum class mem_flags { mem_none, mem_device, mem_threadgroup };
using std::exp;
using std::fabs;
using std::fma;
using std::log;
using std::pow;
using std::sqrt;
using std::tanh;
template <typename T>
inline T min(T a, T b) {
    return a < b ? a : b;
}
template <typename T>
inline T max(T a, T b) {
    return a > b ? a : b;
}
template <typename T>
inline T clamp(T x, T lo, T hi) {
    return min(max(x, lo), hi);
}
}  // namespace metal
using namespace metal;

#define threadgroup_barrier(flags) ::convt_sim::barrier(CONVT_SITE)
#define simd_sum(x) ::convt_sim::simd_sum((x), CONVT_SITE)
#define simd_max(x) ::convt_sim::simd_max((x), CONVT_SITE)
#define simd_broadcast(x, lane) ::convt_sim::simd_broadcast((x), (lane), CONVT_SITE)

// Function constants are runtime values here: CONVT_FUNCTION_CONSTANT(type, name, index)
// in the kernel header makes `name` read the dispatch's value.
#define CONVT_FC(type, index) (static_cast<type>(::convt_sim::function_constant(index)))

#endif  // CONVT_PRELUDE_HOST_H
