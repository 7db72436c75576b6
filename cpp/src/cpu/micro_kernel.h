// The register-blocked inner product every CPU GEMM path ends in, picked once per process by
// what the CPU can do.
#pragma once

#include <cstdint>

namespace convt::cpu {

constexpr int kMr = 6;   // rows of a register tile (channels)
constexpr int kNr = 16;  // columns of a register tile (pixels or channels)

/// c[i * ldc + j] += sum over p < depth of a[p * kMr + i] * b[p * kNr + j], for i < kMr and
/// j < kNr. `a` and `b` are packed panels; the sum runs in p order (deterministic).
using MicroKernel = void (*)(int depth, const float* a, const float* b, float* c, int64_t ldc);

/// AVX2+FMA where the CPU has it, else the portable kernel.
MicroKernel micro_kernel();
/// The portable kernel (tests compare the two).
MicroKernel portable_micro_kernel();
/// "avx2" or "portable": which micro_kernel() returns.
const char* micro_kernel_name();

}  // namespace convt::cpu
