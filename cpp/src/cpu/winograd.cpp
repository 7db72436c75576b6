#include "winograd.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "elements.h"
#include "finite_rows.h"
#include "geometry.h"
#include "half_rows.h"
#include "micro_kernel.h"
#include "neuron.h"
#include "row_shuffles.h"
#include "thread_pool.h"
#include "transpose.h"

namespace convt::cpu {
namespace {

// Below this many channels either way the transforms cost about what the GEMMs save (one
// thread, N = 8, 64 x 64 images, 3x3: forward and dX gain 16% at 16 channels, 26-34% at 24-64;
// dW breaks even at 32-48 channels, loses 11-18% with dilation 2, gains 10-23% at 64-128).
constexpr int kMinChannels = 16;
// 3x3 (and 1-D 3-tap) layers by 4x4 tiles pay from 2 channels each way, where the GEMM paths'
// shapes degenerate (in-process A/B against them, N = 8, two threads: 64 x 64 outputs, dX 4 -> 4
// channels 4.3x faster, 2 -> 2 3.2x, 8 -> 8 1.1x; forward 8 -> 8 1.5x, 4 -> 8 1.9x; one kernel
// row, L = 4096: 2 -> 6 channels 5x both ways), on at least kMinNarrowTiles output tiles (16 x
// 16 outputs, 128 tiles: 1.05-1.3x slower; 32 x 32, 512 tiles: 1.0-1.27x faster). Layers of
// at most 4 output channels keep the forward's scatter form, tried first.
constexpr int kMinNarrowChannels = 2;
constexpr int64_t kMinNarrowTiles = 256;
constexpr int kMinWeightGradientChannels = 64;
// 2x2 phases (k = 2s at stride s) save less: 9 multiply-adds for 16, not 16 for 36. One
// thread, N = 8, k4 s2: their forward runs at the phase GEMM's speed up to 256 x 128 channels
// and gains 18% at 512 x 256 (dcgan_g2), so it needs in x out channels of at least
// kMinPhaseForwardProduct; their dX gains 13-33% from 64 x 64 to 256 x 128 channels and 11% at
// 512 x 256 (dcgan_g2, 19 MB of packed weights: in blocks of at least kMinColumns tiles; it lost
// 7% in blocks of 16), loses 30% at 16 x 16 a group (grp4_k4s2): it needs kMinPhaseChannels each
// way and packed weights within kMaxPhaseBackwardFloats. Their dW took 24-77% longer everywhere
// (64 to 512 channels): not used.
constexpr int64_t kMinPhaseForwardProduct = 256 * 256;
// One kernel row (1-D layers), F(2, r) along it: 3 taps at stride 1 gain 40-70% forward and dX
// (16 and 64 channels, one thread). 2-tap phases save only 3 multiply-adds of 4: the forward of
// 512 x 256 channels at stride 8 (hifigan) gains 12% on one thread and 9% on two, 256 x 256
// channels none (stride 2 and 8), so it needs in x out channels of at least
// kMinRowPhaseForwardProduct; their dX gained at 128 x 128 channels, nothing at 256 x 256 and
// lost 20% at 64 x 64 (stride 8): not used.
constexpr int64_t kMinRowPhaseForwardProduct = 512 * 256;
constexpr int kMinPhaseChannels = 64;
constexpr int64_t kMaxPhaseBackwardFloats = 8 * 1024 * 1024;
// A block's transformed inputs (points x depth x columns floats) stay within this many floats,
// L2-resident while every register tile of outputs runs over them.
constexpr int64_t kBlockFloats = 96 * 1024;
constexpr int kMaxColumns = 256;
// The point products of a chunk of output tiles (points x kMr x columns floats each) stay within
// this many floats.
constexpr int64_t kChunkFloats = 48 * 1024;
// Correlations whose packed weights pass kDeepWeightFloats keep at least kMinColumns a block
// (their transformed inputs then pass the L2): a block streams all its packed weights once, and
// at 16 columns dcgan_g2's dX (4.7M floats of them) ran no faster than the direct GEMM; at 64,
// 11% faster than it. (Its forward, 1.2M floats a phase, lost 18% at 64.) Their dX needs
// kMinDeepTiles tiles or more. Their products run tile by tile, each over every panel, so that a
// tile's weights (24 KB a point on dcgan_g2) stay in L1: dcgan_g2 dX 0.93-0.96x against panel by
// panel, which suits the shallow ones (s1_same dX 1.06x, dil2 1.03x the other way).
constexpr int64_t kDeepWeightFloats = 2 * 1024 * 1024;
constexpr int kMinColumns = 64;
constexpr int64_t kMinDeepTiles = 2 * kMinColumns;
// The input transform runs whole vectors of this many tiles, storing up to kSpill - 1 columns
// past a run; its channels' rows are this far apart at least.
constexpr int kSpill = 8;
// Floats a cache line.
constexpr int kLineFloats = 16;
// The input transform prefetches the patch rows of the channel this many ahead.
constexpr int kPrefetchChannels = 3;
// NHWC input transforms gather this many channels at a time (one 8 x 8 transpose a row block).
constexpr int kGather = 8;
// dW: tiles split into at most kRanges ranges of at least kTilesPerRange, their partial sums
// of the points ((r + 1)^2 / r^2 of the weights each) kept under kMaxPartialFloats in all.
constexpr int64_t kTilesPerRange = 256;
constexpr int64_t kRanges = 8;
constexpr int64_t kMaxPartialFloats = 4 * 1024 * 1024;

// Points of F(m x m, r x r) (ty = 2: tiles of m x m outputs), or of F(m, r) (ty = 1: one-row
// tiles, for 1-D layers): m + r - 1 a side.
constexpr int points_of(int r, int ty = 2, int m = 2) {
    return (ty == 2 ? r + m - 1 : 1) * (r + m - 1);
}

// G of F(2, r): the kernel's r taps to its r + 1 points (0, 1, -1 and infinity for r = 3).
const double kG3[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
const double kG2[3][2] = {{1, 0}, {1, 1}, {0, 1}};
// G of F(4, 3), points 0, -1, 1, 1/2, -2 and infinity: of the sets of small points tried in a
// NumPy float32 model (64-channel tiles), among the smallest errors (2.2e-6 of the largest
// output, against 4.9e-6 for 0, +-1, +-2; 0, +-3/2, +-2/3 read 1.6e-6 but are not exact in
// float32). B^T and A^T below are of the same points.
const double kG43[6][3] = {{1, 0, 0},
                           {-1.0 / 3, 1.0 / 3, -1.0 / 3},
                           {1.0 / 3, 1.0 / 3, 1.0 / 3},
                           {-16.0 / 15, -8.0 / 15, -4.0 / 15},
                           {1.0 / 15, -2.0 / 15, 4.0 / 15},
                           {0, 0, 1}};

// G g G^T of one r x r kernel g[a * r + b] (a the row) for F(m x m, r x r): u[alpha * alpha],
// alpha = r + m - 1; for one kernel row (ty = 1), G g: u[alpha]. With `magnitudes`, |G| in
// place of G: a point is then zero only where every tap it weighs is.
void kernel_points(int r, int ty, int m, const double* g, double* u, bool magnitudes = false) {
    const int alpha = r + m - 1;
    auto G = [&](int i, int j) {
        const double v = m == 4 ? kG43[i][j] : r == 3 ? kG3[i][j] : kG2[i][j];
        return magnitudes ? std::abs(v) : v;
    };
    if (ty == 1) {
        for (int i = 0; i < alpha; ++i) {
            u[i] = 0;
            for (int b = 0; b < r; ++b) u[i] += G(i, b) * g[b];
        }
        return;
    }
    double t[6][3] = {};  // G g
    for (int i = 0; i < alpha; ++i)
        for (int b = 0; b < r; ++b)
            for (int a = 0; a < r; ++a) t[i][b] += G(i, a) * g[a * r + b];
    for (int i = 0; i < alpha; ++i)
        for (int j = 0; j < alpha; ++j) {
            double v = 0;
            for (int b = 0; b < r; ++b) v += t[i][b] * G(j, b);
            u[i * alpha + j] = v;
        }
}

// out[n][o][Y][X] = sum over the sources q, their channels i and a, b < r of K[o][q, i][a][b] *
// in_q[n][i][Y + y0_q + dy * a][X + x0_q + dx * b] (zero outside in_q's ih x iw), for Y < oh and
// X < ow, in each group; then, for the forward, the bias and the neuron. Outputs come in m x m
// tiles at rows Y + dy i and columns X + dx j (i, j < m): tile row R has Y = (R % nby) * m dy +
// R / nby, columns alike, so a run of tile columns within one residue mod dx reads its patches
// at a fixed step. The forward and dX at stride 1 have one source; dX at stride s reads dY's s x s
// phase planes, one source each, a tap class of the kernel each.
struct Source {
    int64_t base;  // element (0, 0, 0, 0) of Correlation::in
    int64_t step_h, step_w, ih, iw, y0, x0;
};

struct Correlation {
    std::vector<Source> sources;
    const void* in = nullptr;  // the sources' tensor, of element type in_type (CONVT_TYPE_*)
    int32_t in_type = CONVT_TYPE_F32;
    int64_t in_n = 0, in_c = 0, in_group = 0;  // shared by the sources
    void* out = nullptr;  // element out_base is output (0, 0, 0, 0); of element type out_type
    int32_t out_type = CONVT_TYPE_F32;
    int64_t out_base = 0;
    int64_t out_n = 0, out_c = 0, out_h = 0, out_w = 0, oh = 0, ow = 0, out_group = 0;
    int64_t dy = 1, dx = 1;
    int64_t images = 0;
    int r = 3;         // kernel taps per axis: F(m x m, r x r), or F(m, r) along rows
    int ty = 2;        // 2: tiles of m x m outputs; 1: one-row tiles (1-D layers: one kernel row)
    int m = 2;         // outputs a tile along a row: 2, or 4 (F(4x4, 3x3))
    int groups = 1;    // the channels below are per group
    int channels = 0;  // per source
    int depth = 0;     // sources x channels: the GEMMs' depth
    int outs = 0, tiles = 0;
    const float* u = nullptr;  // [g][point][out tile][depth][kMr]
    // dX of odd kernels: each point's sources (point_sources[pt]) and where its weights start
    // in a group's (point_offset[pt]; point_offset[points]: a group's); null: every source.
    const std::vector<std::vector<int>>* point_sources = nullptr;
    const int64_t* point_offset = nullptr;
    const float* bias = nullptr;    // [groups * outs], forward only
    const float* slopes = nullptr;  // PReLU
    NeuronType neuron = NeuronType::None;
    float na = 0.f, nb = 0.f, nc = 0.f;
    int rows() const { return ty == 2 ? m : 1; }  // output rows a tile
};

// The first cache-line boundary at or after p (p's buffer has kLineFloats - 1 floats to spare).
inline float* line_aligned(float* p) {
    const uintptr_t at = reinterpret_cast<uintptr_t>(p);
    const uintptr_t line = kLineFloats * sizeof(float);
    return reinterpret_cast<float*>((at + line - 1) / line * line);
}

// A run of tiles in one tile row and one column residue, at columns [col, col + len) of a block;
// the first in[h] of them have their output column h (of m) inside the box.
struct TileRun {
    int64_t n, y, x;  // image, and the top-left output of the first tile
    int len, col;
    int in[4];
};

// The transforms run in loops over a run of tiles that the compiler vectorizes; everything from
// here to the TileGrid is built twice on x86, for AVX2 (picked by use_avx2()) and the baseline.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CONVT_WINOGRAD_AVX2 1
#endif
#define CONVT_INLINE inline __attribute__((always_inline))
// The loops' arrays never overlap (GCC drops __restrict on inlining).
#if defined(__clang__)
#define CONVT_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#else
#define CONVT_IVDEP _Pragma("GCC ivdep")
#endif
// The fixed loops inside a vectorized one unrolled whole: past GCC's own limits (F(4x4, 3x3)'s 36
// points) they stayed loops, and the loop around them was left scalar.
#if defined(__clang__)
#define CONVT_UNROLL _Pragma("unroll")
#else
#define CONVT_UNROLL _Pragma("GCC unroll 64")
#endif

// B^T of F(M, R) on one patch row d[0..R + M - 2]: h[0..R + M - 2].
template <int R, int M>
CONVT_INLINE void bt(const float* d, float* h) {
    if constexpr (M == 4) {
        h[0] = d[0] - 1.5f * d[1] - 2.f * d[2] + 1.5f * d[3] + d[4];
        h[1] = d[1] - 2.5f * d[2] + 0.5f * d[3] + d[4];
        h[2] = -d[1] + 0.5f * d[2] + 2.5f * d[3] + d[4];
        h[3] = -2.f * d[1] - d[2] + 2.f * d[3] + d[4];
        h[4] = 0.5f * d[1] - d[2] - 0.5f * d[3] + d[4];
        h[5] = d[1] - 1.5f * d[2] - 2.f * d[3] + 1.5f * d[4] + d[5];
    } else if constexpr (R == 3) {
        h[0] = d[0] - d[2];
        h[1] = d[1] + d[2];
        h[2] = d[2] - d[1];
        h[3] = d[1] - d[3];
    } else {
        h[0] = d[0] - d[1];
        h[1] = d[1];
        h[2] = d[2] - d[1];
    }
}

// stage_row's M = 2: e[k] = column x + dx (2k), o[k] = x + dx (2k + 1).
CONVT_INLINE void stage_pair(const float* __restrict r, int64_t step, int64_t lo, int64_t n,
                             float* __restrict e, float* __restrict o) {
    // The first element lands in e when lo is even, else in o.
    float* __restrict first = lo % 2 == 0 ? e + lo / 2 : o + lo / 2;
    float* __restrict second = lo % 2 == 0 ? o + lo / 2 : e + lo / 2 + 1;
    const int64_t n0 = (n + 1) / 2, n1 = n / 2;
    if (step == 1) {
        CONVT_IVDEP
        for (int64_t k = 0; k < n1; ++k) {
            first[k] = r[2 * k];
            second[k] = r[2 * k + 1];
        }
    } else if (step == 2) {
        CONVT_IVDEP
        for (int64_t k = 0; k < n1; ++k) {
            first[k] = r[4 * k];
            second[k] = r[4 * k + 2];
        }
    } else {
        for (int64_t k = 0; k < n1; ++k) {
            first[k] = r[2 * k * step];
            second[k] = r[(2 * k + 1) * step];
        }
    }
    if (n0 > n1) first[n1] = r[2 * n1 * step];
}

// Staged patch rows, M arrays each (`part` apart from s): s_h[k] = the row's column
// x + dx (M k + h) (zeros outside the row), so that tile k's patch row is s_0[k], s_1[k], ...,
// s_0[k + 1], ... (its first R + M - 1): contiguous loads for every tile, whatever dx and the
// row's step. Staged at element `lo` of the interleaved order, `n` elements `step` apart from r.
template <int M>
CONVT_INLINE void stage_row(const float* __restrict r, int64_t step, int64_t lo, int64_t n,
                            float* __restrict s, int64_t part) {
    if constexpr (M == 2) {
        stage_pair(r, step, lo, n, s, s + part);
    } else {
        uint64_t t = 0;  // unsigned: lo and n are not negative
        const uint64_t first = uint64_t(lo), count = uint64_t(n);
        for (; t < count && (first + t) % M != 0; ++t)
            s[(first + t) % M * part + (first + t) / M] = r[int64_t(t) * step];
        const int64_t b0 = int64_t((first + t) / M), blocks = int64_t((count - t) / M);
        const float* __restrict rb = r + int64_t(t) * step;
        float* __restrict s0 = s + b0;
        if (step == 1) {
            CONVT_IVDEP
            for (int64_t b = 0; b < blocks; ++b) {
                CONVT_UNROLL
                for (int h = 0; h < M; ++h) s0[h * part + b] = rb[M * b + h];
            }
        } else if (step == 2) {  // dilation 2, and dY's phase planes at stride 2
            CONVT_IVDEP
            for (int64_t b = 0; b < blocks; ++b) {
                CONVT_UNROLL
                for (int h = 0; h < M; ++h) s0[h * part + b] = rb[2 * (M * b + h)];
            }
        } else {
            for (int64_t b = 0; b < blocks; ++b) {
                CONVT_UNROLL
                for (int h = 0; h < M; ++h) s0[h * part + b] = rb[(M * b + h) * step];
            }
        }
        for (t += uint64_t(blocks) * M; t < count; ++t)
            s[(first + t) % M * part + (first + t) / M] = r[int64_t(t) * step];
    }
}

// The points of tile k's patch, residue h of its row j staged at e[j * M + h]: B^T d B,
// out[a * A + b] (A = R + M - 1), for M x M tiles (TY = 2); B^T d, out[b], for one-row tiles.
template <int R, int TY, int M>
CONVT_INLINE void patch_points(const float* const* e, int k, float* out) {
    constexpr int A = R + M - 1, AY = TY == 2 ? A : 1;
    float rows[AY][A];  // B^T along patch row j
    CONVT_UNROLL
    for (int j = 0; j < AY; ++j) {
        float d[A];
        CONVT_UNROLL
        for (int i = 0; i < A; ++i) d[i] = e[j * M + i % M][k + i / M];
        bt<R, M>(d, rows[j]);
    }
    if constexpr (TY == 1) {
        CONVT_UNROLL
        for (int b = 0; b < A; ++b) out[b] = rows[0][b];
    } else {
        CONVT_UNROLL
        for (int b = 0; b < A; ++b) {
            float col[A], t[A];
            CONVT_UNROLL
            for (int j = 0; j < A; ++j) col[j] = rows[j][b];
            bt<R, M>(col, t);
            CONVT_UNROLL
            for (int a = 0; a < A; ++a) out[a * A + b] = t[a];
        }
    }
}

// B^T d B (B^T d for one-row tiles) of the run's patches, source by source and channel by channel,
// into v[point][q * channels + channel][col + k] (`pitch` apart per channel, `plane_step` per
// point). The patch rows are
// staged first (stage_row), so that the transform runs whole vectors over lenv >= len tiles (a
// multiple of 8): it stores up to kSpill - 1 columns past the run, into the next run's columns
// (transformed later) or past the block's (the pitch leaves room). A channel's rows are staged
// while the one before is transformed, so that the transform's loads find the staging stores in
// the cache (loaded right after them, they waited out failed store-to-load forwards).
template <int R, int TY, int M>
CONVT_INLINE void transform_inputs_body(const Correlation& c, int g, const TileRun& s, int pitch,
                                        int64_t plane_step, float* v) {
    constexpr int A = R + M - 1, AY = TY == 2 ? A : 1, P = AY * A, W = kSpill;
    thread_local std::vector<float> stage, runs, converted, pixels;
    const int len = s.len, lenv = (len + W - 1) / W * W;
    const int64_t count = M * int64_t(lenv) + R - 1;  // staged elements a row
    const int64_t part = lenv + (R + M - 2) / M;      // each residue's array
    const int64_t row_floats_staged = M * part;
    stage.resize(size_t(2 * AY) * row_floats_staged);  // [slot][j][residue][part]
    for (size_t q = 0; q < c.sources.size(); ++q) {
        const Source& src = c.sources[q];
        // The same for every channel: which patch rows lie inside, and which staged elements.
        int64_t row_at[AY];  // element offset of patch row j (strides may be negative)
        bool inside[AY];
        for (int j = 0; j < AY; ++j) {
            const int64_t y = s.y + src.y0 + c.dy * j;
            inside[j] = y >= 0 && y < src.ih;
            row_at[j] = y * src.step_h;
        }
        const int64_t x = s.x + src.x0;
        const int64_t lo = std::clamp<int64_t>(ceil_div(-x, c.dx), 0, count);
        const int64_t hi = std::clamp<int64_t>(ceil_div(src.iw - x, c.dx), lo, count);
        const bool any = lo < hi;
        for (int slot = 0; slot < 2; ++slot)
            for (int j = 0; j < AY; ++j) {
                float* e = stage.data() + (slot * AY + j) * row_floats_staged;
                if (!inside[j] || !any) {
                    std::fill(e, e + row_floats_staged, 0.f);
                    continue;
                }
                // Elements i = h + M k in [lo, hi) are residue h's k in [ceil((lo - h) / M),
                // ceil((hi - h) / M)).
                for (int h = 0; h < M; ++h) {
                    float* sh = e + h * part;
                    std::fill(sh, sh + (lo - h + M - 1) / M, 0.f);
                    std::fill(sh + (hi - h + M - 1) / M, sh + part, 0.f);
                }
            }
        const int64_t first = (x + c.dx * lo) * src.step_w, step = c.dx * src.step_w;
        // Channels contiguous (NHWC): a strided load an element, channel by channel, touched each
        // pixel's line once a channel (39% of dcgan_g2's NHWC forward). Instead, eight channels'
        // patch rows at a time are gathered by 8 x 8 transposes into runs ([channel][j][n]),
        // then staged from there as contiguous rows.
        const int64_t n = hi - lo, run_step = int64_t(AY) * n;
        // Float sources are staged in place; others (fp16) a row at a time converted first, or,
        // channels contiguous, each patch row's pixels converted once for every channel
        // ([j][pixel][channel]) and gathered from there (a strided conversion a channel was
        // 1.05-1.12x slower: fp16 NHWC s1_same, dil2, dcgan_g2, vae_dec dX).
        const bool floats = c.in_type == CONVT_TYPE_F32;
        const float* in_f = static_cast<const float*>(c.in);
        const bool by_pixel = c.in_c == 1 && step != 1 && any;
        if (!floats && !by_pixel) converted.resize(size_t(std::max<int64_t>(2 * n, 1)));
        if (by_pixel) runs.resize(size_t(kGather * run_step));
        const int64_t row_floats = n * c.channels;
        if (by_pixel && !floats) {
            pixels.resize(size_t(AY * row_floats));
            for (int j = 0; j < AY; ++j)
                if (inside[j])
                    load_pixels(c.in, c.in_type,
                                src.base + s.n * c.in_n + g * c.in_group + row_at[j] + first, n,
                                step, c.channels, pixels.data() + j * row_floats);
        }
        for (int ch = 0; ch <= c.channels; ++ch) {
            if (ch < c.channels && by_pixel && ch % kGather == 0) {
                const int nb = std::min(kGather, c.channels - ch);
                for (int j = 0; j < AY; ++j) {
                    if (!inside[j]) continue;
                    if (floats)
                        gather_channels(in_f + src.base + s.n * c.in_n + g * c.in_group + ch +
                                            row_at[j] + first,
                                        step, n, nb, runs.data() + j * n, run_step);
                    else
                        gather_channels(pixels.data() + j * row_floats + ch, c.channels, n, nb,
                                        runs.data() + j * n, run_step);
                }
            }
            if (ch < c.channels && by_pixel) {
                float* slot = stage.data() + (ch % 2) * AY * row_floats_staged;
                const float* run = runs.data() + (ch % kGather) * run_step;
                for (int j = 0; j < AY; ++j)
                    if (inside[j])
                        stage_row<M>(run + j * n, 1, lo, n, slot + j * row_floats_staged, part);
            } else if (ch < c.channels && any && !floats) {
                const int64_t plane = src.base + s.n * c.in_n + g * c.in_group + ch * c.in_c;
                float* slot = stage.data() + (ch % 2) * AY * row_floats_staged;
                // At step 2 (dilation 2, dY's phase planes) the whole span, converted in one
                // contiguous run, then staged every other element: no strided gather of bits
                // (fp16 dil2 forward 1.08x faster, vae_dec dX 1.05x, dil2 dX 0.99x).
                const bool span = step == 2;
                for (int j = 0; j < AY; ++j)
                    if (inside[j]) {
                        load_row(c.in, c.in_type, plane + row_at[j] + first, span ? 1 : step,
                                 span ? 2 * n - 1 : n, converted.data());
                        stage_row<M>(converted.data(), span ? 2 : 1, lo, n,
                                     slot + j * row_floats_staged, part);
                    }
            } else if (ch < c.channels && any) {
                const float* plane = in_f + src.base + s.n * c.in_n + g * c.in_group + ch * c.in_c;
                float* slot = stage.data() + (ch % 2) * AY * row_floats_staged;
                if (ch + kPrefetchChannels < c.channels)  // rows `kPrefetchChannels` ahead
                    for (int j = 0; j < AY; ++j)
                        if (inside[j]) {
                            const float* r = plane + kPrefetchChannels * c.in_c + row_at[j] + first;
                            const int64_t last = (hi - lo - 1) * step;
                            for (int64_t b = 0; b <= last; b += 16) __builtin_prefetch(r + b);
                            __builtin_prefetch(r + last);
                        }
                for (int j = 0; j < AY; ++j)
                    if (inside[j])
                        stage_row<M>(plane + row_at[j] + first, step, lo, hi - lo,
                                     slot + j * row_floats_staged, part);
            }
            if (ch == 0) continue;
            const int prev = ch - 1;
            const float* slot = stage.data() + (prev % 2) * AY * row_floats_staged;
            const float* e[AY * M];
            for (int j = 0; j < AY * M; ++j) e[j] = slot + j * part;
            float* __restrict vc = v + (int64_t(q) * c.channels + prev) * pitch + s.col;
            CONVT_IVDEP
            for (int k = 0; k < lenv; ++k) {
                float pts[P];
                patch_points<R, TY, M>(e, k, pts);
                CONVT_UNROLL
                for (int pt = 0; pt < P; ++pt) vc[pt * plane_step + k] = pts[pt];
            }
        }
    }
}

// Whether sums[0, n) are all finite (before the neuron); then the neuron on sums[0, len).
// Inline: runs are 8 to 16 tiles at 64 x 64 images.
CONVT_INLINE bool finish_sums(const Correlation& c, float* sums, int n, int len, float slope) {
    const bool finite = all_finite_inline(sums, n);
    if (c.neuron != NeuronType::None)
        for (int k = 0; k < len; ++k)
            sums[k] = apply_neuron(c.neuron, sums[k], c.na, c.nb, c.nc, slope);
    return finite;
}

// M runs woven, q[0][0], q[1][0], ..., q[M - 1][0], q[0][1], ... (runs `step` apart, n elements
// in all), into out.
template <int M>
CONVT_INLINE void weave(const float* __restrict q, int64_t step, int64_t n, float* __restrict out) {
    if constexpr (M == 2) {
        interleave2(q, q + step, n, out);
    } else {  // inline: the runs are short (8 to 16 tiles at 64 x 64)
        CONVT_IVDEP
        for (int64_t k = 0; k < n / M; ++k) {
            CONVT_UNROLL
            for (int h = 0; h < M; ++h) out[k * M + h] = q[h * step + k];
        }
    }
}

// Two runs' M phases each (ra[h * step + k], rb alike) woven in one pass:
// out[2M k + 2h] = ra[h * step + k], out[2M k + 2h + 1] = rb[h * step + k], for k < tiles.
template <int M>
CONVT_INLINE void weave_pair(const float* __restrict ra, const float* __restrict rb, int64_t step,
                             int64_t tiles, float* __restrict out) {
    CONVT_IVDEP
    for (int64_t k = 0; k < tiles; ++k) {
        CONVT_UNROLL
        for (int h = 0; h < M; ++h) {
            out[2 * M * k + 2 * h] = ra[h * step + k];
            out[2 * M * k + 2 * h + 1] = rb[h * step + k];
        }
    }
}

// M runs woven (see weave) to the contiguous output elements from `at`.
template <int M>
CONVT_INLINE void store_woven(const Correlation& c, int64_t at, const float* q, int64_t step,
                              int64_t n) {
    if (c.out_type == CONVT_TYPE_F32) return weave<M>(q, step, n, static_cast<float*>(c.out) + at);
    thread_local std::vector<float> woven;
    woven.resize(size_t(n));
    weave<M>(q, step, n, woven.data());
    store_row(c.out, c.out_type, at, 1, n, woven.data());
}

// One output row of a run, from output element `row` (its column 0): q[h * lenv + k] at column
// x + M dx k + h dx (those inside [0, ow): the first in[h]). Returns whether they were all
// finite before the neuron.
template <int M>
CONVT_INLINE bool store_output_row(const Correlation& c, int64_t row, int64_t x, int len,
                                   const int* in, float* q, int lenv, float slope) {
    bool finite = true;
    for (int h = 0; h < M; ++h) finite &= finish_sums(c, q + h * lenv, in[h], len, slope);
    if (c.out_w == 1 && c.dx == 1 && in[M - 1] == len) {
        store_woven<M>(c, row + x, q, lenv, M * int64_t(len));
    } else {
        for (int h = 0; h < M; ++h)
            store_row(c.out, c.out_type, row + (x + h * c.dx) * c.out_w, M * c.dx * c.out_w, in[h],
                      q + h * lenv);
    }
    return finite;
}

// A^T of F(M, R) on m[0..R + M - 2]: y[0..M - 1].
template <int R, int M>
CONVT_INLINE void at(const float* m, float* y) {
    if constexpr (M == 4) {
        y[0] = m[0] + m[1] + m[2] + m[3] + m[4];
        y[1] = -m[1] + m[2] + 0.5f * m[3] - 2.f * m[4];
        y[2] = m[1] + m[2] + 0.25f * m[3] + 4.f * m[4];
        y[3] = -m[1] + m[2] + 0.125f * m[3] - 8.f * m[4] + m[5];
    } else if constexpr (R == 3) {
        y[0] = m[0] + m[1] + m[2];
        y[1] = m[1] - m[2] - m[3];
    } else {
        y[0] = m[0] + m[1];
        y[1] = m[1] + m[2];
    }
}

// A^T m A (A^T m for one-row tiles), m[point * step + k] the point rows of a run's lenv
// columns (a multiple of kSpill: m is read up to kSpill - 1 columns past the run; the caller's
// buffer has room, and those sums are never stored), plus the bias: q[(row * M + h) * lenv + k]
// = output row `row` of the tile, column x + M dx k + h dx. (Not an array of row pointers:
// copied with vector loads across the caller's pointer-sized stores, it stalled a failed
// store-to-load forward a call.)
template <int R, int TY, int M>
CONVT_INLINE void output_points(const float* m, int64_t step, int lenv, float bias, float* q) {
    constexpr int A = R + M - 1, P = (TY == 2 ? A : 1) * A, ROWS = TY == 2 ? M : 1;
    const float* __restrict mp[P];
    for (int i = 0; i < P; ++i) mp[i] = m + i * step;
    float* __restrict qr = q;
    if constexpr (TY == 1) {
        CONVT_IVDEP
        for (int k = 0; k < lenv; ++k) {
            float row[A], y[M];
            CONVT_UNROLL
            for (int b = 0; b < A; ++b) row[b] = mp[b][k];
            at<R, M>(row, y);
            CONVT_UNROLL
            for (int h = 0; h < M; ++h) qr[h * lenv + k] = bias + y[h];
        }
    } else {
        CONVT_IVDEP
        for (int k = 0; k < lenv; ++k) {
            float rows[ROWS][A];  // A^T down each column b
            CONVT_UNROLL
            for (int b = 0; b < A; ++b) {
                float col[A], y[M];
                CONVT_UNROLL
                for (int a = 0; a < A; ++a) col[a] = mp[a * A + b][k];
                at<R, M>(col, y);
                CONVT_UNROLL
                for (int i = 0; i < ROWS; ++i) rows[i][b] = y[i];
            }
            CONVT_UNROLL
            for (int i = 0; i < ROWS; ++i) {
                float y[M];
                at<R, M>(rows[i], y);
                CONVT_UNROLL
                for (int h = 0; h < M; ++h) qr[(i * M + h) * lenv + k] = bias + y[h];
            }
        }
    }
}

// Output channel o of a run from its point rows m (see output_points), stored with the neuron.
// Returns whether every stored value was finite.
template <int R, int TY, int M>
CONVT_INLINE bool transform_outputs_body(const Correlation& c, int g, const TileRun& s, int o,
                                         const float* m, int64_t step) {
    constexpr int W = kSpill, ROWS = TY == 2 ? M : 1;
    thread_local std::vector<float> q;
    const int len = s.len, lenv = (len + W - 1) / W * W;
    if (s.y >= c.oh) return true;  // a tile row past the last output row (dilation > 1)
    q.resize(size_t(M * ROWS) * lenv);
    const int64_t oc = int64_t(g) * c.outs + o;
    const float bias = c.bias ? c.bias[oc] : 0.f, slope = c.slopes ? c.slopes[oc] : 0.f;
    output_points<R, TY, M>(m, step, lenv, bias, q.data());
    const int64_t plane = c.out_base + s.n * c.out_n + g * c.out_group + o * c.out_c;
    bool finite = true;
    for (int i = 0; i < ROWS && s.y + i * c.dy < c.oh; ++i)
        finite &= store_output_row<M>(c, plane + (s.y + i * c.dy) * c.out_h, s.x, len, s.in,
                                      q.data() + i * M * lenv, lenv, slope);
    return finite;
}

// Whether runs a and b (in that order) are the two column phases of one tile row at dilation 2,
// every output of both inside: together they cover 2 m len consecutive outputs of each row.
inline bool woven_pair(const Correlation& c, const TileRun& a, const TileRun& b) {
    bool all_in = c.dx == 2 && c.out_w == 1 && a.n == b.n && a.y == b.y && b.x == a.x + 1 &&
                  a.len == b.len && a.y < c.oh;
    for (int h = 0; h < c.m; ++h) all_in = all_in && a.in[h] == a.len && b.in[h] == b.len;
    return all_in;
}

// Output channel o of a woven pair (woven_pair: a then b, point rows ma and mb): each output
// row woven whole, where each run alone stores every other column (scalar stores, a third of
// dil2's output transform; in-process A/B: dil2 dX 0.95x, forward 0.94x).
template <int R, int TY, int M>
CONVT_INLINE bool transform_output_pair_body(const Correlation& c, int g, const TileRun& a, int o,
                                             const float* ma, const float* mb, int64_t step) {
    constexpr int W = kSpill, ROWS = TY == 2 ? M : 1;
    thread_local std::vector<float> q;
    const int len = a.len, lenv = (len + W - 1) / W * W;
    q.resize(size_t(2 * M * ROWS) * lenv + 2 * size_t(M) * len);
    float* qa = q.data();                 // [row * M + h][lenv]
    float* qb = qa + M * ROWS * lenv;     // the same for b
    float* woven = qb + M * ROWS * lenv;  // a row, fp16 outputs
    const int64_t oc = int64_t(g) * c.outs + o;
    const float bias = c.bias ? c.bias[oc] : 0.f, slope = c.slopes ? c.slopes[oc] : 0.f;
    output_points<R, TY, M>(ma, step, lenv, bias, qa);
    output_points<R, TY, M>(mb, step, lenv, bias, qb);
    bool finite = true;
    for (int i = 0; i < ROWS && a.y + i * c.dy < c.oh; ++i) {
        const int64_t row = c.out_base + a.n * c.out_n + g * c.out_group + o * c.out_c +
                            (a.y + i * c.dy) * c.out_h + a.x;
        float* ra = qa + i * M * lenv;
        float* rb = qb + i * M * lenv;
        for (int h = 0; h < M; ++h)
            finite &= finish_sums(c, ra + h * lenv, len, len, slope) &
                      finish_sums(c, rb + h * lenv, len, len, slope);
        float* to = c.out_type == CONVT_TYPE_F32 ? static_cast<float*>(c.out) + row : woven;
        weave_pair<M>(ra, rb, lenv, len, to);
        if (to == woven) store_row(c.out, c.out_type, row, 1, 2 * M * int64_t(len), woven);
    }
    return finite;
}

// e0[k] = r[2DX k], e1[k] = r[2DX k + DX] for k < n: a contiguous row's tile columns.
template <int DX>
CONVT_INLINE void pair_run(const float* __restrict r, int64_t n, float* __restrict e0,
                           float* __restrict e1) {
    CONVT_IVDEP
    for (int64_t k = 0; k < n; ++k) {
        e0[k] = r[2 * DX * k];
        e1[k] = r[2 * DX * k + DX];
    }
}

// A of F(2, 3) on a tile row's two values: the 4 points.
CONVT_INLINE void a_of(float e0, float e1, float* p) {
    p[0] = e0;
    p[1] = e0 + e1;
    p[2] = e0 - e1;
    p[3] = -e1;
}

// A e A^T of the run's 2x2 tiles of dY (c's output box; zeros past it) for output channels
// [o0, o1), into e[point][o - o0][col + k] (`columns` apart per channel): the dW's transform of
// the output gradient (A e A^T, B^T d B and G^T m G: F(2x2, 3x3) transposed; 3x3 only).
CONVT_INLINE void transform_gradients_body(const Correlation& c, const float* dy, int g,
                                           const TileRun& s, int o0, int o1, int columns,
                                           float* e) {
    constexpr int A = 4;
    thread_local std::vector<float> tb;
    const int len = s.len;
    tb.resize(size_t(2 * A + 4) * len);
    float* __restrict t = tb.data();  // [r][b][k]: A along tile row r
    float* __restrict e0 = t + 2 * A * len;
    float* __restrict e1 = e0 + 2 * len;
    const int64_t span = 2 * c.dx;
    const int n0 = s.in[0], n1 = s.in[1];
    const int64_t point_step = int64_t(o1 - o0) * columns;
    for (int o = o0; o < o1; ++o) {
        const float* plane = dy + s.n * c.out_n + g * c.out_group + o * c.out_c;
        for (int r = 0; r < 2; ++r) {
            float* __restrict tr = t + A * r * len;
            const int64_t y = s.y + r * c.dy;
            if (y >= c.oh) {
                std::fill(tr, tr + A * len, 0.f);
                continue;
            }
            const float* row = plane + y * c.out_h + s.x * c.out_w;
            if (c.out_w == 1 && c.dx == 1) {
                pair_run<1>(row, n1, e0, e1);
            } else if (c.out_w == 1 && c.dx == 2) {
                pair_run<2>(row, n1, e0, e1);
            } else {
                const int64_t se = span * c.out_w, so = c.dx * c.out_w;
                for (int k = 0; k < n1; ++k) {
                    e0[k] = row[k * se];
                    e1[k] = row[k * se + so];
                }
            }
            for (int k = n1; k < n0; ++k) e0[k] = row[k * span * c.out_w];
            for (int k = n0; k < len; ++k) e0[k] = 0.f;
            for (int k = n1; k < len; ++k) e1[k] = 0.f;
            CONVT_IVDEP
            for (int k = 0; k < len; ++k) {
                float p[A];
                a_of(e0[k], e1[k], p);
                for (int b = 0; b < A; ++b) tr[b * len + k] = p[b];
            }
        }
        float* ec = e + int64_t(o - o0) * columns + s.col;
        for (int b = 0; b < A; ++b) {
            const float* __restrict r0 = t + b * len;
            const float* __restrict r1 = r0 + A * len;
            float* __restrict p0 = ec + b * point_step;
            CONVT_IVDEP
            for (int k = 0; k < len; ++k) {
                float p[A];
                a_of(r0[k], r1[k], p);
                for (int a = 0; a < A; ++a) p0[a * A * point_step + k] = p[a];
            }
        }
    }
}

using InputTransform = void (*)(const Correlation&, int, const TileRun&, int, int64_t, float*);
using OutputTransform = bool (*)(const Correlation&, int, const TileRun&, int, const float*,
                                 int64_t);
using OutputPairTransform = bool (*)(const Correlation&, int, const TileRun&, int, const float*,
                                     const float*, int64_t);
using GradientTransform = void (*)(const Correlation&, const float*, int, const TileRun&, int, int,
                                   int, float*);

#define CONVT_WINOGRAD_TRANSFORMS(suffix, attr)                                                    \
    template <int R, int TY, int M>                                                                \
    attr void transform_inputs_##suffix(const Correlation& c, int g, const TileRun& s, int pitch,  \
                                        int64_t plane_step, float* v) {                            \
        transform_inputs_body<R, TY, M>(c, g, s, pitch, plane_step, v);                            \
    }                                                                                              \
    template <int R, int TY, int M>                                                                \
    attr bool transform_outputs_##suffix(const Correlation& c, int g, const TileRun& s, int o,     \
                                         const float* m, int64_t step) {                           \
        return transform_outputs_body<R, TY, M>(c, g, s, o, m, step);                              \
    }                                                                                              \
    template <int R, int TY, int M>                                                                \
    attr bool transform_output_pair_##suffix(const Correlation& c, int g, const TileRun& a, int o, \
                                             const float* ma, const float* mb, int64_t step) {     \
        return transform_output_pair_body<R, TY, M>(c, g, a, o, ma, mb, step);                     \
    }                                                                                              \
    attr void transform_gradients_##suffix(const Correlation& c, const float* dy, int g,           \
                                           const TileRun& s, int o0, int o1, int columns,          \
                                           float* e) {                                             \
        transform_gradients_body(c, dy, g, s, o0, o1, columns, e);                                 \
    }

