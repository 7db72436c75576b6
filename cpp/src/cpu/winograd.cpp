#include "winograd.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "geometry.h"
#include "micro_kernel.h"
#include "neuron.h"
#include "row_shuffles.h"
#include "thread_pool.h"
#include "transpose.h"

namespace convt::cpu {
namespace {

// Below this many channels either way the transforms cost about what the GEMMs save (one
// thread, 64 x 64 images: forward and dX gain 16% at 16 channels, 26-34% at 24-64; dW breaks
// even at 32-48 channels, loses 11-18% with dilation 2, gains 10-23% at 64-128).
constexpr int kMinChannels = 16;
constexpr int kMinWeightGradientChannels = 64;
// A block's transformed inputs (16 points x depth x columns floats) stay within this many
// floats, L2-resident while every register tile of outputs runs over them.
constexpr int64_t kBlockFloats = 96 * 1024;
constexpr int kMaxColumns = 256;
// dW: tiles split into at most kRanges ranges of at least kTilesPerRange, their partial sums
// of the points (16/9 of the weights each) kept under kMaxPartialFloats in all.
constexpr int64_t kTilesPerRange = 256;
constexpr int64_t kRanges = 8;
constexpr int64_t kMaxPartialFloats = 4 * 1024 * 1024;

// G g G^T of one 3x3 kernel g[a][b] (a the row): the kernel at the 16 points.
void kernel_points(const double g[3][3], double u[kWinogradPoints]) {
    double t[4][3];
    for (int b = 0; b < 3; ++b) {
        t[0][b] = g[0][b];
        t[1][b] = 0.5 * (g[0][b] + g[1][b] + g[2][b]);
        t[2][b] = 0.5 * (g[0][b] - g[1][b] + g[2][b]);
        t[3][b] = g[2][b];
    }
    for (int a = 0; a < 4; ++a) {
        u[a * 4 + 0] = t[a][0];
        u[a * 4 + 1] = 0.5 * (t[a][0] + t[a][1] + t[a][2]);
        u[a * 4 + 2] = 0.5 * (t[a][0] - t[a][1] + t[a][2]);
        u[a * 4 + 3] = t[a][2];
    }
}

void pack_points(const detail::PreparedWeights& pw, const PackedShape& s, bool backward, int tiles,
                 std::vector<float>& out) {
    const int og = s.out_per_group, ig = s.in_per_group, depth = backward ? og : ig;
    out.assign(size_t(s.groups) * kWinogradPoints * tiles * depth * kMr, 0.f);
    double k[3][3], u[kWinogradPoints];
    for (int g = 0; g < s.groups; ++g)
        for (int ocl = 0; ocl < og; ++ocl)
            for (int icl = 0; icl < ig; ++icl) {
                for (int a = 0; a < 3; ++a)
                    for (int b = 0; b < 3; ++b) {
                        const double v =
                            pw.values[((int64_t(g) * og + ocl) * 9 + a * 3 + b) * ig + icl];
                        (backward ? k[2 - a][2 - b] : k[a][b]) = v;  // dX turns the kernel
                    }
                kernel_points(k, u);
                const int row = backward ? icl : ocl, d = backward ? ocl : icl;
                for (int pt = 0; pt < kWinogradPoints; ++pt) {
                    const int64_t at =
                        ((int64_t(g) * kWinogradPoints + pt) * tiles + row / kMr) * depth + d;
                    out[size_t(at * kMr + row % kMr)] = static_cast<float>(u[pt]);
                }
            }
}

// out[n][o][Y][X] = sum over input channels i and a, b < 3 of K[o][i][a][b] *
// in[n][i][Y + y0 + dy * a][X + x0 + dx * b] (zero outside ih x iw), for Y < oh and X < ow, in
// each group; then, for the forward, the bias and the neuron. Outputs come in 2x2 tiles at rows
// Y, Y + dy and columns X, X + dx: tile row R has Y = (R % nby) * 2dy + R / nby, columns alike,
// so a run of tile columns within one residue mod dx reads its patches at a fixed step.
struct Correlation {
    const float* in;
    int64_t in_n, in_c, in_h, in_w, ih, iw, in_group;
    float* out;
    int64_t out_n, out_c, out_h, out_w, oh, ow, out_group;
    int64_t y0, x0, dy, dx;
    int64_t images;
    int groups, depth, outs, tiles;
    const float* u;
    const float* bias = nullptr;    // [groups * outs], forward only
    const float* slopes = nullptr;  // PReLU
    NeuronType neuron = NeuronType::None;
    float na = 0.f, nb = 0.f, nc = 0.f;
};

// A run of tiles in one tile row and one column residue, at columns [col, col + len) of a block.
struct Segment2 {
    int64_t n, y, x;  // image, and the top-left output of the first tile
    int len, col;
};

// The transforms run in loops over a run of tiles that the compiler vectorizes; everything from
// here to correlate() is built twice on x86, for AVX2 (picked by use_avx2()) and the baseline.
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

// B^T along patch row j of n tiles: h[i * len + k] from d(k, t) = r[k * 2DX + t * DX], t < 4,
// every read inside the row; the compile-time DX of a contiguous row lets the compiler use
// shuffles (the loads come straight from the tensor, which keeps them clear of fresh stores).
template <int DX>
CONVT_INLINE void row_bt_run(const float* __restrict r, int64_t n, int len, float* __restrict h) {
    CONVT_IVDEP
    for (int64_t k = 0; k < n; ++k) {
        const float d0 = r[k * 2 * DX], d1 = r[k * 2 * DX + DX], d2 = r[k * 2 * DX + 2 * DX],
                    d3 = r[k * 2 * DX + 3 * DX];
        h[k] = d0 - d2;
        h[len + k] = d1 + d2;
        h[2 * len + k] = d2 - d1;
        h[3 * len + k] = d1 - d3;
    }
}

// B^T along row `row` (elements `step` apart, iw of them) for the len tiles whose patches start
// at column x + 2dx k: h[i * len + k], zeros read outside [0, iw).
CONVT_INLINE void row_bt(const float* row, int64_t step, int64_t iw, int64_t x, int64_t dx, int len,
                         float* h) {
    // Tiles k in [lo, hi) read inside the row; the ends go one by one.
    const int64_t span = 2 * dx;
    const int64_t lo = std::clamp<int64_t>(ceil_div(-x, span), 0, len);
    const int64_t hi = std::clamp<int64_t>(ceil_div(iw - 3 * dx - x, span), lo, len);
    auto edge = [&](int64_t k) {
        float d[4];
        for (int t = 0; t < 4; ++t) {
            const int64_t xt = x + span * k + dx * t;
            d[t] = xt >= 0 && xt < iw ? row[xt * step] : 0.f;
        }
        h[k] = d[0] - d[2];
        h[len + k] = d[1] + d[2];
        h[2 * len + k] = d[2] - d[1];
        h[3 * len + k] = d[1] - d[3];
    };
    for (int64_t k = 0; k < lo; ++k) edge(k);
    const float* r = row + (x + span * lo) * step;
    if (step == 1 && dx == 1) {
        row_bt_run<1>(r, hi - lo, len, h + lo);
    } else if (step == 1 && dx == 2) {
        row_bt_run<2>(r, hi - lo, len, h + lo);
    } else {
        for (int64_t k = lo; k < hi; ++k) edge(k);
    }
    for (int64_t k = hi; k < len; ++k) edge(k);
}

// B^T d B of the segment's patches, channel by channel, into v[point][channel][col + k]
// (`columns` apart per channel).
CONVT_INLINE void transform_inputs_body(const Correlation& c, int g, const Segment2& s, int columns,
                                        float* v) {
    thread_local std::vector<float> hb;
    const int len = s.len;
    hb.resize(size_t(16) * len);
    float* __restrict h = hb.data();  // [j][i][k]: B^T along patch row j
    const int64_t plane_step = int64_t(c.depth) * columns;
    for (int ch = 0; ch < c.depth; ++ch) {
        const float* plane = c.in + s.n * c.in_n + g * c.in_group + ch * c.in_c;
        for (int j = 0; j < 4; ++j) {
            float* hj = h + 4 * j * len;
            const int64_t y = s.y + c.y0 + c.dy * j;
            if (y < 0 || y >= c.ih)
                std::fill(hj, hj + 4 * len, 0.f);
            else
                row_bt(plane + y * c.in_h, c.in_w, c.iw, s.x + c.x0, c.dx, len, hj);
        }
        float* vc = v + int64_t(ch) * columns + s.col;
        for (int i = 0; i < 4; ++i) {
            const float* __restrict r0 = h + i * len, * __restrict r1 = r0 + 4 * len, * __restrict r2 = r0 + 8 * len, * __restrict r3 = r0 + 12 * len;
            float* __restrict v0 = vc + i * plane_step, * __restrict v1 = v0 + 4 * plane_step, * __restrict v2 = v0 + 8 * plane_step, * __restrict v3 = v0 + 12 * plane_step;
            CONVT_IVDEP
            for (int k = 0; k < len; ++k) {
                v0[k] = r0[k] - r2[k];
                v1[k] = r1[k] + r2[k];
                v2[k] = r2[k] - r1[k];
                v3[k] = r1[k] - r3[k];
            }
        }
    }
}

// The largest exponent field among x[0..n): 0x7f800000 when one is Inf or NaN.
CONVT_INLINE uint32_t worst_exponent(const float* __restrict x, int n, uint32_t worst) {
    for (int k = 0; k < n; ++k) {
        uint32_t bits;
        std::memcpy(&bits, x + k, sizeof bits);
        const uint32_t e = bits & 0x7f800000u;
        worst = worst > e ? worst : e;
    }
    return worst;
}

// One output row of a segment: q0[k] at column x + 2dx k and q1[k] at x + 2dx k + dx (those
// inside [0, ow)). Returns the worst exponent seen before the neuron.
CONVT_INLINE uint32_t store_row(const Correlation& c, float* row, int64_t x, int len, float* q0,
                                float* q1, float slope) {
    const int64_t span = 2 * c.dx;
    const int n0 = static_cast<int>(std::clamp<int64_t>(ceil_div(c.ow - x, span), 0, len));
    const int n1 = static_cast<int>(std::clamp<int64_t>(ceil_div(c.ow - x - c.dx, span), 0, len));
    const uint32_t worst = worst_exponent(q1, n1, worst_exponent(q0, n0, 0));
    if (c.neuron != NeuronType::None)
        for (int k = 0; k < len; ++k) {
            q0[k] = apply_neuron(c.neuron, q0[k], c.na, c.nb, c.nc, slope);
            q1[k] = apply_neuron(c.neuron, q1[k], c.na, c.nb, c.nc, slope);
        }
    if (c.out_w == 1 && c.dx == 1 && n1 == len) {
        interleave2(q0, q1, 2 * int64_t(len), row + x);
    } else {
        for (int k = 0; k < n0; ++k) row[(x + span * k) * c.out_w] = q0[k];
        for (int k = 0; k < n1; ++k) row[(x + span * k + c.dx) * c.out_w] = q1[k];
    }
    return worst;
}

// A^T m A of output channel o, m[point][k] its 16 point rows at the segment's columns, plus the
// bias; stored with the neuron. Returns the worst exponent stored.
CONVT_INLINE uint32_t transform_outputs_body(const Correlation& c, int g, const Segment2& s, int o,
                                             const float* const* m) {
    thread_local std::vector<float> q;
    const int len = s.len;
    if (s.y >= c.oh) return 0;  // a tile row past the last output row (dilation > 1)
    q.resize(size_t(4) * len);
    float* __restrict q00 = q.data(), * __restrict q01 = q00 + len, * __restrict q10 = q01 + len, * __restrict q11 = q10 + len;
    const int64_t oc = int64_t(g) * c.outs + o;
    const float bias = c.bias ? c.bias[oc] : 0.f, slope = c.slopes ? c.slopes[oc] : 0.f;
    const float* __restrict m0 = m[0], * __restrict m1 = m[1], * __restrict m2 = m[2], * __restrict m3 = m[3], * __restrict m4 = m[4], * __restrict m5 = m[5], * __restrict m6 = m[6], * __restrict m7 = m[7], * __restrict m8 = m[8], * __restrict m9 = m[9], * __restrict m10 = m[10], * __restrict m11 = m[11], * __restrict m12 = m[12], * __restrict m13 = m[13], * __restrict m14 = m[14], * __restrict m15 = m[15];
    CONVT_IVDEP
    for (int k = 0; k < len; ++k) {
        const float a0 = m0[k] + m4[k] + m8[k], a1 = m1[k] + m5[k] + m9[k],
                    a2 = m2[k] + m6[k] + m10[k], a3 = m3[k] + m7[k] + m11[k];
        const float b0 = m4[k] - m8[k] - m12[k], b1 = m5[k] - m9[k] - m13[k],
                    b2 = m6[k] - m10[k] - m14[k], b3 = m7[k] - m11[k] - m15[k];
        q00[k] = bias + (a0 + a1 + a2);
        q01[k] = bias + (a1 - a2 - a3);
        q10[k] = bias + (b0 + b1 + b2);
        q11[k] = bias + (b1 - b2 - b3);
    }
    float* plane = c.out + s.n * c.out_n + g * c.out_group + o * c.out_c;
    uint32_t worst = store_row(c, plane + s.y * c.out_h, s.x, len, q00, q01, slope);
    if (s.y + c.dy < c.oh)
        worst = std::max(worst,
                         store_row(c, plane + (s.y + c.dy) * c.out_h, s.x, len, q10, q11, slope));
    return worst;
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

// A e A^T of the segment's 2x2 tiles of dY (c's output box; zeros past it) for output
// channels [o0, o1), into e[point][o - o0][col + k] (`columns` apart per channel): the dW's
// transform of the output gradient (A e A^T, B^T d B and G^T m G: F(2x2, 3x3) transposed).
CONVT_INLINE void transform_gradients_body(const Correlation& c, const float* dy, int g,
                                           const Segment2& s, int o0, int o1, int columns,
                                           float* e) {
    thread_local std::vector<float> tb;
    const int len = s.len;
    tb.resize(size_t(8) * len);
    float* __restrict t = tb.data();  // [r][b][k]: A along tile row r
    const int64_t span = 2 * c.dx;
    const int n0 = static_cast<int>(std::clamp<int64_t>(ceil_div(c.ow - s.x, span), 0, len));
    const int n1 = static_cast<int>(std::clamp<int64_t>(ceil_div(c.ow - s.x - c.dx, span), 0, len));
    const int64_t point_step = int64_t(o1 - o0) * columns;
    for (int o = o0; o < o1; ++o) {
        const float* plane = dy + s.n * c.out_n + g * c.out_group + o * c.out_c;
        for (int r = 0; r < 2; ++r) {
            float* __restrict tr = t + 4 * r * len;
            const int64_t y = s.y + r * c.dy;
            if (y >= c.oh) {
                std::fill(tr, tr + 4 * len, 0.f);
                continue;
            }
            const float* row = plane + y * c.out_h + s.x * c.out_w;
            float* __restrict e0 = tr + 2 * len;  // the taps, then A in place
            float* __restrict e1 = tr + 3 * len;
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
                const float a = e0[k], b = e1[k];
                tr[k] = a;
                tr[len + k] = a + b;
                tr[2 * len + k] = a - b;
                tr[3 * len + k] = -b;
            }
        }
        float* ec = e + int64_t(o - o0) * columns + s.col;
        for (int b = 0; b < 4; ++b) {
            const float* __restrict r0 = t + b * len, * __restrict r1 = r0 + 4 * len;
            float* __restrict p0 = ec + b * point_step, * __restrict p1 = p0 + 4 * point_step, * __restrict p2 = p0 + 8 * point_step, * __restrict p3 = p0 + 12 * point_step;
            CONVT_IVDEP
            for (int k = 0; k < len; ++k) {
                p0[k] = r0[k];
                p1[k] = r0[k] + r1[k];
                p2[k] = r0[k] - r1[k];
                p3[k] = -r1[k];
            }
        }
    }
}

using InputTransform = void (*)(const Correlation&, int, const Segment2&, int, float*);
using OutputTransform = uint32_t (*)(const Correlation&, int, const Segment2&, int,
                                     const float* const*);
using GradientTransform = void (*)(const Correlation&, const float*, int, const Segment2&, int, int,
                                   int, float*);

#define CONVT_WINOGRAD_TRANSFORMS(suffix, attr)                                              \
    attr void transform_inputs_##suffix(const Correlation& c, int g, const Segment2& s,      \
                                        int columns, float* v) {                             \
        transform_inputs_body(c, g, s, columns, v);                                          \
    }                                                                                        \
    attr uint32_t transform_outputs_##suffix(const Correlation& c, int g, const Segment2& s, \
                                             int o, const float* const* m) {                 \
        return transform_outputs_body(c, g, s, o, m);                                        \
    }                                                                                        \
    attr void transform_gradients_##suffix(const Correlation& c, const float* dy, int g,     \
                                           const Segment2& s, int o0, int o1, int columns,   \
                                           float* e) {                                       \
        transform_gradients_body(c, dy, g, s, o0, o1, columns, e);                           \
    }

