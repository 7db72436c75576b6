#include "depthwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "elements.h"
#include "geometry.h"
#include "half_rows.h"
#include "micro_kernel.h"
#include "neuron.h"
#include "row_shuffles.h"
#include "streaming.h"
#include "thread_pool.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CONVT_DEPTHWISE_AVX2 1
#endif

namespace convt::cpu {
namespace {

// Rows split by stride phase, each with zeros on both sides: phase r holds columns r, r + s, ...
// of a row at [0, length), and every tap of a row reads a fixed offset of it for all of its
// columns, zeros standing where the tap falls outside (so a tap is one unbroken loop).
struct PaddedPhases {
    int64_t phases = 0, length = 0, pad = 0, row = 0;  // row: floats per phase, pads included
    std::vector<float> values;                         // [phase][pad + length + pad]
    float* phase(int64_t r) { return values.data() + r * row + pad; }
    const float* phase(int64_t r) const { return values.data() + r * row + pad; }
    void shape(int64_t stride, int64_t columns, int64_t padding) {
        phases = std::min(stride, columns);
        length = ceil_div(columns, stride);
        pad = padding;
        row = length + 2 * pad;
        values.assign(static_cast<size_t>(phases * row), 0.f);
    }
    // Phase r from `line` (columns of the row), zeros after its last column.
    void split(const float* line, int64_t columns, int64_t stride) {
        if (stride == 2 && phases == 2) {  // by shuffles (the loop below was half an fp16 dX)
            deinterleave2(line, columns, phase(0), phase(1));
            std::fill(phase(0) + (columns + 1) / 2, phase(0) + length, 0.f);
            std::fill(phase(1) + columns / 2, phase(1) + length, 0.f);
            return;
        }
        for (int64_t r = 0; r < phases; ++r) {
            float* o = phase(r);
            int64_t j = 0;
            for (int64_t xx = r; xx < columns; ++j, xx += stride) o[j] = line[xx];
            std::fill(o + j, o + length, 0.f);
        }
    }
};

// The taps of a fused row loop as a grid: rows (a source or dY row each, with that row's
// weights, indexed by kx) times columns (an offset into every row, and its kx). Built once a
// row from a few pointers: a list of every tap, written a row and read back, cost as much as
// the multiply-adds (dw_k4s2's dX: 16 taps a row).
struct TapGrid {
    const float* const* rows;
    const float* const* wrows;
    int nrows;
    const int64_t* offsets;
    const int* kx;
    int ncols;
};

// out[j] = init + sum, row by row and column by column, of wrow[kx] * (row + offset)[j], for
// j < n; and the same compiled for AVX2+FMA. Taps outside the tensor read zeros of padding.
void fused_grid_portable(const TapGrid& g, float init, int64_t n, float* out) {
    for (int64_t j = 0; j < n; ++j) {
        float v = init;
        for (int r = 0; r < g.nrows; ++r)
            for (int c = 0; c < g.ncols; ++c)
                v += g.wrows[r][g.kx[c]] * g.rows[r][g.offsets[c] + j];
        out[j] = v;
    }
}
#ifdef CONVT_DEPTHWISE_AVX2
// V vectors of outputs from column j: each is one chain of dependent multiply-adds (one a tap),
// and fewer than eight chains wait on the FMA latency (dw_k4s2's 64-column rows: one pass of 8).
template <int V>
__attribute__((target("avx2,fma"), always_inline)) inline void grid_pass(const TapGrid& g,
                                                                         float init, int64_t j,
                                                                         float* out) {
    __m256 v[V];
#pragma GCC unroll 8
    for (int i = 0; i < V; ++i) v[i] = _mm256_set1_ps(init);
    for (int r = 0; r < g.nrows; ++r) {
        const float* row = g.rows[r] + j;
        const float* wr = g.wrows[r];
        for (int c = 0; c < g.ncols; ++c) {
            const __m256 w = _mm256_set1_ps(wr[g.kx[c]]);
            const float* in = row + g.offsets[c];
#pragma GCC unroll 8
            for (int i = 0; i < V; ++i)
                v[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(in + 8 * i), v[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < V; ++i) _mm256_storeu_ps(out + j + 8 * i, v[i]);
}
__attribute__((target("avx2,fma"))) void fused_grid_avx2(const TapGrid& g, float init, int64_t n,
                                                         float* out) {
    int64_t j = 0;
    for (; j + 64 <= n; j += 64) grid_pass<8>(g, init, j, out);
    for (; j + 32 <= n; j += 32) grid_pass<4>(g, init, j, out);
    for (; j + 8 <= n; j += 8) grid_pass<1>(g, init, j, out);
    for (; j < n; ++j) {
        float v = init;
        for (int r = 0; r < g.nrows; ++r)
            for (int c = 0; c < g.ncols; ++c)
                v = std::fma(g.wrows[r][g.kx[c]], g.rows[r][g.offsets[c] + j], v);
        out[j] = v;
    }
}
#endif
using FusedGrid = void (*)(const TapGrid&, float, int64_t, float*);
FusedGrid pick_fused_grid() {
#ifdef CONVT_DEPTHWISE_AVX2
    if (use_avx2()) return &fused_grid_avx2;
#endif
    return &fused_grid_portable;
}

// One tap of a dW row: lanes[j % 8] += x[j] * d[j] for j < n8, a multiple of 8 (a sum in eight
// lanes by column, a fixed order). x is zero outside the columns the tap reaches (and d there
// reads the padding's zeros): zeros times an infinite x would add NaN where nothing is added.
struct DotTap {
    const float* x;
    const float* d;
    float* lanes;
};

void dot_taps_portable(const DotTap* taps, int count, int64_t n8) {
    for (int t = 0; t < count; ++t) {
        float l[8];
        std::copy(taps[t].lanes, taps[t].lanes + 8, l);
        for (int64_t j = 0; j < n8; ++j) l[j % 8] += taps[t].x[j] * taps[t].d[j];
        std::copy(l, l + 8, taps[t].lanes);
    }
}
#ifdef CONVT_DEPTHWISE_AVX2
// G taps at once: G independent chains of multiply-adds (one tap alone was one chain, waiting
// on the FMA latency: dw_k4s2's dW ran at a tenth of the FMA rate).
template <int G>
__attribute__((target("avx2,fma"), always_inline)) inline void dot_group(const DotTap* t,
                                                                         int64_t n8) {
    __m256 l[G];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) l[g] = _mm256_loadu_ps(t[g].lanes);
    for (int64_t j = 0; j < n8; j += 8) {
#pragma GCC unroll 8
        for (int g = 0; g < G; ++g)
            l[g] = _mm256_fmadd_ps(_mm256_loadu_ps(t[g].x + j), _mm256_loadu_ps(t[g].d + j), l[g]);
    }
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) _mm256_storeu_ps(t[g].lanes, l[g]);
}
// Eight taps whose x repeats after four (two kernel rows of the same four kx, as a 4-wide
// kernel's taps come): each x vector loaded once for two taps. Two loads a multiply-add held
// dot_group<8> to one multiply-add a cycle.
__attribute__((target("avx2,fma"), always_inline)) inline void dot_group_pairs(const DotTap* t,
                                                                               int64_t n8) {
    __m256 l[8];
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) l[g] = _mm256_loadu_ps(t[g].lanes);
    for (int64_t j = 0; j < n8; j += 8) {
#pragma GCC unroll 4
        for (int g = 0; g < 4; ++g) {
            const __m256 x = _mm256_loadu_ps(t[g].x + j);
            l[g] = _mm256_fmadd_ps(x, _mm256_loadu_ps(t[g].d + j), l[g]);
            l[g + 4] = _mm256_fmadd_ps(x, _mm256_loadu_ps(t[g + 4].d + j), l[g + 4]);
        }
    }
#pragma GCC unroll 8
    for (int g = 0; g < 8; ++g) _mm256_storeu_ps(t[g].lanes, l[g]);
}
__attribute__((target("avx2,fma"))) void dot_taps_avx2(const DotTap* taps, int count, int64_t n8) {
    int i = 0;
    for (; i + 8 <= count; i += 8) {
        const DotTap* t = taps + i;
        if (t[0].x == t[4].x && t[1].x == t[5].x && t[2].x == t[6].x && t[3].x == t[7].x)
            dot_group_pairs(t, n8);
        else
            dot_group<8>(t, n8);
    }
    // The last group's instance (its G accumulators in registers) from a table.
    using Group = void (*)(const DotTap*, int64_t);
    static constexpr Group kLast[8] = {nullptr,       &dot_group<1>, &dot_group<2>, &dot_group<3>,
                                       &dot_group<4>, &dot_group<5>, &dot_group<6>, &dot_group<7>};
    if (count > i) kLast[count - i](taps + i, n8);
}
#endif
using DotTaps = void (*)(const DotTap*, int, int64_t);
DotTaps pick_dot_taps() {
#ifdef CONVT_DEPTHWISE_AVX2
    if (use_avx2()) return &dot_taps_avx2;
#endif
    return &dot_taps_portable;
}

// Where tap kx of a gradient reads a dY row split by phase: dX column ix meets entry ix - shift
// of phase `phase` (for the columns the tap reaches: lo..hi; zeros of the padding elsewhere).
struct TapColumn {
    int64_t phase, shift, lo, hi;
};
TapColumn tap_column(const ConvtParams& p, int kx) {
    const int64_t c = p.first_tap_x + int64_t(p.dilation_x) * kx, s = p.stride_x;
    const Span span = source_span(c, s, p.clip_w, p.src_w);
    const int64_t r = pos_mod(-c, s);
    return {r, (c + r) / s, span.lo, span.hi};
}

// dB lanes of one dY row in CpuBackend's bias_gradient order: lanes[l] sums columns l, l + 8,
// ... in order, in floats; and the same compiled for AVX2 (one vector chain, the same sums).
void row_lanes_portable(const float* r, int64_t w, float* lanes) {
    float l[8] = {};
    int64_t xx = 0;
    for (; xx + 8 <= w; xx += 8)
        for (int i = 0; i < 8; ++i) l[i] += r[xx + i];
    for (; xx < w; ++xx) l[xx % 8] += r[xx];
    std::copy(l, l + 8, lanes);
}
#ifdef CONVT_DEPTHWISE_AVX2
__attribute__((target("avx2"))) void row_lanes_avx2(const float* r, int64_t w, float* lanes) {
    __m256 acc = _mm256_setzero_ps();
    int64_t xx = 0;
    for (; xx + 8 <= w; xx += 8) acc = _mm256_add_ps(acc, _mm256_loadu_ps(r + xx));
    _mm256_storeu_ps(lanes, acc);
    for (; xx < w; ++xx) lanes[xx % 8] += r[xx];
}
#endif
using RowLanes = void (*)(const float*, int64_t, float*);
RowLanes pick_row_lanes() {
#ifdef CONVT_DEPTHWISE_AVX2
    if (use_avx2()) return &row_lanes_avx2;
#endif
    return &row_lanes_portable;
}

// The dY rows of one plane (image, channel) split by phase, kept while they are still needed: a
// dY row serves kernel_h / stride_y rows of dX (and of the dW sums), and splitting it anew for
// each of them took as long as the multiply-adds (dw_k4s2).
class DyRows {
 public:
    // dY rows are prefetched this many rows ahead into L2 (prefetcht1). Into L1 (prefetcht0)
    // 4 ahead, a prefetch waited for a free L1 miss slot (a fifth of the task's own time).
    static constexpr int64_t kPrefetchRows = 8;
    // Starts a plane: forgets every row.
    // With `sum_bias`, every row's dB lanes too (bias_gradient's order; see add_bias_lanes).
    void begin(const ConvtParams& p, const void* dy, int64_t n, int64_t ch, int64_t pad,
               bool sum_bias = false) {
        // A power of two (the slot is yy & mask_: a 64-bit division a row took 14% of dw_k4s2's
        // dX), at least as many rows as one dX row reads plus a stride.
        size_t slots = 1;
        while (slots < size_t(p.dilation_y) * (p.kernel_h - 1) + 1 + p.stride_y) slots *= 2;
        rows_.resize(slots);
        tags_.assign(slots, -1);
        mask_ = slots - 1;
        for (PaddedPhases& r : rows_)
            if (r.pad != pad || r.length != ceil_div(p.clip_w, p.stride_x) ||
                r.phases != std::min<int64_t>(p.stride_x, p.clip_w))
                r.shape(p.stride_x, p.clip_w, pad);
        line_.resize(static_cast<size_t>(p.clip_w));
        p_ = &p, dy_ = dy, n_ = n, ch_ = ch;
        floats_ = p.dst_type == CONVT_TYPE_F32 && p.dst_stride_w == 1;
        sum_bias_ = sum_bias;
        if (sum_bias) {
            lanes_.resize(static_cast<size_t>(p.clip_h) * 8);
            summed_.assign(static_cast<size_t>(p.clip_h), 0);
            row_lanes_ = pick_row_lanes();
        }
    }
    // totals[l] += each row's dB lanes, rows in order (as bias_gradient): the lanes summed as
    // rows were fetched, and those of rows no dX row read, read now.
    void add_bias_lanes(double* totals) {
        for (int64_t yy = 0; yy < p_->clip_h; ++yy) {
            float* l = lanes_.data() + yy * 8;
            if (!summed_[yy]) row_lanes_(row_floats(dst_index(*p_, n_, ch_, yy, 0)), p_->clip_w, l);
            for (int i = 0; i < 8; ++i) totals[i] += l[i];
        }
    }
    // Row yy split by phase; valid while the rows asked for after it span fewer than `slots`
    // rows (true for the rows of one dX row).
    const PaddedPhases& get(int64_t yy) {
        const size_t slot = static_cast<size_t>(yy) & mask_;
        if (tags_[slot] != yy) fetch(yy, rows_[slot]);
        tags_[slot] = yy;
        return rows_[slot];
    }
    // The first float of row yy's PaddedPhases (GradientColumns::offset is from there).
    const float* slot(int64_t yy) { return get(yy).values.data(); }