CONVT_WINOGRAD_TRANSFORMS(base, )
#ifdef CONVT_WINOGRAD_AVX2
CONVT_WINOGRAD_TRANSFORMS(avx2, __attribute__((target("avx2,fma"))))
#endif

// The transforms' functions for this CPU, kernel size, tile rows and tile size.
struct Transforms {
    InputTransform inputs;
    OutputTransform outputs;
    OutputPairTransform output_pairs;
    GradientTransform gradients;
    template <int R, int TY, int M>
    void pick() {
        inputs = transform_inputs_base<R, TY, M>;
        outputs = transform_outputs_base<R, TY, M>;
        output_pairs = transform_output_pair_base<R, TY, M>;
        gradients = transform_gradients_base;  // dW: F(2x2, 3x3) only
#ifdef CONVT_WINOGRAD_AVX2
        if (use_avx2()) {
            inputs = transform_inputs_avx2<R, TY, M>;
            outputs = transform_outputs_avx2<R, TY, M>;
            output_pairs = transform_output_pair_avx2<R, TY, M>;
            gradients = transform_gradients_avx2;
        }
#endif
    }
    Transforms(int r, int ty, int m) {
        if (ty == 2 && r == 3)
            m == 4 ? pick<3, 2, 4>() : pick<3, 2, 2>();
        else if (ty == 2)
            pick<2, 2, 2>();
        else
            r == 3 ? (m == 4 ? pick<3, 1, 4>() : pick<3, 1, 2>()) : pick<2, 1, 2>();
    }
};