CONVT_WINOGRAD_TRANSFORMS(base, )
#ifdef CONVT_WINOGRAD_AVX2
CONVT_WINOGRAD_TRANSFORMS(avx2, __attribute__((target("avx2,fma"))))
#endif

// The 2x2 output tiles of a Correlation's box in (image, tile row, tile column) order, and
// the runs (segments) of a range of them.
struct TileGrid {
    int64_t nby, nbx, th, tw, total;
    explicit TileGrid(const Correlation& c)
        : nby(ceil_div(c.oh, 2 * c.dy)),
          nbx(ceil_div(c.ow, 2 * c.dx)),
          th(c.dy * nby),
          tw(c.dx * nbx),
          total(c.images * th * tw) {}
    void segments(const Correlation& c, int64_t first, int real, std::vector<Segment2>& out) const {
        out.clear();
        for (int64_t t = first; t < first + real;) {
            const int64_t n = t / (th * tw), r = (t / tw) % th, col = t % tw;
            const int64_t cr = col / nbx, cb = col % nbx;
            const int len = static_cast<int>(std::min<int64_t>(first + real - t, nbx - cb));
            out.push_back({n, (r % nby) * 2 * c.dy + r / nby, cb * 2 * c.dx + cr, len,
                           static_cast<int>(t - first)});
            t += len;
        }
    }
};

