// The register-blocked inner product every CPU GEMM path ends in, picked once per process by
// what the CPU can do.
#pragma once

#include <cstdint>

namespace convt::cpu {

constexpr int kMr = 6;   // rows of a register tile (channels)
constexpr int kNr = 16;  // columns of a register tile (pixels or channels)

/// One stretch of a register tile's depth: a packed panel a [depth][kMr], and b, kNr floats
/// at b + p * ldb for each p < depth (a packed panel has ldb == kNr; B may also be read in
/// place, a row of the tensor for each p).
struct Segment {
    const float* a;
    const float* b;
    int depth;
    int64_t ldb = kNr;
};

/// c[i * ldc + j] += sum over the segments, in order, and p < depth of A[p * kMr + i] *
/// B[p * ldb + j], for i < kMr and j < kNr, with A = a + a_shift and B = b + b_shift of each
/// segment (one segment list then serves every register tile of a pass). With `overwrite`,
/// c = the sum (c not read). The tile stays in registers across segments; the sum runs in a
/// fixed order (deterministic).
using MicroKernel = void (*)(const Segment* segments, int count, int64_t a_shift, int64_t b_shift,
                             float* c, int64_t ldc, bool overwrite);

/// c[i * ldc + j] += sum over p < depth, in order, of a[p * kMr + i] * b[rows[p] + j], for i < kMr
/// and j < kNr (with `overwrite`, c = the sum, c not read): B read in place through one offset a
/// step (the rows of a block's footprint that taps of a few channels each read), so neither
/// packing nor a segment per tap is needed.
using IndirectKernel = void (*)(const float* a, const int64_t* rows, int depth, const float* b,
                                float* c, int64_t ldc, bool overwrite);

/// c[i * ldc + j] += sum over p < depth, in order, of A(i, p) * b[p * kNr + j], for i < kMr and
/// j < kNr, with A(i, p) = a[min(i, rows - 1) * lda + p * astep]: A read in place, a tensor's
/// channel rows (rows past `rows`, 1 <= rows <= kMr, repeat the last one, and the caller drops
/// their sums), B a packed panel.
using StridedAKernel = void (*)(const float* a, int64_t lda, int64_t astep, int rows, int depth,
                                const float* b, float* c, int64_t ldc);

/// The segment kernel on a short tile: rows [0, rows) of A's panels (still kMr floats a step),
/// 1 <= rows < kMr, times `panels` B panels, panel q's at b + q * panel_stride (the segments'
/// b and ldb give panel 0), into columns [q * kNr, (q + 1) * kNr) of c; rows past `rows` are
/// not written. The same sums, bitwise, as the full kernel's rows, panel by panel: it keeps the
/// FMA pipes full where a tail tile of 1-5 rows would leave them idle (two rows of a 16-column
/// panel are 4 chains of multiply-adds where 8 hide the latency).
using ShortTileKernel = void (*)(const Segment* segments, int count, int64_t a_shift,
                                 int64_t b_shift, int64_t panel_stride, int rows, int panels,
                                 float* c, int64_t ldc, bool overwrite);
/// The indirect kernel on a short tile: rows [0, rows) of a (still kMr floats a step),
/// 1 <= rows < kMr, times `panels` B panels, panel q's row of step p at b[q] + offsets[p], into
/// columns [q * kNr, (q + 1) * kNr) of c; rows past `rows` are not written. Bitwise the full
/// indirect kernel's rows, panel by panel.
using ShortIndirectKernel = void (*)(const float* a, const int64_t* offsets, int depth,
                                     const float* const* b, int rows, int panels, float* c,
                                     int64_t ldc, bool overwrite);
/// The panels a short tile of `rows` rows takes at once: its accumulators within the full tile's.
inline int short_tile_panels(int rows) { return rows >= 4 ? 1 : 6 / rows; }
/// The segment kernel with A read in place, a tensor's channel rows as the strided-A kernel
/// reads them: c[i * ldc + q * kNr + j] += sum over the segments, in order, and p < depth of
/// A(i, p) * B(q, p, j), A(i, p) = a[a_shift + i * lda + p * astep] and B(q, p, j) =
/// b[b_shift + q * panel_stride + p * ldb + j] of each segment, for i < rows (1 <= rows <= kMr),
/// q < panels and j < kNr; with `overwrite`, c = the sum (c not read). Rows past `rows` are
/// neither read nor written. Bitwise the segment kernel's sums on the same A packed.
using StridedSegmentKernel = void (*)(const Segment* segments, int count, int64_t a_shift,
                                      int64_t lda, int64_t astep, int64_t b_shift,
                                      int64_t panel_stride, int rows, int panels, float* c,
                                      int64_t ldc, bool overwrite);

/// For callers looping over panels j < panels with a short tile: the short indirect kernel on
/// the run of panels that starts at j (panel q's B at base(q); c_j: panel j's columns of c), or
/// nothing when j is inside a run (done with the run's first panel).
template <typename Base>
void short_indirect_run(ShortIndirectKernel sk, const float* a, const int64_t* offsets, int depth,
                        int rows, int j, int panels, const Base& base, float* c_j, int64_t ldc,
                        bool overwrite) {
    const int step = short_tile_panels(rows);
    if (j % step) return;
    const float* bases[kMr];  // step <= kMr
    const int count = panels - j < step ? panels - j : step;
    for (int q = 0; q < count; ++q) bases[q] = base(j + q);
    sk(a, offsets, depth, bases, rows, count, c_j, ldc, overwrite);
}

/// Whether the CPU kernels use AVX2+FMA: the CPU has both and the environment variable
/// CONVT_CPU_ISA is not "portable" (read once; lets tests run the portable kernels anywhere).
bool use_avx2();

/// Whether the GEMM micro-kernel is the NEON one: on arm64 unless CONVT_CPU_ISA is "portable".
/// (The other CPU loops are left to the compiler's vectorizer there.)
bool use_neon();

/// AVX2+FMA when use_avx2(), NEON when use_neon(), else the portable kernel.
MicroKernel micro_kernel();
/// The portable kernel whatever the CPU (the reference of tools/check_micro_kernel.cpp).
MicroKernel portable_micro_kernel();
/// The indirect kernels, picked the same way.
IndirectKernel indirect_kernel();
IndirectKernel portable_indirect_kernel();
/// The strided-A kernels, picked the same way.
StridedAKernel strided_a_kernel();
StridedAKernel portable_strided_a_kernel();
/// The short-tile kernels where the CPU has them (AVX2), else null: callers then run the full
/// kernel on the tail tile. (No NEON ones: no arm64 machine here to time them on.)
ShortTileKernel short_tile_kernel();
ShortTileKernel portable_short_tile_kernel();
ShortIndirectKernel short_indirect_kernel();
ShortIndirectKernel portable_short_indirect_kernel();
/// The strided-segment kernel: AVX2 where use_avx2(), else the portable one (no NEON one).
StridedSegmentKernel strided_segment_kernel();
StridedSegmentKernel portable_strided_segment_kernel();

}  // namespace convt::cpu