// The output tiles (m x m, or 1 x m) of a Correlation's box in (image, tile row, tile column)
// order, and the runs of a range of them.
struct TileGrid {
    int64_t nby, nbx, th, tw, total;
    explicit TileGrid(const Correlation& c)
        : nby(ceil_div(c.oh, c.rows() * c.dy)),
          nbx(ceil_div(c.ow, c.m * c.dx)),
          th(c.dy * nby),
          tw(c.dx * nbx),
          total(c.images * th * tw) {}
    void runs(const Correlation& c, int64_t first, int real, std::vector<TileRun>& out) const {
        out.clear();
        for (int64_t t = first; t < first + real;) {
            const int64_t n = t / (th * tw), r = (t / tw) % th, col = t % tw;
            const int64_t cr = col / nbx, cb = col % nbx;
            const int len = static_cast<int>(std::min<int64_t>(first + real - t, nbx - cb));
            const int64_t x = cb * c.m * c.dx + cr, span = c.m * c.dx;
            TileRun run{n,   (r % nby) * c.rows() * c.dy + r / nby, x,
                        len, static_cast<int>(t - first),           {0, 0, 0, 0}};
            for (int h = 0; h < c.m; ++h)
                run.in[h] = static_cast<int>(
                    std::clamp<int64_t>(ceil_div(c.ow - x - h * c.dx, span), 0, len));
            out.push_back(run);
            t += len;
        }
    }
};