// The transforms' functions for this CPU.
struct Transforms {
    InputTransform inputs = transform_inputs_base;
    OutputTransform outputs = transform_outputs_base;
    GradientTransform gradients = transform_gradients_base;
    Transforms() {
#ifdef CONVT_WINOGRAD_AVX2
        if (use_avx2()) {
            inputs = transform_inputs_avx2;
            outputs = transform_outputs_avx2;
            gradients = transform_gradients_avx2;
        }
#endif
    }
};

void note_worst(std::atomic<uint32_t>& worst, uint32_t local) {
    uint32_t seen = worst.load(std::memory_order_relaxed);
    while (local > seen && !worst.compare_exchange_weak(seen, local)) {
    }
}

bool correlate(const Correlation& c) {
    const TileGrid grid(c);
    const int64_t total = grid.total;
    if (total == 0) return true;
    // Columns a block: as many as keep its transformed inputs L2-resident, fewer when that
    // would leave a thread with under four blocks.
    const int threads = ThreadPool::instance().num_threads();
    int64_t columns = std::clamp<int64_t>(kBlockFloats / (kWinogradPoints * c.depth) / kNr * kNr,
                                          kNr, kMaxColumns);
    while (columns > kNr && ceil_div(total, columns) * c.groups < 4 * threads) columns -= kNr;
    const int cols = static_cast<int>(columns);
    const int64_t blocks = ceil_div(total, cols);
    const IndirectKernel kernel = indirect_kernel();
    const Transforms tf;
    std::atomic<uint32_t> worst{0};
    ThreadPool::instance().parallel_for(blocks * c.groups, [&](int64_t task) {
        const int g = static_cast<int>(task / blocks);
        const int64_t first = (task % blocks) * cols;
        const int real = static_cast<int>(std::min<int64_t>(cols, total - first));
        thread_local std::vector<float> v, m;
        thread_local std::vector<int64_t> rows;
        thread_local std::vector<Segment2> segments;
        v.resize(size_t(kWinogradPoints) * c.depth * cols);
        m.resize(size_t(kWinogradPoints) * kMr * cols);
        rows.resize(size_t(c.depth));
        for (int p = 0; p < c.depth; ++p) rows[p] = int64_t(p) * cols;
        grid.segments(c, first, real, segments);
        if (real < cols)  // the last block's spare columns: zeros, never stored
            for (int pt = 0; pt < kWinogradPoints; ++pt)
                for (int ch = 0; ch < c.depth; ++ch)
                    std::fill_n(v.data() + (int64_t(pt) * c.depth + ch) * cols + real, cols - real,
                                0.f);
        for (const Segment2& s : segments) tf.inputs(c, g, s, cols, v.data());
        uint32_t local = 0;
        const int panels = cols / kNr;
        for (int ot = 0; ot < c.tiles; ++ot) {
            for (int pt = 0; pt < kWinogradPoints; ++pt) {
                const float* a =
                    c.u + ((int64_t(g) * kWinogradPoints + pt) * c.tiles + ot) * c.depth * kMr;
                const float* b = v.data() + int64_t(pt) * c.depth * cols;
                float* mp = m.data() + int64_t(pt) * kMr * cols;
                for (int jp = 0; jp < panels; ++jp)
                    kernel(a, rows.data(), c.depth, b + jp * kNr, mp + jp * kNr, cols, true);
            }
            for (int i = 0; i < kMr && ot * kMr + i < c.outs; ++i)
                for (const Segment2& s : segments) {
                    const float* mr[kWinogradPoints];
                    for (int pt = 0; pt < kWinogradPoints; ++pt)
                        mr[pt] = m.data() + (int64_t(pt) * kMr + i) * cols + s.col;
                    local = std::max(local, tf.outputs(c, g, s, ot * kMr + i, mr));
                }
        }
        note_worst(worst, local);
    });
    return worst.load() != 0x7f800000u;
}

