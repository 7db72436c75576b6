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
        for (int64_t r = 0; r < phases; ++r) {
            float* o = phase(r);
            int64_t j = 0;
            for (int64_t xx = r; xx < columns; ++j, xx += stride) o[j] = line[xx];
            std::fill(o + j, o + length, 0.f);
        }
    }
};

// One tap of a fused row loop: out[j] gathers w * in[j].
struct Tap {
    const float* in;
    float w;
};

// out[j] = init + sum over taps, in order, of w * in[j], for j < n; and the same compiled for
// AVX2+FMA. Taps outside the tensor read the zeros of PaddedPhases.
void fused_taps_portable(const Tap* taps, int count, float init, int64_t n, float* out) {
    for (int64_t j = 0; j < n; ++j) {
        float v = init;
        for (int t = 0; t < count; ++t) v += taps[t].w * taps[t].in[j];
        out[j] = v;
    }
}
#ifdef CONVT_DEPTHWISE_AVX2
__attribute__((target("avx2,fma"))) void fused_taps_avx2(const Tap* taps, int count, float init,
                                                         int64_t n, float* out) {
    int64_t j = 0;
    // Four vectors of outputs at a time: each is one chain of dependent multiply-adds (one a
    // tap), and a single chain waited on the FMA latency (dw_k4s2's 16 taps).
    for (; j + 32 <= n; j += 32) {
        __m256 v0 = _mm256_set1_ps(init), v1 = v0, v2 = v0, v3 = v0;
        for (int t = 0; t < count; ++t) {
            const __m256 w = _mm256_set1_ps(taps[t].w);
            const float* in = taps[t].in + j;
            v0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(in), v0);
            v1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(in + 8), v1);
            v2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(in + 16), v2);
            v3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(in + 24), v3);
        }
        _mm256_storeu_ps(out + j, v0);
        _mm256_storeu_ps(out + j + 8, v1);
        _mm256_storeu_ps(out + j + 16, v2);
        _mm256_storeu_ps(out + j + 24, v3);
    }
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_set1_ps(init);
        for (int t = 0; t < count; ++t)
            v = _mm256_fmadd_ps(_mm256_set1_ps(taps[t].w), _mm256_loadu_ps(taps[t].in + j), v);
        _mm256_storeu_ps(out + j, v);
    }
    for (; j < n; ++j) {
        float v = init;
        for (int t = 0; t < count; ++t) v = std::fma(taps[t].w, taps[t].in[j], v);
        out[j] = v;
    }
}
#endif
using FusedTaps = void (*)(const Tap*, int, float, int64_t, float*);
FusedTaps pick_fused_taps() {
#ifdef CONVT_DEPTHWISE_AVX2
    if (use_avx2()) return &fused_taps_avx2;
#endif
    return &fused_taps_portable;
}

