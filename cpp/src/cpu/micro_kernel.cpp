#include "micro_kernel.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "convt/device.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CONVT_X86_DISPATCH 1
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define CONVT_NEON 1
#endif

namespace convt::cpu {
namespace {

// X(i) for every row of a register tile (kMr of them): the SIMD kernels name each row's
// accumulators, which keeps them in registers.
#define CONVT_TILE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
static_assert(kMr == 6, "CONVT_TILE_ROWS lists kMr rows");

void micro_portable(const Segment* segments, int count, int64_t a_shift, int64_t b_shift, float* c,
                    int64_t ldc, bool overwrite) {
    float acc[kMr][kNr];
    for (int i = 0; i < kMr; ++i)
        for (int j = 0; j < kNr; ++j) acc[i][j] = overwrite ? 0.f : c[i * ldc + j];
    for (int s = 0; s < count; ++s)
        for (int p = 0; p < segments[s].depth; ++p) {
            const float* ap = segments[s].a + a_shift + p * kMr;
            const float* bp = segments[s].b + b_shift + p * segments[s].ldb;
            for (int i = 0; i < kMr; ++i)
                for (int j = 0; j < kNr; ++j) acc[i][j] += ap[i] * bp[j];
        }
    for (int i = 0; i < kMr; ++i)
        for (int j = 0; j < kNr; ++j) c[i * ldc + j] = acc[i][j];
}

void indirect_portable(const float* a, const int64_t* rows, int depth, const float* b, float* c,
                       int64_t ldc, bool overwrite) {
    float acc[kMr][kNr];
    for (int i = 0; i < kMr; ++i)
        for (int j = 0; j < kNr; ++j) acc[i][j] = overwrite ? 0.f : c[i * ldc + j];
    for (int p = 0; p < depth; ++p) {
        const float* ap = a + p * kMr;
        const float* bp = b + rows[p];
        for (int i = 0; i < kMr; ++i)
            for (int j = 0; j < kNr; ++j) acc[i][j] += ap[i] * bp[j];
    }
    for (int i = 0; i < kMr; ++i)
        for (int j = 0; j < kNr; ++j) c[i * ldc + j] = acc[i][j];
}

void strided_a_portable(const float* a, int64_t lda, int64_t astep, int rows, int depth,
                        const float* b, float* c, int64_t ldc) {
    float acc[kMr][kNr];
    const float* row[kMr];
    for (int i = 0; i < kMr; ++i) {
        row[i] = a + std::min(i, rows - 1) * lda;
        for (int j = 0; j < kNr; ++j) acc[i][j] = c[i * ldc + j];
    }
    for (int p = 0; p < depth; ++p)
        for (int i = 0; i < kMr; ++i)
            for (int j = 0; j < kNr; ++j) acc[i][j] += row[i][p * astep] * b[p * kNr + j];
    for (int i = 0; i < kMr; ++i)
        for (int j = 0; j < kNr; ++j) c[i * ldc + j] = acc[i][j];
}

// A short tile's sums panel by panel: steps(q, add) calls add(a row, B row) for each step of
// panel q, in order.
template <typename Steps>
void short_portable(int rows, int panels, float* c, int64_t ldc, bool overwrite,
                    const Steps& steps) {
    for (int q = 0; q < panels; ++q) {
        float acc[kMr][kNr];
        for (int i = 0; i < rows; ++i)
            for (int j = 0; j < kNr; ++j) acc[i][j] = overwrite ? 0.f : c[i * ldc + q * kNr + j];
        steps(q, [&](const float* ap, const float* bp) {
            for (int i = 0; i < rows; ++i)
                for (int j = 0; j < kNr; ++j) acc[i][j] += ap[i] * bp[j];
        });
        for (int i = 0; i < rows; ++i)
            for (int j = 0; j < kNr; ++j) c[i * ldc + q * kNr + j] = acc[i][j];
    }
}

void short_tile_portable(const Segment* segments, int count, int64_t a_shift, int64_t b_shift,
                         int64_t panel_stride, int rows, int panels, float* c, int64_t ldc,
                         bool overwrite) {
    short_portable(rows, panels, c, ldc, overwrite, [&](int q, const auto& add) {
        for (int s = 0; s < count; ++s)
            for (int p = 0; p < segments[s].depth; ++p)
                add(segments[s].a + a_shift + p * kMr,
                    segments[s].b + b_shift + q * panel_stride + p * segments[s].ldb);
    });
}

void strided_segments_portable(const Segment* segments, int count, int64_t a_shift, int64_t lda,
                               int64_t astep, int64_t b_shift, int64_t panel_stride, int rows,
                               int panels, float* c, int64_t ldc, bool overwrite) {
    short_portable(rows, panels, c, ldc, overwrite, [&](int q, const auto& add) {
        float a[kMr];
        for (int s = 0; s < count; ++s)
            for (int p = 0; p < segments[s].depth; ++p) {
                for (int i = 0; i < rows; ++i)
                    a[i] = segments[s].a[a_shift + i * lda + int64_t(p) * astep];
                add(a, segments[s].b + b_shift + q * panel_stride + p * segments[s].ldb);
            }
    });
}

void short_indirect_portable(const float* a, const int64_t* offsets, int depth,
                             const float* const* b, int rows, int panels, float* c, int64_t ldc,
                             bool overwrite) {
    short_portable(rows, panels, c, ldc, overwrite, [&](int q, const auto& add) {
        for (int p = 0; p < depth; ++p) add(a + p * kMr, b[q] + offsets[p]);
    });
}

#ifdef CONVT_X86_DISPATCH
// 12 accumulators, 2 loads of b and 6 broadcasts of a per step: FMA-bound on AVX2 cores. Named
// accumulators, not an array: an array of them spilled to the stack (2x slower). The macros
// are shared by the segment and the indirect kernels.
#define CONVT_AVX2_LOAD(i) \
    __m256 c##i##0 = _mm256_loadu_ps(c + i * ldc), c##i##1 = _mm256_loadu_ps(c + i * ldc + 8);
#define CONVT_AVX2_START(i)                                                          \
    __m256 c##i##0 = overwrite ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc), \
           c##i##1 = overwrite ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc + 8);
#define CONVT_AVX2_ROW(i)                             \
    {                                                 \
        const __m256 av = _mm256_broadcast_ss(a + i); \
        c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);   \
        c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);   \
    }