// The forward's correlation (source -> destination clip) without its tensors or weights.
Correlation forward_geometry(const ConvtParams& p) {
    Correlation c{};
    c.in_n = p.src_stride_n;
    c.in_c = p.src_stride_c;
    c.in_h = p.src_stride_h;
    c.in_w = p.src_stride_w;
    c.ih = p.src_h;
    c.iw = p.src_w;
    c.in_group = int64_t(p.in_per_group) * p.src_stride_c;
    c.out_n = p.dst_stride_n;
    c.out_c = p.dst_stride_c;
    c.out_h = p.dst_stride_h;
    c.out_w = p.dst_stride_w;
    c.oh = p.clip_h;
    c.ow = p.clip_w;
    c.out_group = int64_t(p.out_per_group) * p.dst_stride_c;
    c.y0 = p.first_tap_y;
    c.x0 = p.first_tap_x;
    c.dy = p.dilation_y;
    c.dx = p.dilation_x;
    c.images = p.num_images;
    c.groups = p.groups;
    c.depth = p.in_per_group;
    c.outs = p.out_per_group;
    return c;
}

// Element offset of destination clip pixel (0, 0) of image 0, channel 0.
int64_t clip_origin(const ConvtParams& p) {
    return p.dst_base + p.clip_y * p.dst_stride_h + p.clip_x * p.dst_stride_w;
}

