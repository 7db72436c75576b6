// Non-temporal stores for outputs larger than the caches: written lines then go to memory
// without first being read in (a plain store reads every line it misses).
#pragma once

#include <cstdint>

namespace convt::cpu {

/// Outputs of at least this many bytes are streamed (half the L3 of the dev VM).
constexpr int64_t kStreamBytes = 16 << 20;

/// out[i] = v[i] for i < n, with non-temporal stores where the ISA has them (x86: SSE, aligned
/// to 16 bytes inside the row); call stream_fence() before other threads read `out`.
void stream_floats(const float* v, int64_t n, float* out);
/// Orders this thread's streamed stores before its later stores (the end of a task).
void stream_fence();

}  // namespace convt::cpu