// One step: the tile += a[0..kMr) x the 16 floats at bp.
#define CONVT_AVX2_STEP(bp)                                                  \
    {                                                                        \
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8); \
        CONVT_TILE_ROWS(CONVT_AVX2_ROW)                                      \
    }
#define CONVT_AVX2_STORE(i) \
    _mm256_storeu_ps(c + i * ldc, c##i##0), _mm256_storeu_ps(c + i * ldc + 8, c##i##1);

__attribute__((target("avx2,fma"))) void micro_avx2(const Segment* segments, int count,
                                                    int64_t a_shift, int64_t b_shift, float* c,
                                                    int64_t ldc, bool overwrite) {
    CONVT_TILE_ROWS(CONVT_AVX2_START)
    for (int s = 0; s < count; ++s) {
        const float* a = segments[s].a + a_shift;
        const float* b = segments[s].b + b_shift;
        const int64_t ldb = segments[s].ldb;
        for (int p = 0; p < segments[s].depth; ++p, a += kMr, b += ldb) CONVT_AVX2_STEP(b)
    }
    CONVT_TILE_ROWS(CONVT_AVX2_STORE)
}

// B's row of step p found through rows[p].
__attribute__((target("avx2,fma"))) void indirect_avx2(const float* a, const int64_t* rows,
                                                       int depth, const float* b, float* c,
                                                       int64_t ldc, bool overwrite) {
    CONVT_TILE_ROWS(CONVT_AVX2_START)
    for (int p = 0; p < depth; ++p, a += kMr) CONVT_AVX2_STEP(b + rows[p])
    CONVT_TILE_ROWS(CONVT_AVX2_STORE)
}
// A's rows in place: row i's value of step p at a_i + p * astep (k below).
#define CONVT_AVX2_ROW_AT(i) const float* a##i = a + std::min(i, rows - 1) * lda;
#define CONVT_AVX2_IN_PLACE(i)                           \
    {                                                    \
        const __m256 av = _mm256_broadcast_ss(a##i + k); \
        c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);      \
        c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);      \
    }