// lanes[j % 8] += x[j] * d[j] for j < n (a dW sum in eight lanes by column, a fixed order);
// and the same compiled for AVX2+FMA. Callers pass only the columns a tap reaches (lo..hi): the
// padding's zeros times an infinite x would add NaN where nothing should be added.
void dot_lanes_portable(const float* x, const float* d, int64_t n, float* lanes) {
    float l[8];
    std::copy(lanes, lanes + 8, l);
    for (int64_t j = 0; j < n; ++j) l[j % 8] += x[j] * d[j];
    std::copy(l, l + 8, lanes);
}
#ifdef CONVT_DEPTHWISE_AVX2
__attribute__((target("avx2,fma"))) void dot_lanes_avx2(const float* x, const float* d, int64_t n,
                                                        float* lanes) {
    const int64_t whole = n / 8 * 8;
    __m256 l = _mm256_loadu_ps(lanes);
    for (int64_t j = 0; j < whole; j += 8)
        l = _mm256_fmadd_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(d + j), l);
    _mm256_storeu_ps(lanes, l);
    for (int64_t j = whole; j < n; ++j) lanes[j % 8] = std::fma(x[j], d[j], lanes[j % 8]);
}
#endif
using DotLanes = void (*)(const float*, const float*, int64_t, float*);
DotLanes pick_dot_lanes() {
#ifdef CONVT_DEPTHWISE_AVX2
    if (use_avx2()) return &dot_lanes_avx2;
#endif
    return &dot_lanes_portable;
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

// Zeros each gradient tap needs beside the dY phase rows to read src_w columns from offset
// -shift: the padding of their PaddedPhases.
int64_t gradient_padding(const ConvtParams& p, const std::vector<TapColumn>& columns) {
    const int64_t length = ceil_div(p.clip_w, p.stride_x);
    int64_t pad = 0;
    for (const TapColumn& t : columns) {
        if (t.lo > t.hi) continue;
        pad = std::max({pad, t.shift, p.src_w - t.shift - length});
    }
    return pad;
}

// The dY rows of one plane (image, channel) split by phase, kept while they are still needed: a
// dY row serves kernel_h / stride_y rows of dX (and of the dW sums), and splitting it anew for
// each of them took as long as the multiply-adds (dw_k4s2).
class DyRows {
 public:
    static constexpr int64_t kPrefetchRows = 4;
    // Starts a plane: forgets every row.
    void begin(const ConvtParams& p, const void* dy, int64_t n, int64_t ch, int64_t pad) {
        const size_t slots = size_t(p.dilation_y) * (p.kernel_h - 1) + 1 + p.stride_y;
        rows_.resize(slots);
        tags_.assign(slots, -1);
        for (PaddedPhases& r : rows_)
            if (r.pad != pad || r.length != ceil_div(p.clip_w, p.stride_x) ||
                r.phases != std::min<int64_t>(p.stride_x, p.clip_w))
                r.shape(p.stride_x, p.clip_w, pad);
        line_.resize(static_cast<size_t>(p.clip_w));
        p_ = &p, dy_ = dy, n_ = n, ch_ = ch;
    }
    // Row yy split by phase; valid while the rows asked for after it span fewer than `slots`
    // rows (true for the rows of one dX row).
    const PaddedPhases& get(int64_t yy) {
        const size_t slot = static_cast<size_t>(yy) % rows_.size();
        if (tags_[slot] != yy) {
            const int64_t first = dst_index(*p_, n_, ch_, yy, 0);
            if (yy + kPrefetchRows < p_->clip_h && p_->dst_type == CONVT_TYPE_F32 &&
                p_->dst_stride_w == 1) {  // the row kPrefetchRows below, which later dX rows read
                const float* ahead =
                    static_cast<const float*>(dy_) + dst_index(*p_, n_, ch_, yy + kPrefetchRows, 0);
                for (int64_t x = 0; x < p_->clip_w; x += 16) __builtin_prefetch(ahead + x);
            }
            PaddedPhases& row = rows_[slot];
            if (p_->stride_x == 2 && row.phases == 2 && p_->dst_type == CONVT_TYPE_F32 &&
                p_->dst_stride_w == 1) {  // straight from the tensor, split with shuffles
                deinterleave2(static_cast<const float*>(dy_) + first, p_->clip_w, row.phase(0),
                              row.phase(1));
                if (p_->clip_w % 2) row.phase(1)[row.length - 1] = 0.f;
            } else {
                load_row(dy_, p_->dst_type, first, p_->dst_stride_w, p_->clip_w, line_.data());
                row.split(line_.data(), p_->clip_w, p_->stride_x);
            }
            tags_[slot] = yy;
        }
        return rows_[slot];
    }

 private:
    std::vector<PaddedPhases> rows_;
    std::vector<int64_t> tags_;
    std::vector<float> line_;
    const ConvtParams* p_ = nullptr;
    const void* dy_ = nullptr;
    int64_t n_ = 0, ch_ = 0;
};

}  // namespace