// G^T m G of the 16 points m[a * 4 + b]: the 3x3 weight gradient w[ky * 3 + kx].
void points_to_kernel(const float m[kWinogradPoints], float w[9]) {
    float q[3][4];
    for (int b = 0; b < 4; ++b) {
        const float s = 0.5f * (m[4 + b] + m[8 + b]);
        q[0][b] = m[b] + s;
        q[1][b] = 0.5f * (m[4 + b] - m[8 + b]);
        q[2][b] = s + m[12 + b];
    }
    for (int r = 0; r < 3; ++r) {
        const float s = 0.5f * (q[r][1] + q[r][2]);
        w[r * 3 + 0] = q[r][0] + s;
        w[r * 3 + 1] = 0.5f * (q[r][1] - q[r][2]);
        w[r * 3 + 2] = s + q[r][3];
    }
}

}  // namespace

bool winograd_weights_wanted(const detail::PreparedWeights& pw) {
    const int64_t og = int64_t(pw.out_channels) / pw.groups;
    return pw.kernel_h == 3 && pw.kernel_w == 3 && pw.in_per_group >= kMinChannels &&
           og >= kMinChannels;
}

void pack_winograd_weights(const detail::PreparedWeights& pw, WinogradWeights& out) {
    out.take_shape(pw);
    out.forward_tiles = static_cast<int>(ceil_div(out.out_per_group, kMr));
    out.backward_tiles = static_cast<int>(ceil_div(out.in_per_group, kMr));
    pack_points(pw, out, false, out.forward_tiles, out.forward);
    pack_points(pw, out, true, out.backward_tiles, out.backward);
}