__attribute__((target("avx2,fma"))) void strided_a_avx2(const float* a, int64_t lda, int64_t astep,
                                                        int rows, int depth, const float* b,
                                                        float* c, int64_t ldc) {
    CONVT_TILE_ROWS(CONVT_AVX2_ROW_AT)
    CONVT_TILE_ROWS(CONVT_AVX2_LOAD)
    for (int64_t p = 0, k = 0; p < depth; ++p, k += astep, b += kNr) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        CONVT_TILE_ROWS(CONVT_AVX2_IN_PLACE)
    }
    CONVT_TILE_ROWS(CONVT_AVX2_STORE)
}
// R rows x P panels: 2RP accumulators (at most 12), each B vector loaded once a step and used by
// every row while the R broadcasts of a stay in registers (at most 16 ymm in all). The loops
// unroll completely, so the arrays live in registers. `row(q, p)` finds panel q's B row of step
// p (segments: a stride apart; indirect: through an offset).
template <int R, int P, typename Row>
__attribute__((target("avx2,fma"), always_inline)) inline void short_steps(
    const float* a, int depth, Row row, __m256 (&acc)[R][2 * P]) {
    for (int p = 0; p < depth; ++p, a += kMr) {
        __m256 av[R];
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) av[i] = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 12
        for (int h = 0; h < 2 * P; ++h) {
            const __m256 bv = _mm256_loadu_ps(row(h / 2, p) + (h % 2) * 8);
#pragma GCC unroll 8
            for (int i = 0; i < R; ++i) acc[i][h] = _mm256_fmadd_ps(av[i], bv, acc[i][h]);
        }
    }
}

template <int R, int P>
__attribute__((target("avx2,fma"), always_inline)) inline void short_start(
    const float* c, int64_t ldc, bool overwrite, __m256 (&acc)[R][2 * P]) {
    static_assert(R >= 1 && R < kMr && 2 * R * P <= 12, "within the full tile's accumulators");
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 12
        for (int h = 0; h < 2 * P; ++h)
            acc[i][h] = overwrite ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc + h * 8);
}

template <int R, int P>
__attribute__((target("avx2,fma"), always_inline)) inline void short_store(
    float* c, int64_t ldc, const __m256 (&acc)[R][2 * P]) {
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 12
        for (int h = 0; h < 2 * P; ++h) _mm256_storeu_ps(c + i * ldc + h * 8, acc[i][h]);
}

template <int R, int P>
__attribute__((target("avx2,fma"))) void short_tile_avx2_rp(const Segment* segments, int count,
                                                            int64_t a_shift, int64_t b_shift,
                                                            int64_t panel_stride, float* c,
                                                            int64_t ldc, bool overwrite) {
    __m256 acc[R][2 * P];
    short_start<R, P>(c, ldc, overwrite, acc);
    for (int s = 0; s < count; ++s) {
        const float* b = segments[s].b + b_shift;
        const int64_t ldb = segments[s].ldb;
        short_steps<R, P>(
            segments[s].a + a_shift, segments[s].depth,
            [&](int q, int p) { return b + q * panel_stride + p * ldb; }, acc);
    }
    short_store<R, P>(c, ldc, acc);
}