void pack_depthwise_weights(const detail::PreparedWeights& pw, DepthwiseWeights& out) {
    out.taps.assign(pw.values.begin(), pw.values.end());  // OHWI with I/groups == 1
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
    // entry j of that phase reading source column j + q, q = (phase + e) / s.
    struct Column {
        int kx;
        int64_t q;
    };
    std::vector<std::vector<Column>> by_phase(static_cast<size_t>(phases));
    int64_t pad = 0;
    for (int kx = 0; kx < p.kernel_w; ++kx) {
        const int64_t e = p.first_tap_x + int64_t(p.dilation_x) * kx, r = pos_mod(-e, s);
        if (r >= phases) continue;
        const int64_t q = (r + e) / s;
        by_phase[r].push_back({kx, q});
        pad = std::max({pad, -q, ceil_div(p.clip_w - r, s) + q - p.src_w});
    }
    const int64_t slots = int64_t(p.dilation_y) * (p.kernel_h - 1) / p.stride_y + 2;
    const auto ntype = static_cast<NeuronType>(p.neuron);
    // Outputs larger than the caches (dw_k4s2 at N=8: 33 MB) are written with streaming stores
    // when their rows are contiguous floats: a stride-phase row stored element by element made
    // every output line come in from memory before it was written (74 MB moved, not 41).
    const bool stream =
        p.dst_type == CONVT_TYPE_F32 && p.dst_stride_w == 1 &&
        int64_t(p.num_images) * p.groups * p.clip_h * p.clip_w * int64_t(sizeof(float)) >=
            kStreamBytes;
    const FusedTaps fused = pick_fused_taps();
    ThreadPool::instance().parallel_for(int64_t(p.num_images) * p.groups, [&](int64_t task) {
        const int64_t n = task / p.groups, ch = task % p.groups;
        const float* wc = w.taps.data() + ch * taps;
        const float slope = w.slopes.empty() ? 0.f : w.slopes[ch];
        struct Fence {  // streamed stores are seen by other threads once fenced
            ~Fence() { stream_fence(); }
        } fence;
        // Source rows with `pad` zeros each side, by source row index modulo `slots`: more than
        // the rows one output row reads span, so none of them evicts another.
        thread_local std::vector<float> rows_tls, out_phases_tls, line_tls;
        thread_local std::vector<int64_t> tags_tls;
        thread_local std::vector<Tap> list_tls;
        thread_local std::vector<const float*> row_of_tls;
        thread_local std::vector<int> ky_of_tls;
        // Looked up once: each use of a thread-local is a call in a shared library.
        std::vector<float>&rows = rows_tls, &out_phases = out_phases_tls, &line = line_tls;
        std::vector<int64_t>& tags = tags_tls;
        std::vector<Tap>& list = list_tls;
        std::vector<const float*>& row_of = row_of_tls;
        std::vector<int>& ky_of = ky_of_tls;
        row_of.resize(static_cast<size_t>(p.kernel_h));
        ky_of.resize(static_cast<size_t>(p.kernel_h));
        const int64_t row_floats = p.src_w + 2 * pad;
        rows.assign(static_cast<size_t>(slots * row_floats), 0.f);
        tags.assign(static_cast<size_t>(slots), -1);
        out_phases.resize(static_cast<size_t>(phases * length));
        line.resize(static_cast<size_t>(p.clip_w));
        list.resize(static_cast<size_t>(taps));
        for (int64_t yy = 0; yy < p.clip_h; ++yy) {
            int valid = 0;  // the source rows this output row reads, with their ky
            for (int ky = 0; ky < p.kernel_h; ++ky) {
                const int64_t iy = source_row(p, yy, ky);
                if (iy < 0) continue;
                float* row = rows.data() + (iy % slots) * row_floats + pad;
                if (tags[iy % slots] != iy) {
                    load_row(src, p.src_type, src_index(p, n, ch, iy, 0), p.src_stride_w, p.src_w,
                             row);
                    tags[iy % slots] = iy;
                }
                row_of[valid] = row;
                ky_of[valid++] = ky;
            }
            for (int64_t r = 0; r < phases; ++r) {
                int k = 0;
                for (int i = 0; i < valid; ++i)
                    for (const Column& c : by_phase[r]) {
                        Tap& tap = list[k++];  // field by field (see backward_data_depthwise)
                        tap.in = row_of[i] + c.q;
                        tap.w = wc[ky_of[i] * p.kernel_w + c.kx];
                    }
                fused(list.data(), k, w.bias[ch], ceil_div(p.clip_w - r, s),
                      out_phases.data() + r * length);
            }
            float* v = out_phases.data();
            if (ntype != NeuronType::None)
                for (int64_t i = 0; i < phases * length; ++i)
                    v[i] = apply_neuron(ntype, v[i], p.neuron_a, p.neuron_b, p.neuron_c, slope);
            const int64_t out0 = dst_index(p, n, ch, yy, 0);
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
            for (int64_t r = 0; r < phases; ++r)
                for (int64_t j = 0, xx = r; xx < p.clip_w; ++j, xx += s)
                    store<float>(dst, p.dst_type, out0 + xx * p.dst_stride_w, v[r * length + j]);
        }
    });
}