// The forward (its stride phases, one correlation each) and dX: blocks of tiles, each
// transformed, multiplied point by point (one GEMM a point, over the depth) and transformed
// back, every correlation's blocks in one parallel loop (a batch of one image still keeps the
// threads busy: dcgan_g2's phases have 16 tiles each). Returns whether every stored value was
// finite (before the neuron).
bool correlate(const std::vector<Correlation>& all) {
    struct Plan {
        TileGrid grid;
        int cols;
        int64_t blocks, first_task;
        bool deep;  // packed weights past kDeepWeightFloats
    };
    // Columns a block: as many as keep its transformed inputs L2-resident, fewer when that
    // would leave a thread with under four blocks in all; deep correlations keep kMinColumns
    // (never more than their tiles).
    const int threads = ThreadPool::instance().num_threads();
    int64_t all_tiles = 0;
    for (const Correlation& c : all) all_tiles += TileGrid(c).total * c.groups;
    std::vector<Plan> plans;
    int64_t tasks = 0;
    for (const Correlation& c : all) {
        const TileGrid grid(c);
        int64_t columns = std::clamp<int64_t>(
            kBlockFloats / (points_of(c.r, c.ty, c.m) * c.depth) / kNr * kNr, kNr, kMaxColumns);
        const int points = points_of(c.r, c.ty, c.m);
        const int64_t group_weights =
            c.point_offset ? c.point_offset[points] : int64_t(points) * c.tiles * kMr * c.depth;
        const bool deep = group_weights > kDeepWeightFloats;
        const int64_t least = deep ? kMinColumns : kNr;
        columns = std::max(columns, least);
        while (columns > least && ceil_div(all_tiles, columns) < 4 * threads) columns -= kNr;
        columns = std::min(columns, std::max<int64_t>(kNr, ceil_div(grid.total, kNr) * kNr));
        const int64_t blocks = ceil_div(grid.total, columns);
        plans.push_back({grid, static_cast<int>(columns), blocks, tasks, deep});
        tasks += blocks * c.groups;
    }
    if (tasks == 0) return true;
    const IndirectKernel kernel = indirect_kernel();
    // The last register tile of outs % kMr rows by the short-tile kernel, where the CPU has one.
    const ShortIndirectKernel short_kernel = short_indirect_kernel();
    std::atomic<bool> finite{true};
    ThreadPool::instance().parallel_for(tasks, [&](int64_t task) {
        size_t which = 0;
        while (which + 1 < plans.size() && plans[which + 1].first_task <= task) ++which;
        const Correlation& c = all[which];
        const Plan& plan = plans[which];
        const int points = points_of(c.r, c.ty, c.m), cols = plan.cols;
        const Transforms tf(c.r, c.ty, c.m);
        const int64_t t = task - plan.first_task;
        const int g = static_cast<int>(t / plan.blocks);
        const int64_t first = (t % plan.blocks) * cols;
        const int real = static_cast<int>(std::min<int64_t>(cols, plan.grid.total - first));
        thread_local std::vector<float> v, m;
        thread_local std::vector<int64_t> rows;  // [point][its depth]: v's rows it reads
        thread_local std::vector<TileRun> runs;
        // Every row of v starts a cache line (a 64-byte base, a pitch of whole lines), so that
        // the products' 16-float B rows never straddle two; the point planes lie a line past
        // depth x pitch (at 64 channels, 16-float pitches alone put them a multiple of 4 KB
        // apart: the input transform's 16 stores a tile hit one L1 set). In-process A/B against 8
        // floats of spill a row on an unaligned base: dX dcgan_g2 0.91-0.96x, vae_dec 0.91-0.93x,
        // s1_same 0.93x, dil2 0.89x; forward s1_same 0.93x, hifigan_up1 0.93x, dcgan_g2 0.98-1.02x.
        const int pitch = static_cast<int>(ceil_div(cols + kSpill, kLineFloats) * kLineFloats);
        const int64_t plane = int64_t(c.depth) * pitch + kLineFloats;
        v.resize(size_t(points) * plane + kLineFloats);
        float* const vd = line_aligned(v.data());
        // Register tiles of outputs a chunk: every point's GEMM runs over the chunk's tiles
        // before the next point's, so a point's transformed inputs are read from L1 for each
        // (vae_dec's dX alternated 6.2 and 8+ ms from process to process when each tile swept
        // all nine points' inputs, 368 KB, past its 845 KB of weights).
        const int chunk = static_cast<int>(
            std::clamp<int64_t>(kChunkFloats / (int64_t(points) * kMr * cols), 1, c.tiles));
        m.resize(size_t(chunk) * points * kMr * cols + kSpill);  // the output transform reads past
        rows.resize(size_t(points) * c.depth);
        int depth[36];  // points_of <= 36
        for (int pt = 0; pt < points; ++pt) {
            depth[pt] = 0;
            for (int q = 0; q < int(c.sources.size()); ++q) {
                if (c.point_sources) {
                    const std::vector<int>& ps = (*c.point_sources)[pt];
                    if (std::find(ps.begin(), ps.end(), q) == ps.end()) continue;
                }
                for (int ch = 0; ch < c.channels; ++ch)
                    rows[size_t(pt) * c.depth + depth[pt]++] =
                        (int64_t(q) * c.channels + ch) * pitch;
            }
        }
        const int64_t group_weights =
            c.point_offset ? c.point_offset[points] : int64_t(points) * c.tiles * c.depth * kMr;
        plan.grid.runs(c, first, real, runs);
        for (const TileRun& s : runs) tf.inputs(c, g, s, pitch, plane, vd);
        if (real < cols)  // the last block's spare columns: zeros, never stored
            for (int pt = 0; pt < points; ++pt)
                for (int ch = 0; ch < c.depth; ++ch)
                    std::fill_n(vd + int64_t(pt) * plane + int64_t(ch) * pitch + real, cols - real,
                                0.f);
        bool local = true;
        const int panels = cols / kNr;
        const int short_rows = short_kernel ? c.outs % kMr : 0;
        // Output tile ot's packed weights of point pt: depth[pt] x kMr floats.
        auto weights_of = [&](int pt, int ot) {
            const int64_t at =
                c.point_offset ? c.point_offset[pt] : int64_t(pt) * c.tiles * c.depth * kMr;
            return c.u + g * group_weights + at + int64_t(ot) * depth[pt] * kMr;
        };
        for (int ot0 = 0; ot0 < c.tiles; ot0 += chunk) {
            const int ot1 = std::min(c.tiles, ot0 + chunk);
            // m: [tile of the chunk][point][kMr][cols]
            for (int pt = 0; pt < points; ++pt) {
                const float* b = vd + int64_t(pt) * plane;
                const int64_t* rp = rows.data() + size_t(pt) * c.depth;
                auto product = [&](int ot, int jp) {
                    const float* a = weights_of(pt, ot);
                    float* to =
                        m.data() + (int64_t(ot - ot0) * points + pt) * kMr * cols + jp * kNr;
                    if (ot == c.tiles - 1 && short_rows) {  // its rows alone (dil2: 2 of 6)
                        short_indirect_run(
                            short_kernel, a, rp, depth[pt], short_rows, jp, panels,
                            [&](int q) { return b + q * kNr; }, to, cols, true);
                        return;
                    }
                    kernel(a, rp, depth[pt], b + jp * kNr, to, cols, true);
                };
                if (plan.deep) {
                    // A tile's weights stay in L1 across the panels. Those of the tile after it
                    // (this point's next, else the next point's first) are fetched into L2 a
                    // part a panel: read from memory by the tile's first panel alone, both
                    // threads' weights came at 4x the rate the products took them (in-process
                    // A/B, dcgan_g2 dX 0.93-0.95x the time: NCHW, NHWC, fp16, one thread).
                    for (int ot = ot0; ot < ot1; ++ot) {
                        const bool last = ot + 1 == ot1;
                        const float* next = !last             ? weights_of(pt, ot + 1)
                                            : pt + 1 < points ? weights_of(pt + 1, ot0)
                                                              : nullptr;
                        const int64_t lines =
                            next ? int64_t(depth[last ? pt + 1 : pt]) * kMr / kLineFloats : 0;
                        for (int jp = 0; jp < panels; ++jp) {
                            for (int64_t l = lines * jp / panels; l < lines * (jp + 1) / panels;
                                 ++l)
                                __builtin_prefetch(next + l * kLineFloats, 0, 2);
                            product(ot, jp);
                        }
                    }
                } else {  // a panel of transformed inputs stays in L1 across the tiles
                    for (int jp = 0; jp < panels; ++jp)
                        for (int ot = ot0; ot < ot1; ++ot) product(ot, jp);
                }
            }
            for (int ot = ot0; ot < ot1; ++ot) {
                const float* mt = m.data() + int64_t(ot - ot0) * points * kMr * cols;
                for (int i = 0; i < kMr && ot * kMr + i < c.outs; ++i)
                    for (size_t ri = 0; ri < runs.size(); ++ri) {
                        const TileRun& s = runs[ri];
                        const float* mi = mt + int64_t(i) * cols;
                        if (ri + 1 < runs.size() && woven_pair(c, s, runs[ri + 1])) {
                            local &= tf.output_pairs(c, g, s, ot * kMr + i, mi + s.col,
                                                     mi + runs[ri + 1].col, int64_t(kMr) * cols);
                            ++ri;
                            continue;
                        }
                        local &= tf.outputs(c, g, s, ot * kMr + i, mi + s.col, int64_t(kMr) * cols);
                    }
            }
        }
        if (!local) finite.store(false);
    });
    return finite.load();
}