bool winograd_fits(const ConvtParams& p, const WinogradWeights& w) {
    return !w.forward.empty() && p.kernel_h == 3 && p.kernel_w == 3 && p.stride_x == 1 &&
           p.stride_y == 1 && p.src_type == CONVT_TYPE_F32 && p.dst_type == CONVT_TYPE_F32 &&
           !p.accumulate_half;
}

bool forward_winograd(const ConvtParams& p, const WinogradWeights& w,
                      const std::vector<float>& bias, const std::vector<float>& slopes,
                      const void* src, void* dst) {
    Correlation c = forward_geometry(p);
    c.in = static_cast<const float*>(src) + p.src_base;
    c.out = static_cast<float*>(dst) + clip_origin(p);
    c.tiles = w.forward_tiles;
    c.u = w.forward.data();
    c.bias = bias.data();
    c.slopes = slopes.empty() ? nullptr : slopes.data();
    c.neuron = static_cast<NeuronType>(p.neuron);
    c.na = p.neuron_a;
    c.nb = p.neuron_b;
    c.nc = p.neuron_c;
    return correlate(c);
}

bool backward_data_winograd(const ConvtParams& p, const WinogradWeights& w, const void* dy,
                            void* dx) {
    Correlation c{};
    c.in = static_cast<const float*>(dy) + clip_origin(p);
    c.in_n = p.dst_stride_n;
    c.in_c = p.dst_stride_c;
    c.in_h = p.dst_stride_h;
    c.in_w = p.dst_stride_w;
    c.ih = p.clip_h;
    c.iw = p.clip_w;
    c.in_group = int64_t(p.out_per_group) * p.dst_stride_c;
    c.out = static_cast<float*>(dx) + p.src_base;
    c.out_n = p.src_stride_n;
    c.out_c = p.src_stride_c;
    c.out_h = p.src_stride_h;
    c.out_w = p.src_stride_w;
    c.oh = p.src_h;
    c.ow = p.src_w;
    c.out_group = int64_t(p.in_per_group) * p.src_stride_c;
    // dX pixel (iy, ix) reads dY row iy - first tap - dilation * ky: with the kernel turned,
    // point a = 2 - ky at iy + (-first tap - 2 dilation) + dilation * a.
    c.y0 = -int64_t(p.first_tap_y) - 2 * int64_t(p.dilation_y);
    c.x0 = -int64_t(p.first_tap_x) - 2 * int64_t(p.dilation_x);
    c.dy = p.dilation_y;
    c.dx = p.dilation_x;
    c.images = p.num_images;
    c.groups = p.groups;
    c.depth = p.out_per_group;
    c.outs = p.in_per_group;
    c.tiles = w.backward_tiles;
    c.u = w.backward.data();
    return correlate(c);
}