 private:
    void fetch(int64_t yy, PaddedPhases& row) {
        const int64_t first = dst_index(*p_, n_, ch_, yy, 0);
        if (floats_ && yy + kPrefetchRows < p_->clip_h) {  // the row later dX rows read
            const float* ahead =
                static_cast<const float*>(dy_) + dst_index(*p_, n_, ch_, yy + kPrefetchRows, 0);
            for (int64_t x = 0; x < p_->clip_w; x += 16) __builtin_prefetch(ahead + x, 0, 2);
        }
        row.split(row_floats(first), p_->clip_w, p_->stride_x);
        if (sum_bias_ && !summed_[yy]) {  // from L1, while the row is there
            row_lanes_(floats_ ? static_cast<const float*>(dy_) + first : line_.data(), p_->clip_w,
                       lanes_.data() + yy * 8);
            summed_[yy] = 1;
        }
    }
    // The dY row whose first element is at `first` as floats: in place when they are, else
    // converted into line_.
    const float* row_floats(int64_t first) {
        if (floats_) return static_cast<const float*>(dy_) + first;
        load_row(dy_, p_->dst_type, first, p_->dst_stride_w, p_->clip_w, line_.data());
        return line_.data();
    }

    std::vector<PaddedPhases> rows_;
    std::vector<int64_t> tags_;
    std::vector<float> line_;
    size_t mask_ = 0;
    bool floats_ = false;  // dY rows of contiguous floats: read in place
    bool sum_bias_ = false;
    std::vector<float> lanes_;  // [yy][8]: dB lanes of each row
    std::vector<char> summed_;
    RowLanes row_lanes_ = nullptr;
    const ConvtParams* p_ = nullptr;
    const void* dy_ = nullptr;
    int64_t n_ = 0, ch_ = 0;
};

// The gradient taps of each kx: where they read a DyRows slot and the columns they reach. dX
// rows read src_w columns of a phase row from -shift; dW rows read n8 (src_w rounded up to 8).
struct GradientColumns {
    std::vector<TapColumn> by_kx;
    // The taps that reach a column (TapGrid's columns): kx, and where they read a slot
    // (phase(phase) - shift, from its first float).
    std::vector<int> reach_kx;
    std::vector<int64_t> reach_offset;
    int64_t pad = 0, n8 = 0;  // the zeros beside each phase row (PaddedPhases::pad)