// G^T m G of F(2, 3) for dW: the 16 points m[a * 4 + b] to the 3x3 weight gradient.
void points_to_kernel(const float* m, float* w) {
    auto gt = [](const float* v, int step, float* out) {  // G^T on 4 values
        const float s = 0.5f * (v[step] + v[2 * step]);
        out[0] = v[0] + s;
        out[1] = 0.5f * (v[step] - v[2 * step]);
        out[2] = s + v[3 * step];
    };
    float q[3][4];
    for (int b = 0; b < 4; ++b) {
        float col[3];
        gt(m + b, 4, col);
        for (int a = 0; a < 3; ++a) q[a][b] = col[a];
    }
    for (int a = 0; a < 3; ++a) gt(q[a], 1, w + a * 3);
}

// dW of a 3x3 stride-1 correlation (the forward's geometry: source X, output box dY at `grad`):
// taps[((g * outs + o) * 9 + a * 3 + b) * channels + i]. Sums run over a fixed number
// of tile ranges, each into its own partial of the points, then the partials in range order:
// the order of every sum depends on the layer alone, never on the thread count.
void weight_taps(const Correlation& c, const float* grad, float* taps) {
    const TileGrid grid(c);
    const int points = points_of(3), rr = 9;
    const int og = c.outs, ig = c.channels, groups = c.groups;
    const int otiles = static_cast<int>(ceil_div(og, kMr));
    const int ipanels = static_cast<int>(ceil_div(ig, kNr));
    const int64_t icols = int64_t(ipanels) * kNr, orows = int64_t(otiles) * kMr;
    const int64_t point_floats = orows * icols, group_floats = points * point_floats;
    int ranges = static_cast<int>(std::clamp<int64_t>(grid.total / kTilesPerRange, 1, kRanges));
    while (ranges > 1 && int64_t(ranges) * groups * group_floats > kMaxPartialFloats) --ranges;
    const int64_t want = 2 * int64_t(ThreadPool::instance().num_threads());
    const int splits =
        static_cast<int>(std::clamp<int64_t>(ceil_div(want, int64_t(groups) * ranges), 1, otiles));
    std::vector<float> partials(size_t(ranges) * groups * group_floats, 0.f);
    // Tiles a block (the GEMMs' depth): its transformed X and dY stay L2-resident.
    const int cols = static_cast<int>(
        std::clamp<int64_t>(2 * kBlockFloats / (points * (icols + orows)) / 8 * 8, 8, kMaxColumns));
    const MicroKernel uk = micro_kernel();
    const Transforms tf(3, 2, 2);
    ThreadPool::instance().parallel_for(int64_t(groups) * ranges * splits, [&](int64_t ti) {
        const int g = static_cast<int>(ti / (int64_t(ranges) * splits));
        const int range = static_cast<int>(ti / splits % ranges);
        const int split = static_cast<int>(ti % splits);
        const int ot0 = static_cast<int>(int64_t(split) * otiles / splits);
        const int ot1 = static_cast<int>(int64_t(split + 1) * otiles / splits);
        if (ot0 >= ot1) return;
        const int o0 = ot0 * kMr, o1 = std::min(og, ot1 * kMr), nrows = (ot1 - ot0) * kMr;
        const int64_t t_begin = grid.total * range / ranges;
        const int64_t t_end = grid.total * (range + 1) / ranges;
        float* part = partials.data() + (int64_t(range) * groups + g) * group_floats;
        thread_local std::vector<float> v, e, vp, ep;
        thread_local std::vector<TileRun> runs;
        const int pitch = cols + kSpill;
        v.resize(size_t(points) * ig * pitch);
        e.resize(size_t(points) * (o1 - o0) * cols);
        vp.resize(size_t(icols) * cols + kLineFloats);
        ep.resize(size_t(nrows) * cols + kLineFloats);
        // The micro-kernel's 16-float B rows on whole cache lines (s1_same dW 0.96-0.99x).
        float* const vpd = line_aligned(vp.data());
        float* const epd = line_aligned(ep.data());
        for (int64_t first = t_begin; first < t_end; first += cols) {
            const int real = static_cast<int>(std::min<int64_t>(cols, t_end - first));
            grid.runs(c, first, real, runs);
            for (const TileRun& s : runs) {
                tf.inputs(c, g, s, pitch, int64_t(ig) * pitch, v.data());
                tf.gradients(c, grad, g, s, o0, o1, cols, e.data());
            }
            for (int pt = 0; pt < points; ++pt) {
                // Both operands tile-major for the micro-kernel: X's points [panel][tile][16],
                // dY's [tile of 6][tile][6]. Channels past the last are left as they are: they
                // only reach sums that are never read.
                const float* vpt = v.data() + int64_t(pt) * ig * pitch;
                for (int ch0 = 0; ch0 < ig; ch0 += 8)
                    for (int t0 = 0; t0 < real; t0 += 8)
                        transpose8(vpt + int64_t(ch0) * pitch + t0, pitch, 1, std::min(8, ig - ch0),
                                   vpd + (int64_t(ch0 / kNr) * cols + t0) * kNr + ch0 % kNr, kNr);
                const float* ept = e.data() + int64_t(pt) * (o1 - o0) * cols;
                for (int ot = ot0; ot < ot1; ++ot)
                    for (int t0 = 0; t0 < real; t0 += 8)
                        transpose8(ept + int64_t(ot * kMr - o0) * cols + t0, cols, 1,
                                   std::min(kMr, og - ot * kMr),
                                   epd + (int64_t(ot - ot0) * cols + t0) * kMr, kMr);
                float* mp = part + pt * point_floats;
                for (int ot = ot0; ot < ot1; ++ot)
                    for (int ip = 0; ip < ipanels; ++ip) {
                        const Segment sg{epd + int64_t(ot - ot0) * cols * kMr,
                                         vpd + int64_t(ip) * cols * kNr, real, kNr};
                        uk(&sg, 1, 0, 0, mp + int64_t(ot) * kMr * icols + ip * kNr, icols, false);
                    }
            }
        }
    });
    // The ranges' points added in order (a row of every point at a time), then G^T m G.
    ThreadPool::instance().parallel_for(int64_t(groups) * og, [&](int64_t go) {
        const int64_t g = go / og, o = go % og;
        thread_local std::vector<float> sums;  // [point][i]
        sums.resize(size_t(points) * ig);
        for (int pt = 0; pt < points; ++pt) {
            const float* at = partials.data() + g * group_floats + pt * point_floats + o * icols;
            float* to = sums.data() + int64_t(pt) * ig;
            std::copy(at, at + ig, to);
            for (int r = 1; r < ranges; ++r) {
                const float* more = at + int64_t(r) * groups * group_floats;
                for (int i = 0; i < ig; ++i) to[i] += more[i];
            }
        }
        float m[16], k[9];
        for (int i = 0; i < ig; ++i) {
            for (int pt = 0; pt < points; ++pt) m[pt] = sums[size_t(pt) * ig + i];
            points_to_kernel(m, k);
            for (int t = 0; t < rr; ++t) taps[size_t((go * rr + t) * ig + i)] = k[t];
        }
    });
}