bool backward_weights_winograd_fits(const ConvtParams& p) {
    const int64_t points = int64_t(kWinogradPoints) * p.groups * ceil_div(p.out_per_group, kMr) *
                           kMr * ceil_div(p.in_per_group, kNr) * kNr;
    return p.kernel_h == 3 && p.kernel_w == 3 && p.stride_x == 1 && p.stride_y == 1 &&
           p.src_type == CONVT_TYPE_F32 && p.dst_type == CONVT_TYPE_F32 && !p.accumulate_half &&
           p.in_per_group >= kMinWeightGradientChannels &&
           p.out_per_group >= kMinWeightGradientChannels && points <= kMaxPartialFloats;
}

bool backward_weights_winograd(const ConvtParams& p, const void* x, const void* dy,
                               const detail::GradientOutput& out) {
    Correlation c = forward_geometry(p);
    c.in = static_cast<const float*>(x) + p.src_base;
    const float* grad = static_cast<const float*>(dy) + clip_origin(p);
    const TileGrid grid(c);
    const int og = p.out_per_group, ig = p.in_per_group, groups = p.groups;
    const int otiles = static_cast<int>(ceil_div(og, kMr));
    const int ipanels = static_cast<int>(ceil_div(ig, kNr));
    const int64_t icols = int64_t(ipanels) * kNr, orows = int64_t(otiles) * kMr;
    const int64_t point_floats = orows * icols, group_floats = kWinogradPoints * point_floats;
    // Tiles split into a fixed number of ranges, each summed into its own points partial, the
    // partials then added in range order: the order of every sum depends on the layer alone,
    // never on the thread count (bitwise deterministic).
    int ranges = static_cast<int>(std::clamp<int64_t>(grid.total / kTilesPerRange, 1, kRanges));
    while (ranges > 1 && int64_t(ranges) * groups * group_floats > kMaxPartialFloats) --ranges;
    const int64_t want = 2 * int64_t(ThreadPool::instance().num_threads());
    const int splits =
        static_cast<int>(std::clamp<int64_t>(ceil_div(want, int64_t(groups) * ranges), 1, otiles));
    std::vector<float> partials(size_t(ranges) * groups * group_floats, 0.f);
    // Tiles a block (the GEMMs' depth): its transformed X and dY stay L2-resident.
    const int cols = static_cast<int>(std::clamp<int64_t>(
        2 * kBlockFloats / (kWinogradPoints * (icols + orows)) / 8 * 8, 8, kMaxColumns));
    const MicroKernel uk = micro_kernel();
    const Transforms tf;
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
        thread_local std::vector<Segment2> segments;
        v.resize(size_t(kWinogradPoints) * ig * cols);
        e.resize(size_t(kWinogradPoints) * (o1 - o0) * cols);
        vp.resize(size_t(icols) * cols);
        ep.resize(size_t(nrows) * cols);
        for (int64_t first = t_begin; first < t_end; first += cols) {
            const int real = static_cast<int>(std::min<int64_t>(cols, t_end - first));
            grid.segments(c, first, real, segments);
            for (const Segment2& s : segments) {
                tf.inputs(c, g, s, cols, v.data());
                tf.gradients(c, grad, g, s, o0, o1, cols, e.data());
            }
            for (int pt = 0; pt < kWinogradPoints; ++pt) {
                // Both operands tile-major for the micro-kernel: X's points [panel][tile][16],
                // dY's [tile of 6][tile][6]. Channels past the last are left as they are: they
                // only reach sums that are never read.
                const float* vpt = v.data() + int64_t(pt) * ig * cols;
                for (int ch0 = 0; ch0 < ig; ch0 += 8)
                    for (int t0 = 0; t0 < real; t0 += 8)
                        transpose8(vpt + int64_t(ch0) * cols + t0, cols, 1, std::min(8, ig - ch0),
                                   vp.data() + (int64_t(ch0 / kNr) * cols + t0) * kNr + ch0 % kNr,
                                   kNr);
                const float* ept = e.data() + int64_t(pt) * (o1 - o0) * cols;
                for (int ot = ot0; ot < ot1; ++ot)
                    for (int t0 = 0; t0 < real; t0 += 8)
                        transpose8(ept + int64_t(ot * kMr - o0) * cols + t0, cols, 1,
                                   std::min(kMr, og - ot * kMr),
                                   ep.data() + (int64_t(ot - ot0) * cols + t0) * kMr, kMr);
                float* mp = part + pt * point_floats;
                for (int ot = ot0; ot < ot1; ++ot)
                    for (int ip = 0; ip < ipanels; ++ip) {
                        const Segment sg{ep.data() + int64_t(ot - ot0) * cols * kMr,
                                         vp.data() + int64_t(ip) * cols * kNr, real, kNr};
                        uk(&sg, 1, 0, 0, mp + int64_t(ot) * kMr * icols + ip * kNr, icols);
                    }
            }
        }
    });
    // The ranges' points added in order, then G^T m G; written only when every weight is finite
    // (the transforms subtract: Inf - Inf would make NaN where the exact sum has Inf).
    const int64_t count = int64_t(groups) * og * 9 * ig;
    std::vector<float> dw(static_cast<size_t>(count));
    std::atomic<uint32_t> worst{0};
    ThreadPool::instance().parallel_for(int64_t(groups) * og, [&](int64_t go) {
        const int64_t g = go / og, o = go % og;
        thread_local std::vector<float> sums;  // [point][i]: this row of every point, summed
        sums.resize(size_t(kWinogradPoints) * ig);
        for (int pt = 0; pt < kWinogradPoints; ++pt) {
            const float* at = partials.data() + g * group_floats + pt * point_floats + o * icols;
            float* to = sums.data() + int64_t(pt) * ig;
            std::copy(at, at + ig, to);
            for (int r = 1; r < ranges; ++r) {
                const float* more = at + int64_t(r) * groups * group_floats;
                for (int i = 0; i < ig; ++i) to[i] += more[i];
            }
        }
        float m[kWinogradPoints], k[9];
        uint32_t local = 0;
        for (int i = 0; i < ig; ++i) {
            for (int pt = 0; pt < kWinogradPoints; ++pt) m[pt] = sums[size_t(pt) * ig + i];
            points_to_kernel(m, k);
            for (int t = 0; t < 9; ++t) dw[size_t((go * 9 + t) * ig + i)] = k[t];
            local = worst_exponent(k, 9, local);
        }
        note_worst(worst, local);
    });
    if (worst.load() == 0x7f800000u) return false;
    auto* to = static_cast<float*>(out.weights);
    for (int64_t i = 0; i < count; ++i) to[i] = out.accumulate ? to[i] + dw[i] : dw[i];
    return true;
}

}  // namespace convt::cpu