template <int R, int P>
__attribute__((target("avx2,fma"))) void short_indirect_avx2_rp(const float* a,
                                                                const int64_t* offsets, int depth,
                                                                const float* const* b, float* c,
                                                                int64_t ldc, bool overwrite) {
    __m256 acc[R][2 * P];
    short_start<R, P>(c, ldc, overwrite, acc);
    const float* base[P];
#pragma GCC unroll 6
    for (int q = 0; q < P; ++q) base[q] = b[q];
    short_steps<R, P>(a, depth, [&](int q, int p) { return base[q] + offsets[p]; }, acc);
    short_store<R, P>(c, ldc, acc);
}

// R rows of A in place (lda apart, astep a step) x P panels. The R broadcasts stay in registers
// while each B vector is loaded once a step when R <= 2P, else the 2P B vectors while each
// broadcast is used at once: either way at most 12 accumulators and 16 registers.
template <int R, int P>
__attribute__((target("avx2,fma"))) void strided_segments_avx2_rp(
    const Segment* segments, int count, int64_t a_shift, int64_t lda, int64_t astep,
    int64_t b_shift, int64_t panel_stride, float* c, int64_t ldc, bool overwrite) {
    static_assert(R >= 1 && R <= kMr && 2 * R * P <= 12, "within the full tile's accumulators");
    __m256 acc[R][2 * P];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 12
        for (int h = 0; h < 2 * P; ++h)
            acc[i][h] = overwrite ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc + h * 8);
    for (int s = 0; s < count; ++s) {
        const float* row[R];
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) row[i] = segments[s].a + a_shift + i * lda;
        const float* b = segments[s].b + b_shift;
        const int64_t ldb = segments[s].ldb;
        const int depth = segments[s].depth;
        for (int64_t p = 0, k = 0; p < depth; ++p, k += astep, b += ldb) {
            if constexpr (R <= 2 * P) {
                __m256 av[R];
#pragma GCC unroll 8
                for (int i = 0; i < R; ++i) av[i] = _mm256_broadcast_ss(row[i] + k);
#pragma GCC unroll 12
                for (int h = 0; h < 2 * P; ++h) {
                    const __m256 bv = _mm256_loadu_ps(b + (h / 2) * panel_stride + (h % 2) * 8);
#pragma GCC unroll 8
                    for (int i = 0; i < R; ++i) acc[i][h] = _mm256_fmadd_ps(av[i], bv, acc[i][h]);
                }
            } else {
                __m256 bv[2 * P];
#pragma GCC unroll 12
                for (int h = 0; h < 2 * P; ++h)
                    bv[h] = _mm256_loadu_ps(b + (h / 2) * panel_stride + (h % 2) * 8);
#pragma GCC unroll 8
                for (int i = 0; i < R; ++i) {
                    const __m256 av = _mm256_broadcast_ss(row[i] + k);
#pragma GCC unroll 12
                    for (int h = 0; h < 2 * P; ++h)
                        acc[i][h] = _mm256_fmadd_ps(av, bv[h], acc[i][h]);
                }
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 12
        for (int h = 0; h < 2 * P; ++h) _mm256_storeu_ps(c + i * ldc + h * 8, acc[i][h]);
}

// Every (R, P) instance of a kernel template, [R - 1][P - 1].
// clang-format off
#define CONVT_SHORT_TABLE(f)                                      \
    {{&f<1, 1>, &f<1, 2>, &f<1, 3>, &f<1, 4>, &f<1, 5>, &f<1, 6>}, \
     {&f<2, 1>, &f<2, 2>, &f<2, 3>},                               \
     {&f<3, 1>, &f<3, 2>},                                         \
     {&f<4, 1>},                                                   \
     {&f<5, 1>}}
// clang-format on

// Wider requests than a row count takes go a few panels at a time.
__attribute__((target("avx2,fma"))) void short_tile_avx2(const Segment* segments, int count,
                                                         int64_t a_shift, int64_t b_shift,
                                                         int64_t panel_stride, int rows, int panels,
                                                         float* c, int64_t ldc, bool overwrite) {
    using Fn = void (*)(const Segment*, int, int64_t, int64_t, int64_t, float*, int64_t, bool);
    static constexpr Fn table[5][6] = CONVT_SHORT_TABLE(short_tile_avx2_rp);
    const int step = short_tile_panels(rows);
    for (int q = 0; q < panels; q += step)
        table[rows - 1][std::min(step, panels - q) - 1](segments, count, a_shift,
                                                        b_shift + q * panel_stride, panel_stride,
                                                        c + q * kNr, ldc, overwrite);
}

__attribute__((target("avx2,fma"))) void short_indirect_avx2(const float* a, const int64_t* offsets,
                                                             int depth, const float* const* b,
                                                             int rows, int panels, float* c,
                                                             int64_t ldc, bool overwrite) {
    using Fn =
        void (*)(const float*, const int64_t*, int, const float* const*, float*, int64_t, bool);
    static constexpr Fn table[5][6] = CONVT_SHORT_TABLE(short_indirect_avx2_rp);
    const int step = short_tile_panels(rows);
    for (int q = 0; q < panels; q += step)
        table[rows - 1][std::min(step, panels - q) - 1](a, offsets, depth, b + q, c + q * kNr, ldc,
                                                        overwrite);
}
// A whole tile a panel at a time; short ones a few panels at once, as the short-tile kernel.
__attribute__((target("avx2,fma"))) void strided_segments_avx2(const Segment* segments, int count,
                                                               int64_t a_shift, int64_t lda,
                                                               int64_t astep, int64_t b_shift,
                                                               int64_t panel_stride, int rows,
                                                               int panels, float* c, int64_t ldc,
                                                               bool overwrite) {
    using Fn = void (*)(const Segment*, int, int64_t, int64_t, int64_t, int64_t, int64_t, float*,
                        int64_t, bool);
    static constexpr Fn shorts[5][6] = CONVT_SHORT_TABLE(strided_segments_avx2_rp);
    const int step = rows == kMr ? 1 : short_tile_panels(rows);
    for (int q = 0; q < panels; q += step) {
        const Fn f = rows == kMr ? &strided_segments_avx2_rp<kMr, 1>
                                 : shorts[rows - 1][std::min(step, panels - q) - 1];
        f(segments, count, a_shift, lda, astep, b_shift + q * panel_stride, panel_stride,
          c + q * kNr, ldc, overwrite);
    }
}
#undef CONVT_SHORT_TABLE

#undef CONVT_AVX2_ROW_AT
#undef CONVT_AVX2_IN_PLACE
#undef CONVT_AVX2_LOAD
#undef CONVT_AVX2_START
#undef CONVT_AVX2_ROW
#undef CONVT_AVX2_STEP
#undef CONVT_AVX2_STORE
#endif

#ifdef CONVT_NEON
// 24 accumulators of 4 floats (6 rows x 16 columns), 4 loads of b and one of a's 6 values (as
// two vectors) per step, each multiply-add by a lane of a: 30 of the 32 vector registers. Named,
// not an array: GCC stored an array of them to the stack on every step.
#define CONVT_NEON_LOAD(i)                                                              \
    float32x4_t c##i##0 = vld1q_f32(c + i * ldc), c##i##1 = vld1q_f32(c + i * ldc + 4); \
    float32x4_t c##i##2 = vld1q_f32(c + i * ldc + 8), c##i##3 = vld1q_f32(c + i * ldc + 12);
#define CONVT_NEON_START(i)                                                          \
    float32x4_t c##i##0 = overwrite ? vdupq_n_f32(0.f) : vld1q_f32(c + i * ldc);     \
    float32x4_t c##i##1 = overwrite ? vdupq_n_f32(0.f) : vld1q_f32(c + i * ldc + 4); \
    float32x4_t c##i##2 = overwrite ? vdupq_n_f32(0.f) : vld1q_f32(c + i * ldc + 8); \
    float32x4_t c##i##3 = overwrite ? vdupq_n_f32(0.f) : vld1q_f32(c + i * ldc + 12);
// Row i of the tile += lane `lane` of v times the 16 floats of b (fma: the lane form for v's
// width).
#define CONVT_NEON_ROW(fma, i, v, lane)  \
    c##i##0 = fma(c##i##0, b0, v, lane); \
    c##i##1 = fma(c##i##1, b1, v, lane); \
    c##i##2 = fma(c##i##2, b2, v, lane); \
    c##i##3 = fma(c##i##3, b3, v, lane);
// One step: the tile += a[0..kMr) x the 16 floats at bp.
#define CONVT_NEON_STEP(bp)                                                \
    {                                                                      \
        const float32x4_t b0 = vld1q_f32(bp), b1 = vld1q_f32(bp + 4);      \
        const float32x4_t b2 = vld1q_f32(bp + 8), b3 = vld1q_f32(bp + 12); \
        const float32x4_t a03 = vld1q_f32(a);    /* rows 0-3 */            \
        const float32x2_t a45 = vld1_f32(a + 4); /* rows 4-5 */            \
        CONVT_NEON_ROW(vfmaq_laneq_f32, 0, a03, 0)                         \
        CONVT_NEON_ROW(vfmaq_laneq_f32, 1, a03, 1)                         \
        CONVT_NEON_ROW(vfmaq_laneq_f32, 2, a03, 2)                         \
        CONVT_NEON_ROW(vfmaq_laneq_f32, 3, a03, 3)                         \
        CONVT_NEON_ROW(vfmaq_lane_f32, 4, a45, 0)                          \
        CONVT_NEON_ROW(vfmaq_lane_f32, 5, a45, 1)                          \
    }
#define CONVT_NEON_STORE(i)                                               \
    vst1q_f32(c + i * ldc, c##i##0), vst1q_f32(c + i * ldc + 4, c##i##1); \
    vst1q_f32(c + i * ldc + 8, c##i##2), vst1q_f32(c + i * ldc + 12, c##i##3);

void micro_neon(const Segment* segments, int count, int64_t a_shift, int64_t b_shift, float* c,
                int64_t ldc, bool overwrite) {
    CONVT_TILE_ROWS(CONVT_NEON_START)
    for (int s = 0; s < count; ++s) {
        const float* a = segments[s].a + a_shift;
        const float* b = segments[s].b + b_shift;
        const int64_t ldb = segments[s].ldb;
        for (int p = 0; p < segments[s].depth; ++p, a += kMr, b += ldb) CONVT_NEON_STEP(b)
    }
    CONVT_TILE_ROWS(CONVT_NEON_STORE)
}

// B's row of step p found through rows[p].
void indirect_neon(const float* a, const int64_t* rows, int depth, const float* b, float* c,
                   int64_t ldc, bool overwrite) {
    CONVT_TILE_ROWS(CONVT_NEON_START)
    for (int p = 0; p < depth; ++p, a += kMr) CONVT_NEON_STEP(b + rows[p])
    CONVT_TILE_ROWS(CONVT_NEON_STORE)
}
// A's rows in place: each row's value of step p broadcast (k = p * astep), multiplied by lane 0.
#define CONVT_NEON_ROW_AT(i) const float* a##i = a + std::min(i, rows - 1) * lda;
#define CONVT_NEON_IN_PLACE(i)                          \
    {                                                   \
        const float32x4_t av = vld1q_dup_f32(a##i + k); \
        CONVT_NEON_ROW(vfmaq_laneq_f32, i, av, 0)       \
    }
void strided_a_neon(const float* a, int64_t lda, int64_t astep, int rows, int depth, const float* b,
                    float* c, int64_t ldc) {
    CONVT_TILE_ROWS(CONVT_NEON_ROW_AT)
    CONVT_TILE_ROWS(CONVT_NEON_LOAD)
    for (int64_t p = 0, k = 0; p < depth; ++p, k += astep, b += kNr) {
        const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4);
        const float32x4_t b2 = vld1q_f32(b + 8), b3 = vld1q_f32(b + 12);
        CONVT_TILE_ROWS(CONVT_NEON_IN_PLACE)
    }
    CONVT_TILE_ROWS(CONVT_NEON_STORE)
}
#undef CONVT_NEON_ROW_AT
#undef CONVT_NEON_IN_PLACE
#undef CONVT_NEON_LOAD
#undef CONVT_NEON_START
#undef CONVT_NEON_ROW
#undef CONVT_NEON_STEP
#undef CONVT_NEON_STORE
#endif

#undef CONVT_TILE_ROWS

}  // namespace

bool use_neon() {
#ifdef CONVT_NEON
    static const bool chosen = [] {
        const char* isa = std::getenv("CONVT_CPU_ISA");
        return !(isa && std::strcmp(isa, "portable") == 0);
    }();
    return chosen;
#else
    return false;
#endif
}

bool use_avx2() {
#ifdef CONVT_X86_DISPATCH
    static const bool chosen = [] {
        const char* isa = std::getenv("CONVT_CPU_ISA");
        if (isa && std::strcmp(isa, "portable") == 0) return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return chosen;
#else
    return false;
#endif
}

namespace {
// The kernel of each kind this CPU runs: AVX2, then NEON where built and chosen, else portable.
#ifdef CONVT_X86_DISPATCH
#define CONVT_IF_AVX2(f) &f
#else
#define CONVT_IF_AVX2(f) nullptr
#endif
#ifdef CONVT_NEON
#define CONVT_IF_NEON(f) &f
#else
#define CONVT_IF_NEON(f) nullptr
#endif
template <typename Kernel>
Kernel pick(Kernel avx2, Kernel neon, Kernel portable) {
    if (avx2 && use_avx2()) return avx2;
    if (neon && use_neon()) return neon;
    return portable;
}
}  // namespace

MicroKernel micro_kernel() {
    return pick<MicroKernel>(CONVT_IF_AVX2(micro_avx2), CONVT_IF_NEON(micro_neon), &micro_portable);
}
MicroKernel portable_micro_kernel() { return &micro_portable; }

IndirectKernel indirect_kernel() {
    return pick<IndirectKernel>(CONVT_IF_AVX2(indirect_avx2), CONVT_IF_NEON(indirect_neon),
                                &indirect_portable);
}
IndirectKernel portable_indirect_kernel() { return &indirect_portable; }

StridedAKernel strided_a_kernel() {
    return pick<StridedAKernel>(CONVT_IF_AVX2(strided_a_avx2), CONVT_IF_NEON(strided_a_neon),
                                &strided_a_portable);
}
StridedAKernel portable_strided_a_kernel() { return &strided_a_portable; }

ShortTileKernel short_tile_kernel() {
    return pick<ShortTileKernel>(CONVT_IF_AVX2(short_tile_avx2), nullptr, nullptr);
}
ShortTileKernel portable_short_tile_kernel() { return &short_tile_portable; }

ShortIndirectKernel short_indirect_kernel() {
    return pick<ShortIndirectKernel>(CONVT_IF_AVX2(short_indirect_avx2), nullptr, nullptr);
}
ShortIndirectKernel portable_short_indirect_kernel() { return &short_indirect_portable; }

StridedSegmentKernel strided_segment_kernel() {
    return pick<StridedSegmentKernel>(CONVT_IF_AVX2(strided_segments_avx2), nullptr,
                                      &strided_segments_portable);
}
StridedSegmentKernel portable_strided_segment_kernel() { return &strided_segments_portable; }
#undef CONVT_IF_AVX2
#undef CONVT_IF_NEON

}  // namespace convt::cpu

namespace convt {
std::string cpu_kernel_isa() {
    return cpu::use_avx2() ? "avx2" : cpu::use_neon() ? "neon" : "portable";
}
}  // namespace convt