// Kernel taps per axis (r), stride (s) and tile rows (ty) of a layer the transforms serve, from
// its kernel size: 3x3 at stride 1, or 2s x 2s at stride s (every stride phase then has 2 x 2
// taps); with one kernel row (1-D layers), 3 at stride 1 or 2s at stride s along the row, in
// one-row tiles (ty = 1, stride 1 down the rows). r = 0 when none.
struct Shape {
    int r = 0, s = 0, ty = 2;
    bool odd = false;  // the kernel is r * s - 1 taps a side, packed with its last taps zero
    int sy() const { return ty == 2 ? s : 1; }       // stride down the rows
    int ry() const { return ty == 2 ? r : 1; }       // taps a phase down the rows
    int classes() const { return sy() * s; }         // tap classes (stride phases)
    int k() const { return r * s - (odd ? 1 : 0); }  // the kernel's taps a side
};
Shape shape_of(int64_t kernel_h, int64_t kernel_w) {
    auto along = [](int64_t k, int ty) -> Shape {
        if (k == 3) return {3, 1, ty};
        if (k >= 2 && k % 2 == 0) return {2, static_cast<int>(k / 2), ty};
        return {};
    };
    if (kernel_h == 1) return along(kernel_w, 1);
    return kernel_h == kernel_w ? along(kernel_h, 2) : Shape{};
}