namespace {
// Row iy of plane (n, ch) of the tensor in the source role (dX), from floats.
void store_source_row(const ConvtParams& p, const float* row, void* dx, int64_t n, int64_t ch,
                      int64_t iy) {
    const int64_t out0 = src_index(p, n, ch, iy, 0);
    if (p.src_type == CONVT_TYPE_F32 && p.src_stride_w == 1) {
        std::memcpy(static_cast<float*>(dx) + out0, row, sizeof(float) * p.src_w);
    } else if (p.src_type == CONVT_TYPE_F16 && p.src_stride_w == 1) {
        floats_to_halves(row, static_cast<int>(p.src_w), static_cast<uint16_t*>(dx) + out0);
    } else {
        for (int64_t ix = 0; ix < p.src_w; ++ix)
            store<float>(dx, p.src_type, out0 + ix * p.src_stride_w, row[ix]);
    }
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
    std::vector<TapColumn> columns;
    for (int kx = 0; kx < p.kernel_w; ++kx) columns.push_back(tap_column(p, kx));
    const int64_t pad = gradient_padding(p, columns);
    const FusedTaps fused = pick_fused_taps();
    ThreadPool::instance().parallel_for(int64_t(p.num_images) * p.groups, [&](int64_t task) {
        const int64_t n = task / p.groups, ch = task % p.groups;
        const float* wc = w.taps.data() + ch * taps;
        // The thread-locals looked up once (each use is a call in a shared library).
        thread_local DyRows dy_rows_tls;
        thread_local std::vector<float> acc_tls;
        thread_local std::vector<Tap> list_tls;
        DyRows& dy_rows = dy_rows_tls;
        std::vector<float>& acc = acc_tls;
        std::vector<Tap>& list = list_tls;
        dy_rows.begin(p, dy, n, ch, pad);
        acc.resize(static_cast<size_t>(p.src_w));
        list.resize(static_cast<size_t>(taps));
        for (int64_t iy = 0; iy < p.src_h; ++iy) {
            int k = 0;
            for (int ky = 0; ky < p.kernel_h; ++ky) {
                const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
                if (yy < 0 || yy >= p.clip_h) continue;
                const PaddedPhases& row = dy_rows.get(yy);
                for (int kx = 0; kx < p.kernel_w; ++kx) {
                    const TapColumn& t = columns[kx];
                    if (t.lo > t.hi) continue;
                    // Field by field: a Tap built on the stack and copied whole was reloaded
                    // across its two smaller stores (a failed store-to-load forward a tap:
                    // 17% of dw_k4s2's dX).
                    Tap& tap = list[k++];
                    tap.in = row.phase(t.phase) - t.shift;
                    tap.w = wc[ky * p.kernel_w + kx];
                }
            }
            fused(list.data(), k, 0.f, p.src_w, acc.data());
            store_source_row(p, acc.data(), dx, n, ch, iy);
        }
    });
}

void backward_weights_depthwise(const ConvtParams& p, const void* x, const void* dy,
                                const detail::GradientOutput& out) {
    const int taps = p.kernel_h * p.kernel_w;
    std::vector<TapColumn> columns;
    for (int kx = 0; kx < p.kernel_w; ++kx) columns.push_back(tap_column(p, kx));
    const int64_t pad = gradient_padding(p, columns);
    const DotLanes dot = pick_dot_lanes();
    ThreadPool::instance().parallel_for(p.groups, [&](int64_t ch) {
        thread_local DyRows dy_rows;
        thread_local std::vector<float> xrow, lanes;
        xrow.resize(static_cast<size_t>(p.src_w));
        lanes.assign(static_cast<size_t>(taps) * 8, 0.f);  // [tap][column % 8]
        for (int64_t n = 0; n < p.num_images; ++n) {
            dy_rows.begin(p, dy, n, ch, pad);
            for (int64_t iy = 0; iy < p.src_h; ++iy) {
                bool loaded = false;
                for (int ky = 0; ky < p.kernel_h; ++ky) {
                    const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
                    if (yy < 0 || yy >= p.clip_h) continue;
                    if (!loaded)
                        load_row(x, p.src_type, src_index(p, n, ch, iy, 0), p.src_stride_w, p.src_w,
                                 xrow.data());
                    loaded = true;
                    const PaddedPhases& row = dy_rows.get(yy);
                    for (int kx = 0; kx < p.kernel_w; ++kx) {
                        const TapColumn& t = columns[kx];
                        if (t.lo <= t.hi)  // else the tap reaches no column: adds nothing
                            dot(xrow.data() + t.lo, row.phase(t.phase) - t.shift + t.lo,
                                t.hi - t.lo + 1, lanes.data() + (ky * p.kernel_w + kx) * 8);
                    }
                }
            }
        }
        finish_weight_lanes(lanes.data(), taps, ch, out);
    });
}

void backward_depthwise(const ConvtParams& pd, const DepthwiseWeights& w, const void* dy, void* dx,
                        const ConvtParams& pw, const void* x, const detail::GradientOutput& out) {
    const int taps = pd.kernel_h * pd.kernel_w;
    std::vector<TapColumn> columns;
    for (int kx = 0; kx < pd.kernel_w; ++kx) columns.push_back(tap_column(pd, kx));
    const int64_t pad = gradient_padding(pd, columns);
    const FusedTaps fused = pick_fused_taps();
    const DotLanes dot = pick_dot_lanes();
    // By channel, images in order (dW's order, as backward_weights_depthwise); each dY row is
    // read and split once for both gradients.
    ThreadPool::instance().parallel_for(pd.groups, [&](int64_t ch) {
        const float* wc = w.taps.data() + ch * taps;
        thread_local DyRows dy_rows_tls;
        thread_local std::vector<float> acc_tls, xrow_tls, lanes_tls;
        thread_local std::vector<Tap> list_tls;
        DyRows& dy_rows = dy_rows_tls;  // looked up once (as in backward_data_depthwise)
        std::vector<float>&acc = acc_tls, &xrow = xrow_tls, &lanes = lanes_tls;
        std::vector<Tap>& list = list_tls;
        acc.resize(static_cast<size_t>(pd.src_w));
        xrow.resize(static_cast<size_t>(pw.src_w));
        lanes.assign(static_cast<size_t>(taps) * 8, 0.f);  // [tap][column % 8]
        list.resize(static_cast<size_t>(taps));
        for (int64_t n = 0; n < pd.num_images; ++n) {
            dy_rows.begin(pd, dy, n, ch, pad);
            for (int64_t iy = 0; iy < pd.src_h; ++iy) {
                int k = 0;
                bool loaded = false;
                for (int ky = 0; ky < pd.kernel_h; ++ky) {
                    const int64_t yy =
                        iy * pd.stride_y - pd.first_tap_y - int64_t(pd.dilation_y) * ky;
                    if (yy < 0 || yy >= pd.clip_h) continue;
                    if (!loaded)
                        load_row(x, pw.src_type, src_index(pw, n, ch, iy, 0), pw.src_stride_w,
                                 pw.src_w, xrow.data());
                    loaded = true;
                    const PaddedPhases& row = dy_rows.get(yy);
                    for (int kx = 0; kx < pd.kernel_w; ++kx) {
                        const TapColumn& t = columns[kx];
                        if (t.lo > t.hi) continue;  // the tap reaches no column
                        const float* d = row.phase(t.phase) - t.shift;
                        Tap& tap = list[k++];  // field by field (see backward_data_depthwise)
                        tap.in = d;
                        tap.w = wc[ky * pd.kernel_w + kx];
                        dot(xrow.data() + t.lo, d + t.lo, t.hi - t.lo + 1,
                            lanes.data() + (ky * pd.kernel_w + kx) * 8);
                    }
                }
                fused(list.data(), k, 0.f, pd.src_w, acc.data());
                store_source_row(pd, acc.data(), dx, n, ch, iy);
            }
        }
        finish_weight_lanes(lanes.data(), taps, ch, out);
    });
}

}  // namespace convt::cpu