    explicit GradientColumns(const ConvtParams& p) {
        const int64_t length = ceil_div(p.clip_w, p.stride_x);
        n8 = ceil_div(p.src_w, 8) * 8;
        for (int kx = 0; kx < p.kernel_w; ++kx) {
            by_kx.push_back(tap_column(p, kx));
            const TapColumn& t = by_kx.back();
            if (t.lo <= t.hi) pad = std::max({pad, t.shift, n8 - t.shift - length});
        }
        for (int kx = 0; kx < p.kernel_w; ++kx) {
            const TapColumn& t = by_kx[kx];
            if (t.lo > t.hi) continue;
            reach_kx.push_back(kx);
            reach_offset.push_back(t.phase * (length + 2 * pad) + pad - t.shift);
        }
    }
};

// Row iy of the tensor in dW's source role (X) as floats, n8 wide with zeros past src_w, and for
// each kx whose taps reach only some columns, a copy with zeros outside them (DotTap's x).
class XRows {
 public:
    void begin(const ConvtParams& p, const GradientColumns& g) {
        n8_ = g.n8;
        values_.assign(static_cast<size_t>(n8_ * (1 + p.kernel_w)), 0.f);
        of_.assign(static_cast<size_t>(p.kernel_w), values_.data());
        partial_.clear();
        for (int kx = 0; kx < p.kernel_w; ++kx) {
            const TapColumn& t = g.by_kx[kx];
            if (t.lo <= t.hi && (t.lo > 0 || t.hi < p.src_w - 1)) {
                of_[kx] = values_.data() + (1 + kx) * n8_;
                partial_.push_back(kx);
            }
        }
        g_ = &g;
    }
    void load(const ConvtParams& p, const void* x, int64_t n, int64_t ch, int64_t iy) {
        load_row(x, p.src_type, src_index(p, n, ch, iy, 0), p.src_stride_w, p.src_w,
                 values_.data());
        for (int kx : partial_) {
            const TapColumn& t = g_->by_kx[kx];
            std::copy(values_.data() + t.lo, values_.data() + t.hi + 1,
                      values_.data() + (1 + kx) * n8_ + t.lo);
        }
    }
    const float* of(int kx) const { return of_[kx]; }