// Whether the transforms may run: not when the environment variable CONVT_CPU_WINOGRAD is
// "off" (read once), for callers who want every sum in the exact paths' order of products.
bool winograd_enabled() {
    static const bool enabled = [] {
        const char* v = std::getenv("CONVT_CPU_WINOGRAD");
        return !(v && std::strcmp(v, "off") == 0);
    }();
    return enabled;
}

// Whether a dispatch has the stride and dilation the layer's transforms were packed for.
bool dispatch_fits(const ConvtParams& p, Shape sh) {
    return winograd_enabled() && sh.r != 0 && p.kernel_h == (sh.ty == 2 ? sh.k() : 1) &&
           p.kernel_w == sh.k() && p.stride_y == sh.sy() && p.stride_x == sh.s &&
           (sh.s == 1 || (p.dilation_y == 1 && p.dilation_x == 1)) && float_or_half(p.src_type) &&
           float_or_half(p.dst_type) && !p.accumulate_half;
}

// The stride phase (ry, rx) of the forward: its outputs every sy-th row and s-th column of the
// clip from (ry, rx), reading X at y0 = its first tap's source row (taps s apart read
// consecutive rows), and the tap class (cy, cx) of its first taps. False when the phase is
// empty.
bool forward_phase(const ConvtParams& p, Shape sh, int ry, int rx, Correlation& c, int& cy,
                   int& cx) {
    const int s = sh.s, sy = sh.sy();
    const int64_t oh = ceil_div(p.clip_h - ry, sy), ow = ceil_div(p.clip_w - rx, s);
    if (oh <= 0 || ow <= 0) return false;
    const int64_t ey = int64_t(p.first_tap_y) + ry, ex = int64_t(p.first_tap_x) + rx;
    cy = static_cast<int>(pos_mod(-ey, sy));
    cx = static_cast<int>(pos_mod(-ex, s));
    c.sources.assign(1, Source{0, p.src_stride_h, p.src_stride_w, p.src_h, p.src_w, (ey + cy) / sy,
                               (ex + cx) / s});
    c.in_n = p.src_stride_n;
    c.in_c = p.src_stride_c;
    c.in_group = int64_t(p.in_per_group) * p.src_stride_c;
    c.out_n = p.dst_stride_n;
    c.out_c = p.dst_stride_c;
    c.out_h = int64_t(sy) * p.dst_stride_h;
    c.out_w = int64_t(s) * p.dst_stride_w;
    c.oh = oh;
    c.ow = ow;
    c.out_group = int64_t(p.out_per_group) * p.dst_stride_c;
    c.r = sh.r;
    c.ty = sh.ty;
    c.dy = sh.ty == 2 && s == 1 ? p.dilation_y : 1;  // one kernel row: no dilation to follow
    c.dx = s == 1 ? p.dilation_x : 1;
    c.images = p.num_images;
    c.groups = p.groups;
    c.channels = c.depth = p.in_per_group;
    c.outs = p.out_per_group;
    return true;
}

}  // namespace

namespace {
// Which of the forward's and dX's weights a layer packs.
struct Wanted {
    bool forward = false, backward = false;
};
Wanted wanted(Shape sh, int64_t groups, int64_t og, int64_t ig) {
    const int64_t least = sh.r == 3 ? kMinNarrowChannels : kMinChannels;
    if (sh.r == 0 || ig < least || og < least) return {};
    if (sh.r == 3) return {true, true};
    if (sh.ty == 1) return {ig * og >= kMinRowPhaseForwardProduct, false};
    const int64_t backward_floats =
        int64_t(points_of(2)) * groups * sh.classes() * og * ceil_div(ig, kMr) * kMr;
    const bool backward = ig >= kMinPhaseChannels && og >= kMinPhaseChannels &&
                          backward_floats <= kMaxPhaseBackwardFloats;
    // Odd kernels: dX alone (their forward phases differ in size).
    return {!sh.odd && ig * og >= kMinPhaseForwardProduct, backward};
}

// Outputs a tile along a row: F(4x4, 3x3) for 3x3 kernels of at most kMaxTile4Channels each
// way (F(4, 3) for 3 taps in one kernel row), else F(2x2) or F(2). Its float32 error grows with the
// depth (normwise against float64, N = 8 at 28 x 28: 2.7e-6 at 64 channels, 3.7-4.1e-6 at
// 128, 4.1-5.2e-6 at 256, 3.4-6.6e-6 at 480, against the 1e-5 the tests allow; F(2x2, 3x3)
// 0.3-1e-6). In-process A/B, 4x4 against 2x2 tiles, N = 8, two threads, NCHW: s1_same
// forward 1.29x, dX 1.35x; dil2 1.34x and 1.33x; 128 x 128 channels at 28 x 28 1.39x and 1.36x; 16
// x 16 at 64 x 64 1.11x; 16 x 24 at dilation 2 on 32 x 32 0.91x and 0.99x (four tiles a run).
// NHWC 1.10-1.21x, fp16 1.26-1.30x, N = 1 1.25-1.38x. One kernel row (L = 1024 to 4096): 1.19-1.41x
// forward, 1.08-1.36x dX; float32 error 0.6-1.4e-6 (F(2, 3) 0.3-0.5e-6).
constexpr int kMaxTile4Channels = 128;
int tile_of(Shape sh, int og, int ig) {
    return sh.r == 3 && og <= kMaxTile4Channels && ig <= kMaxTile4Channels ? 4 : 2;
}

// Packs `out` for shape sh; w(g, o, ky, kx, i) is a weight of the layer (the caller's kernel is
// sh.k() taps a side: taps past it read as zero).
template <typename Weight>
void pack_shape(Shape sh, int groups, int og, int ig, const Weight& weight, WinogradWeights& out) {
    out.groups = groups;
    out.out_per_group = og;
    out.in_per_group = ig;
    out.taps = sh.ty == 2 ? sh.k() * sh.k() : sh.k();
    out.r = sh.r;
    out.s = sh.s;
    out.ty = sh.ty;
    out.m = tile_of(sh, og, ig);
    out.odd = sh.odd;
    const int r = sh.r, s = sh.s, sy = sh.sy(), ry = sh.ry(), m = out.m,
              points = points_of(r, sh.ty, m), classes = sh.classes();
    const int kh = sh.ty == 2 ? sh.k() : 1, kw = sh.k();
    auto w = [&](int g, int o, int ky, int kx, int i) {
        return ky < kh && kx < kw ? weight(g, o, ky, kx, i) : 0.0;
    };
    out.forward_tiles = static_cast<int>(ceil_div(og, kMr));
    out.backward_tiles = static_cast<int>(ceil_div(ig, kMr));
    out.forward_class_floats = int64_t(groups) * points * out.forward_tiles * ig * kMr;
    const Wanted want = wanted(sh, groups, og, ig);
    // dX, point by point: the tap classes whose points are not zero by the padding alone (an
    // odd kernel's last class misses a tap row or column: 25 of 36 class points stay at 3x3).
    double kf[9], kb[9], u[36];
    out.backward_classes.assign(size_t(points), {});
    for (int cy = 0; cy < sy; ++cy)
        for (int cx = 0; cx < s; ++cx) {
            for (int a = 0; a < ry; ++a)
                for (int b = 0; b < r; ++b)
                    kb[a * r + b] = cy + sy * (ry - 1 - a) < kh && cx + s * (r - 1 - b) < kw
                                        ? 1.0 + a * r + b
                                        : 0.0;
            kernel_points(r, sh.ty, m, kb, u, true);  // |G|: no cancellation
            for (int pt = 0; pt < points; ++pt)
                if (u[pt] != 0.0) out.backward_classes[pt].push_back(cy * s + cx);
        }
    out.backward_point_offset.assign(size_t(points) + 1, 0);
    for (int pt = 0; pt < points; ++pt)
        out.backward_point_offset[pt + 1] =
            out.backward_point_offset[pt] +
            int64_t(out.backward_tiles) * out.backward_classes[pt].size() * og * kMr;
    const int64_t backward_group = out.backward_point_offset[points];
    out.forward.assign(want.forward ? size_t(classes * out.forward_class_floats) : 0, 0.f);
    out.backward.assign(want.backward ? size_t(groups * backward_group) : 0, 0.f);
    for (int cy = 0; cy < sy; ++cy)
        for (int cx = 0; cx < s; ++cx) {
            const int cls = cy * s + cx;
            for (int g = 0; g < groups; ++g)
                for (int o = 0; o < og; ++o)
                    for (int i = 0; i < ig; ++i) {
                        // The forward's class taps in order; dX's turned (see backward_data).
                        for (int a = 0; a < ry; ++a)
                            for (int b = 0; b < r; ++b) {
                                kf[a * r + b] = w(g, o, cy + sy * a, cx + s * b, i);
                                kb[a * r + b] =
                                    w(g, o, cy + sy * (ry - 1 - a), cx + s * (r - 1 - b), i);
                            }
                        kernel_points(r, sh.ty, m, kf, u);
                        for (int pt = 0; pt < points && want.forward; ++pt) {
                            const int64_t at =
                                cls * out.forward_class_floats +
                                ((int64_t(g) * points + pt) * out.forward_tiles + o / kMr) * ig *
                                    kMr +
                                int64_t(i) * kMr + o % kMr;
                            out.forward[size_t(at)] = static_cast<float>(u[pt]);
                        }
                        kernel_points(r, sh.ty, m, kb, u);
                        for (int pt = 0; pt < points && want.backward; ++pt) {
                            // [g][point][in tile][the point's classes x ocl][kMr]
                            const std::vector<int>& cl = out.backward_classes[pt];
                            const auto k = std::find(cl.begin(), cl.end(), cls) - cl.begin();
                            if (k == int64_t(cl.size())) continue;  // zero by the padding
                            const int64_t at =
                                g * backward_group + out.backward_point_offset[pt] +
                                ((int64_t(i / kMr) * int64_t(cl.size()) + k) * og + o) * kMr +
                                i % kMr;
                            out.backward[size_t(at)] = static_cast<float>(u[pt]);
                        }
                    }
        }
}
}  // namespace