 private:
    std::vector<float> values_;  // [1 + kx][n8]: the row, then the copies
    std::vector<const float*> of_;
    std::vector<int> partial_;
    const GradientColumns* g_ = nullptr;
    int64_t n8_ = 0;
};

// dW's taps of kernel row ky over a dY row (its DyRows slot), appended at dots[k]: one a kx that
// reaches a column. Returns the new count.
int append_dot_taps(const GradientColumns& g, const XRows& x_rows, const float* slot, int ky,
                    float* lanes, DotTap* dots, int k) {
    const int kw = static_cast<int>(g.by_kx.size());
    for (size_t c = 0; c < g.reach_kx.size(); ++c) {
        const int kx = g.reach_kx[c];
        DotTap& t = dots[k++];
        t.x = x_rows.of(kx);
        t.d = slot + g.reach_offset[c];
        t.lanes = lanes + (ky * kw + kx) * 8;
    }
    return k;
}

}  // namespace

void pack_depthwise_weights(const detail::PreparedWeights& pw, DepthwiseWeights& out) {
    out.taps.assign(pw.values.begin(), pw.values.end());  // OHWI with I/groups == 1
    const int64_t taps = pw.kernel_h * pw.kernel_w;
    out.by_tap.resize(out.taps.size());
    for (int64_t c = 0; c < pw.out_channels; ++c)
        for (int64_t t = 0; t < taps; ++t)
            out.by_tap[t * pw.out_channels + c] = out.taps[c * taps + t];
    out.bias.assign(static_cast<size_t>(pw.out_channels), 0.f);
    for (size_t i = 0; i < pw.bias.size(); ++i) out.bias[i] = static_cast<float>(pw.bias[i]);
    out.slopes.clear();
    if (pw.neuron.type == NeuronType::PReLU)
        out.slopes.assign(pw.neuron.data.begin(), pw.neuron.data.end());
}

bool depthwise_fits(const ConvtParams& p) {
    return p.in_per_group == 1 && p.out_per_group == 1 && !p.accumulate_half &&
           p.src_type != CONVT_TYPE_F64 && p.dst_type != CONVT_TYPE_F64;
}

void forward_depthwise(const ConvtParams& p, const DepthwiseWeights& w, const void* src,
                       void* dst) {
    const int64_t taps = int64_t(p.kernel_h) * p.kernel_w, s = p.stride_x;
    const int64_t phases = std::min<int64_t>(s, p.clip_w), length = ceil_div(p.clip_w, s);
    // Tap kx lands on the columns of phase pos_mod(-e, s) (e = its expanded offset), output
    // entry j of that phase reading source column j + q, q = (phase + e) / s: the grid columns
    // of each phase (TapGrid's offsets and kx).
    std::vector<std::vector<int64_t>> q_of(static_cast<size_t>(phases));
    std::vector<std::vector<int>> kx_of(static_cast<size_t>(phases));
    int64_t pad = 0;
    for (int kx = 0; kx < p.kernel_w; ++kx) {
        const int64_t e = p.first_tap_x + int64_t(p.dilation_x) * kx, r = pos_mod(-e, s);
        if (r >= phases) continue;
        const int64_t q = (r + e) / s;
        q_of[r].push_back(q);
        kx_of[r].push_back(kx);
        pad = std::max({pad, -q, ceil_div(p.clip_w - r, s) + q - p.src_w});
    }
    // Ring slots for source rows: a power of two (a slot is iy & (slots - 1)), more than one
    // output row's rows span.
    int64_t slots = 1;
    while (slots < int64_t(p.dilation_y) * (p.kernel_h - 1) / p.stride_y + 2) slots *= 2;
    // The taps of the output rows in each residue class of first_tap_y + yy modulo stride_y:
    // source row q + dq, q the quotient (source_row without its divisions: they and the
    // slots' were 20% of the row loop).
    struct RowTap {
        int ky;
        int64_t dq;
    };
    std::vector<std::vector<RowTap>> row_taps(static_cast<size_t>(p.stride_y));
    for (int64_t r = 0; r < p.stride_y; ++r)
        for (int ky = 0; ky < p.kernel_h; ++ky)
            if ((r + int64_t(p.dilation_y) * ky) % p.stride_y == 0)
                row_taps[r].push_back({ky, (r + int64_t(p.dilation_y) * ky) / p.stride_y});
    const auto ntype = static_cast<NeuronType>(p.neuron);
    // Outputs larger than the caches (dw_k4s2 at N=8: 33 MB) are written with streaming stores
    // when their rows are contiguous floats: a stride-phase row stored element by element made
    // every output line come in from memory before it was written (74 MB moved, not 41).
    const bool stream =
        p.dst_type == CONVT_TYPE_F32 && p.dst_stride_w == 1 &&
        int64_t(p.num_images) * p.groups * p.clip_h * p.clip_w * int64_t(sizeof(float)) >=
            kStreamBytes;
    const FusedGrid fused = pick_fused_grid();
    ThreadPool::instance().parallel_for(int64_t(p.num_images) * p.groups, [&](int64_t task) {
        const int64_t n = task / p.groups, ch = task % p.groups;
        const float* wc = w.taps.data() + ch * taps;
        const float slope = w.slopes.empty() ? 0.f : w.slopes[ch];
        struct Fence {  // streamed stores are seen by other threads once fenced
            ~Fence() { stream_fence(); }
        } fence;
        // Source rows with `pad` zeros each side, by source row index modulo `slots`: more than
        // the rows one output row reads span, so none of them evicts another.
        struct Scratch {
            std::vector<float> rows, out_phases, line;
            std::vector<int64_t> tags;
            std::vector<const float*> row_of, wrow_of;
        };
        Scratch& scratch = thread_scratch<Scratch>();
        std::vector<float>&rows = scratch.rows, &out_phases = scratch.out_phases,
        &line = scratch.line;
        std::vector<int64_t>& tags = scratch.tags;
        std::vector<const float*>&row_of = scratch.row_of, &wrow_of = scratch.wrow_of;
        row_of.resize(static_cast<size_t>(p.kernel_h));
        wrow_of.resize(static_cast<size_t>(p.kernel_h));
        const int64_t row_floats = p.src_w + 2 * pad;
        rows.assign(static_cast<size_t>(slots * row_floats), 0.f);
        tags.assign(static_cast<size_t>(slots), -1);
        out_phases.resize(static_cast<size_t>(phases * length));
        line.resize(static_cast<size_t>(p.clip_w));
        // first_tap_y + yy = q * stride_y + residue, kept as yy steps.
        int64_t q = floor_div(p.first_tap_y, p.stride_y), residue = p.first_tap_y - q * p.stride_y;
        for (int64_t yy = 0; yy < p.clip_h; ++yy) {
            int valid = 0;  // the source rows this output row reads, with their weights
            for (const RowTap& t : row_taps[residue]) {
                const int64_t iy = q + t.dq;
                if (iy < 0 || iy >= p.src_h) continue;
                const int64_t slot = iy & (slots - 1);
                float* row = rows.data() + slot * row_floats + pad;
                if (tags[slot] != iy) {
                    load_row(src, p.src_type, src_index(p, n, ch, iy, 0), p.src_stride_w, p.src_w,
                             row);
                    tags[slot] = iy;
                }
                row_of[valid] = row;
                wrow_of[valid++] = wc + t.ky * p.kernel_w;
            }
            if (++residue == p.stride_y) residue = 0, ++q;
            for (int64_t r = 0; r < phases; ++r) {
                const TapGrid grid{row_of.data(),  wrow_of.data(),  valid,
                                   q_of[r].data(), kx_of[r].data(), int(q_of[r].size())};
                fused(grid, w.bias[ch], ceil_div(p.clip_w - r, s), out_phases.data() + r * length);
            }
            float* v = out_phases.data();
            if (ntype != NeuronType::None)
                for (int64_t i = 0; i < phases * length; ++i)
                    v[i] = apply_neuron(ntype, v[i], p.neuron_a, p.neuron_b, p.neuron_c, slope);
            const int64_t out0 = dst_index(p, n, ch, yy, 0);
            if (p.dst_type == CONVT_TYPE_F32 && p.dst_stride_w == 1 && !stream && phases == 2) {
                // Woven straight into the output (a copy of each row through `line` was 5%).
                interleave2(v, v + length, p.clip_w, static_cast<float*>(dst) + out0);
                continue;
            }
            // Streamed rows too, where the row starts 16-byte aligned (woven into `line` and
            // then streamed took 1 / 0.85 as long, one and two threads).
            if (stream && phases == 2 &&
                interleave2_stream(v, v + length, p.clip_w, static_cast<float*>(dst) + out0))
                continue;
            if (p.dst_type != CONVT_TYPE_F64 && p.dst_stride_w == 1) {
                // The row put together in order, then written whole.
                float* row_out = phases == 1 ? v : line.data();
                if (phases == 2)
                    interleave2(v, v + length, p.clip_w, line.data());
                else
                    for (int64_t r = 0; phases > 1 && r < phases; ++r)
                        for (int64_t j = 0, xx = r; xx < p.clip_w; ++j, xx += s)
                            line[xx] = v[r * length + j];
                if (p.dst_type == CONVT_TYPE_F16) {  // converted a row at once (F16C)
                    floats_to_halves(row_out, static_cast<int>(p.clip_w),
                                     static_cast<uint16_t*>(dst) + out0);
                    continue;
                }
                float* d = static_cast<float*>(dst) + out0;
                if (stream)
                    stream_floats(row_out, p.clip_w, d);
                else
                    std::memcpy(d, row_out, sizeof(float) * p.clip_w);
                continue;
            }
            for (int64_t r = 0; r < phases; ++r)  // a phase's pixels, s apart
                store_row(dst, p.dst_type, out0 + r * p.dst_stride_w, s * p.dst_stride_w,
                          ceil_div(p.clip_w - r, s), v + r * length);
        }
    });
}

namespace {
// A thread's buffers for the gradient passes (one pass at a time on a thread).
struct GradientScratch {
    DyRows dy_rows;
    XRows x_rows;
    std::vector<float> acc, lanes;  // a dX row; dW's lanes [tap][column % 8]
    std::vector<const float*> rows, wrows;
    std::vector<DotTap> dots;
};

// dX row iy of plane (n, ch): the grid of its dY rows (s.rows and s.wrows, `valid` of them)
// over the taps that reach a column; written in place when dX rows are contiguous floats, else
// through s.acc.
void write_dx_row(const ConvtParams& p, const GradientColumns& g, FusedGrid fused,
                  GradientScratch& s, int valid, void* dx, int64_t n, int64_t ch, int64_t iy) {
    const TapGrid grid{s.rows.data(),         s.wrows.data(),    valid,
                       g.reach_offset.data(), g.reach_kx.data(), int(g.reach_kx.size())};
    const int64_t out0 = src_index(p, n, ch, iy, 0);
    if (p.src_type == CONVT_TYPE_F32 && p.src_stride_w == 1) {
        fused(grid, 0.f, p.src_w, static_cast<float*>(dx) + out0);
        return;
    }
    const float* row = s.acc.data();
    fused(grid, 0.f, p.src_w, s.acc.data());
    store_row(dx, p.src_type, out0, p.src_stride_w, p.src_w, row);
}

// dW's eight lanes of each tap, summed pairwise into the channel's weights.
void finish_weight_lanes(const float* lanes, int taps, int64_t ch,
                         const detail::GradientOutput& out) {
    auto* dw = static_cast<float*>(out.weights);
    for (int t = 0; t < taps; ++t) {
        const float* l = lanes + t * 8;
        const float v = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
        float& o = dw[ch * taps + t];
        o = out.accumulate ? o + v : v;
    }
}
}  // namespace

void backward_data_depthwise(const ConvtParams& p, const DepthwiseWeights& w, const void* dy,
                             void* dx) {
    const int64_t taps = int64_t(p.kernel_h) * p.kernel_w;
    const GradientColumns g(p);
    const FusedGrid fused = pick_fused_grid();
    ThreadPool::instance().parallel_for(int64_t(p.num_images) * p.groups, [&](int64_t task) {
        const int64_t n = task / p.groups, ch = task % p.groups;
        const float* wc = w.taps.data() + ch * taps;
        GradientScratch& scratch = thread_scratch<GradientScratch>();
        DyRows& dy_rows = scratch.dy_rows;
        std::vector<float>& acc = scratch.acc;
        std::vector<const float*>&rows = scratch.rows, &wrows = scratch.wrows;
        dy_rows.begin(p, dy, n, ch, g.pad);
        acc.resize(static_cast<size_t>(p.src_w));
        rows.resize(static_cast<size_t>(p.kernel_h));
        wrows.resize(static_cast<size_t>(p.kernel_h));
        for (int64_t iy = 0; iy < p.src_h; ++iy) {
            int valid = 0;  // the dY rows this dX row reads, with their weights
            for (int ky = 0; ky < p.kernel_h; ++ky) {
                const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
                if (yy < 0 || yy >= p.clip_h) continue;
                rows[valid] = dy_rows.slot(yy);
                wrows[valid++] = wc + ky * p.kernel_w;
            }
            write_dx_row(p, g, fused, scratch, valid, dx, n, ch, iy);
        }
    });
}

void backward_weights_depthwise(const ConvtParams& p, const void* x, const void* dy,
                                const detail::GradientOutput& out) {
    const int taps = p.kernel_h * p.kernel_w;
    const GradientColumns g(p);
    const DotTaps dot = pick_dot_taps();
    ThreadPool::instance().parallel_for(p.groups, [&](int64_t ch) {
        GradientScratch& scratch = thread_scratch<GradientScratch>();
        DyRows& dy_rows = scratch.dy_rows;
        XRows& x_rows = scratch.x_rows;
        std::vector<float>& lanes = scratch.lanes;
        std::vector<DotTap>& dots = scratch.dots;
        x_rows.begin(p, g);
        lanes.assign(static_cast<size_t>(taps) * 8, 0.f);  // [tap][column % 8]
        dots.resize(static_cast<size_t>(taps));
        for (int64_t n = 0; n < p.num_images; ++n) {
            dy_rows.begin(p, dy, n, ch, g.pad);
            for (int64_t iy = 0; iy < p.src_h; ++iy) {
                int k = 0;
                bool loaded = false;  // X row iy, loaded for the first dY row it meets
                for (int ky = 0; ky < p.kernel_h; ++ky) {
                    const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
                    if (yy < 0 || yy >= p.clip_h) continue;
                    if (!loaded) x_rows.load(p, x, n, ch, iy), loaded = true;
                    k = append_dot_taps(g, x_rows, dy_rows.slot(yy), ky, lanes.data(), dots.data(),
                                        k);
                }
                dot(dots.data(), k, g.n8);
            }
        }
        finish_weight_lanes(lanes.data(), taps, ch, out);
    });
}

void backward_depthwise(const ConvtParams& pd, const DepthwiseWeights& w, const void* dy, void* dx,
                        const ConvtParams& pw, const void* x, const detail::GradientOutput& out) {
    const int taps = pd.kernel_h * pd.kernel_w;
    const GradientColumns g(pd);
    const FusedGrid fused = pick_fused_grid();
    const DotTaps dot = pick_dot_taps();
    // By channel, images in order (dW's order, as backward_weights_depthwise); each dY row is
    // read and split once for both gradients, and summed for dB (a second pass over dY was 10-15%
    // of dw_k4s2's backward).
    const bool bias = out.bias != nullptr;
    ThreadPool::instance().parallel_for(pd.groups, [&](int64_t ch) {
        const float* wc = w.taps.data() + ch * taps;
        GradientScratch& scratch = thread_scratch<GradientScratch>();
        DyRows& dy_rows = scratch.dy_rows;
        XRows& x_rows = scratch.x_rows;
        std::vector<float>&acc = scratch.acc, &lanes = scratch.lanes;
        std::vector<const float*>&rows = scratch.rows, &wrows = scratch.wrows;
        std::vector<DotTap>& dots = scratch.dots;
        x_rows.begin(pw, g);
        acc.resize(static_cast<size_t>(pd.src_w));
        lanes.assign(static_cast<size_t>(taps) * 8, 0.f);  // [tap][column % 8]
        rows.resize(static_cast<size_t>(pd.kernel_h));
        wrows.resize(static_cast<size_t>(pd.kernel_h));
        dots.resize(static_cast<size_t>(taps));
        double totals[8] = {};  // dB, as CpuBackend's bias_gradient sums it
        for (int64_t n = 0; n < pd.num_images; ++n) {
            dy_rows.begin(pd, dy, n, ch, g.pad, bias);
            for (int64_t iy = 0; iy < pd.src_h; ++iy) {
                int k = 0, valid = 0;  // dW taps; the dY rows dX reads, with their weights
                for (int ky = 0; ky < pd.kernel_h; ++ky) {
                    const int64_t yy =
                        iy * pd.stride_y - pd.first_tap_y - int64_t(pd.dilation_y) * ky;
                    if (yy < 0 || yy >= pd.clip_h) continue;
                    if (valid == 0) x_rows.load(pw, x, n, ch, iy);  // the first dY row it meets
                    const float* slot = dy_rows.slot(yy);
                    rows[valid] = slot;
                    wrows[valid++] = wc + ky * pd.kernel_w;
                    k = append_dot_taps(g, x_rows, slot, ky, lanes.data(), dots.data(), k);
                }
                dot(dots.data(), k, g.n8);
                write_dx_row(pd, g, fused, scratch, valid, dx, n, ch, iy);
            }
            if (bias) dy_rows.add_bias_lanes(totals);
        }
        finish_weight_lanes(lanes.data(), taps, ch, out);
        if (bias) {
            const float v = static_cast<float>(((totals[0] + totals[1]) + (totals[2] + totals[3])) +
                                               ((totals[4] + totals[5]) + (totals[6] + totals[7])));
            float& o = static_cast<float*>(out.bias)[ch];
            o = out.accumulate ? o + v : v;
        }
    });
}

}  // namespace convt::cpu