bool winograd_weights_wanted(const detail::PreparedWeights& pw) {
    const Wanted w = wanted(shape_of(pw.kernel_h, pw.kernel_w), pw.groups,
                            int64_t(pw.out_channels) / pw.groups, pw.in_per_group);
    return w.forward || w.backward;
}

void pack_winograd_weights(const detail::PreparedWeights& pw, WinogradWeights& out) {
    const int og = static_cast<int>(pw.out_channels / pw.groups),
              ig = static_cast<int>(pw.in_per_group);
    const int64_t kh = pw.kernel_h, kw = pw.kernel_w;
    pack_shape(
        shape_of(kh, kw), static_cast<int>(pw.groups), og, ig,
        [&](int g, int o, int ky, int kx, int i) {
            return pw.values[((int64_t(g) * og + o) * kh * kw + ky * kw + kx) * ig + i];
        },
        out);
}

bool winograd_odd_wanted(int groups, int og, int ig, int64_t kernel_h, int64_t kernel_w,
                         int stride) {
    return kernel_h == kernel_w && stride >= 2 && kernel_h == 2 * stride - 1 &&
           wanted(Shape{2, stride, 2, true}, groups, og, ig).backward;
}

void pack_winograd_odd(int groups, int og, int ig, int stride, const float* weights,
                       WinogradWeights& out) {
    const int k = 2 * stride - 1;
    pack_shape(
        Shape{2, stride, 2, true}, groups, og, ig,
        [&](int g, int o, int ky, int kx, int i) {
            return double(
                weights[((int64_t(g) * k + ky) * k + kx) * og * ig + int64_t(o) * ig + i]);
        },
        out);
}

// The layer's output tiles over `images` h x wd output boxes.
int64_t tile_count(const WinogradWeights& w, int64_t images, int64_t h, int64_t wd) {
    return images * ceil_div(h, w.ty == 2 ? w.m : 1) * ceil_div(wd, w.m);
}

// Whether a dispatch of `images` h x wd output boxes has tiles enough for the layer's channels
// (kMinNarrowTiles below kMinChannels either way).
bool enough_tiles(const WinogradWeights& w, int64_t images, int64_t h, int64_t wd) {
    return std::min(w.in_per_group, w.out_per_group) >= kMinChannels ||
           tile_count(w, images, h, wd) >= kMinNarrowTiles;
}

bool forward_winograd_fits(const ConvtParams& p, const WinogradWeights& w) {
    return !w.forward.empty() && dispatch_fits(p, Shape{w.r, w.s, w.ty}) &&
           enough_tiles(w, p.num_images, p.clip_h, p.clip_w);
}

bool backward_data_winograd_fits(const ConvtParams& p, const WinogradWeights& w) {
    const Shape sh{w.r, w.s, w.ty, w.odd};
    if (w.backward.empty() || !dispatch_fits(p, sh) ||
        !enough_tiles(w, p.num_images, p.src_h, p.src_w))
        return false;
    // Deep packs stream once a block: with few tiles (dcgan_g2 at N = 1: 16) the direct GEMM wins.
    if (int64_t(w.backward.size()) / w.groups <= kDeepWeightFloats) return true;
    return tile_count(w, p.num_images, p.src_h, p.src_w) >= kMinDeepTiles;
}

bool forward_winograd(const ConvtParams& p, const WinogradWeights& w,
                      const std::vector<float>& bias, const std::vector<float>& slopes,
                      const void* src, void* dst) {
    const Shape sh{w.r, w.s, w.ty};
    std::vector<Correlation> phases;
    for (int ry = 0; ry < sh.sy(); ++ry)
        for (int rx = 0; rx < w.s; ++rx) {
            Correlation c;
            int cy = 0, cx = 0;
            if (!forward_phase(p, sh, ry, rx, c, cy, cx)) continue;
            c.sources[0].base = p.src_base;
            c.in = src;
            c.in_type = p.src_type;
            c.out = dst;
            c.out_type = p.dst_type;
            c.out_base = dst_index(p, 0, 0, 0, 0) + ry * p.dst_stride_h + rx * p.dst_stride_w;
            c.m = w.m;
            c.tiles = w.forward_tiles;
            c.u = w.forward.data() + (cy * w.s + cx) * w.forward_class_floats;
            c.bias = bias.data();
            c.slopes = slopes.empty() ? nullptr : slopes.data();
            c.neuron = static_cast<NeuronType>(p.neuron);
            c.na = p.neuron_a;
            c.nb = p.neuron_b;
            c.nc = p.neuron_c;
            phases.push_back(std::move(c));
        }
    return correlate(phases);
}

bool backward_data_winograd(const ConvtParams& p, const WinogradWeights& w, const void* dy,
                            void* dx) {
    // dX pixel iy reads dY row iy * s - first tap - dilation * k for tap k. Tap k = c + s j of
    // class c reads dY phase par = (-first tap - c) mod s at phase row iy - j + floor((-first tap
    // - c) / s); turned (point a = r - 1 - j), a correlation over that phase plane.
    // One kernel row (ty = 1): one tap down the rows, at stride 1. An odd kernel reads as a
    // 2s-tap one (its missing taps' weights zero, their points skipped).
    const Shape sh{w.r, w.s, w.ty, w.odd};
    const int s = w.s, r = w.r, sy = sh.sy(), ry = sh.ry();
    const int64_t dil_y = s == 1 && sh.ty == 2 ? p.dilation_y : 1;
    const int64_t dil_x = s == 1 ? p.dilation_x : 1;
    Correlation c;
    const int64_t grad = dst_index(p, 0, 0, 0, 0);  // dY's element (0, 0, 0, 0)
    for (int cy = 0; cy < sy; ++cy)
        for (int cx = 0; cx < s; ++cx) {
            const int64_t ey = -int64_t(p.first_tap_y) - cy, ex = -int64_t(p.first_tap_x) - cx;
            const int64_t py = pos_mod(ey, sy), px = pos_mod(ex, s);
            c.sources.push_back(Source{
                grad + py * p.dst_stride_h + px * p.dst_stride_w, int64_t(sy) * p.dst_stride_h,
                int64_t(s) * p.dst_stride_w, std::max<int64_t>(0, ceil_div(p.clip_h - py, sy)),
                std::max<int64_t>(0, ceil_div(p.clip_w - px, s)),
                floor_div(ey, sy) - (ry - 1) * dil_y, floor_div(ex, s) - (r - 1) * dil_x});
        }
    c.in = dy;
    c.in_type = p.dst_type;
    c.in_n = p.dst_stride_n;
    c.in_c = p.dst_stride_c;
    c.in_group = int64_t(p.out_per_group) * p.dst_stride_c;
    c.out = dx;
    c.out_type = p.src_type;
    c.out_base = p.src_base;
    c.out_n = p.src_stride_n;
    c.out_c = p.src_stride_c;
    c.out_h = p.src_stride_h;
    c.out_w = p.src_stride_w;
    c.oh = p.src_h;
    c.ow = p.src_w;
    c.out_group = int64_t(p.in_per_group) * p.src_stride_c;
    c.dy = dil_y;
    c.dx = dil_x;
    c.images = p.num_images;
    c.r = r;
    c.ty = sh.ty;
    c.m = w.m;
    c.groups = p.groups;
    c.channels = p.out_per_group;
    c.depth = sh.classes() * p.out_per_group;
    c.outs = p.in_per_group;
    c.tiles = w.backward_tiles;
    c.u = w.backward.data();
    c.point_sources = &w.backward_classes;
    c.point_offset = w.backward_point_offset.data();
    return correlate({c});
}

bool backward_weights_winograd_fits(const ConvtParams& p) {
    const int64_t points = int64_t(points_of(3)) * p.groups * ceil_div(p.out_per_group, kMr) * kMr *
                           ceil_div(p.in_per_group, kNr) * kNr;
    // float32 alone: weight_taps reads the tensors in place.
    return dispatch_fits(p, Shape{3, 1, 2}) && p.src_type == CONVT_TYPE_F32 &&
           p.dst_type == CONVT_TYPE_F32 && p.in_per_group >= kMinWeightGradientChannels &&
           p.out_per_group >= kMinWeightGradientChannels && points <= kMaxPartialFloats;
}

bool backward_weights_winograd(const ConvtParams& p, const void* x, const void* dy,
                               const detail::GradientOutput& out) {
    Correlation c;
    int cy = 0, cx = 0;
    if (!forward_phase(p, Shape{3, 1, 2}, 0, 0, c, cy, cx)) return false;
    c.m = 2;  // dW's transforms are F(2x2, 3x3)'s
    c.sources[0].base = p.src_base;
    c.in = x;
    // Written only when every weight is finite: the transforms subtract, and Inf - Inf would
    // make NaN where the exact sum has Inf.
    const int64_t count = int64_t(p.groups) * p.out_per_group * 9 * p.in_per_group;
    std::vector<float> dw(static_cast<size_t>(count));
    weight_taps(c, static_cast<const float*>(dy) + dst_index(p, 0, 0, 0, 0), dw.data());
    if (!all_finite(dw.data(), count)) return false;
    auto* to = static_cast<float*>(out.weights);
    for (int64_t i = 0; i < count; ++i) to[i] = out.accumulate ? to[i] + dw[i] : dw[i];
    return true;
}

}  // namespace convt::cpu
