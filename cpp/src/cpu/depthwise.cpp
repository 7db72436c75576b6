#include "depthwise.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "elements.h"
#include "geometry.h"
#include "half_rows.h"
#include "neuron.h"
#include "thread_pool.h"

namespace convt::cpu {
namespace {

// count elements first, first + step, ... of a tensor, as floats.
void load_row(const void* base, int32_t type, int64_t first, int64_t step, int64_t count,
              float* out) {
    if (type == CONVT_TYPE_F32 && step == 1) {
        std::memcpy(out, static_cast<const float*>(base) + first, sizeof(float) * count);
        return;
    }
    if (type == CONVT_TYPE_F16 && step == 1) {
        halves_to_floats(static_cast<const uint16_t*>(base) + first, static_cast<int>(count), out);
        return;
    }
    for (int64_t i = 0; i < count; ++i) out[i] = load<float>(base, type, first + i * step);
}

// A destination row split by stride phase: phase r holds columns r, r + s, ... contiguously.
struct PhaseRows {
    int64_t phases = 0, length = 0;  // length: columns of phase 0, the longest
    std::vector<float> values;       // [phase][length]
    float* phase(int64_t r) { return values.data() + r * length; }
    void shape(int64_t stride, int64_t columns) {
        phases = std::min(stride, columns);
        length = ceil_div(columns, stride);
        values.resize(static_cast<size_t>(phases * length));
    }
};

// What tap column kx reads of a dY row split by phase: source columns lo..hi meet consecutive
// entries of one phase row, from `first` on (consecutive source columns are stride_x apart in
// dY, so in one phase). Empty when lo > hi.
struct TapRun {
    int64_t lo, hi;
    const float* first;
};
inline TapRun tap_run(const ConvtParams& p, PhaseRows& phases, int kx) {
    const int64_t c = p.first_tap_x + int64_t(p.dilation_x) * kx, s = p.stride_x;
    const auto [lo, hi] = source_span(c, s, p.clip_w, p.src_w);
    if (lo > hi) return {lo, hi, nullptr};
    const int64_t r = pos_mod(-c, s);  // the phase; (lo * s - c - r) / s its index there
    return {lo, hi, phases.phase(r) + (lo * s - c - r) / s};
}

void load_dy_row(const ConvtParams& p, const void* dy, int64_t n, int64_t ch, int64_t yy,
                 std::vector<float>& row, PhaseRows& out) {
    row.resize(static_cast<size_t>(p.clip_w));
    load_row(dy, p.dst_type, dst_index(p, n, ch, yy, 0), p.dst_stride_w, p.clip_w, row.data());
    for (int64_t r = 0; r < out.phases; ++r) {
        float* o = out.phase(r);
        for (int64_t j = 0, xx = r; xx < p.clip_w; ++j, xx += p.stride_x) o[j] = row[xx];
    }
}

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
    const int64_t taps = int64_t(p.kernel_h) * p.kernel_w;
    std::vector<ColumnRun> runs(static_cast<size_t>(p.kernel_w));
    for (int kx = 0; kx < p.kernel_w; ++kx) runs[kx] = column_run(p, kx);
    const auto ntype = static_cast<NeuronType>(p.neuron);
    ThreadPool::instance().parallel_for(int64_t(p.num_images) * p.groups, [&](int64_t task) {
        const int64_t n = task / p.groups, ch = task % p.groups;
        const float* wc = w.taps.data() + ch * taps;
        const float slope = w.slopes.empty() ? 0.f : w.slopes[ch];
        thread_local PhaseRows acc;
        thread_local std::vector<float> row;
        acc.shape(p.stride_x, p.clip_w);
        row.resize(static_cast<size_t>(p.src_w));
        for (int64_t yy = 0; yy < p.clip_h; ++yy) {
            std::fill(acc.values.begin(), acc.values.end(), w.bias[ch]);
            for (int ky = 0; ky < p.kernel_h; ++ky) {
                const int64_t iy = source_row(p, yy, ky);
                if (iy < 0) continue;
                load_row(src, p.src_type, src_index(p, n, ch, iy, 0), p.src_stride_w, p.src_w,
                         row.data());
                for (int kx = 0; kx < p.kernel_w; ++kx) {
                    const ColumnRun& r = runs[kx];
                    if (r.count <= 0) continue;
                    float* a = acc.phase(r.xx0 % p.stride_x) + r.xx0 / p.stride_x;
                    const float* s = row.data() + r.ix0;
                    const float wv = wc[ky * p.kernel_w + kx];
                    for (int64_t j = 0; j < r.count; ++j) a[j] += wv * s[j];
                }
            }
            const int64_t out0 = dst_index(p, n, ch, yy, 0);
            if (ntype != NeuronType::None)
                for (float& v : acc.values)
                    v = apply_neuron(ntype, v, p.neuron_a, p.neuron_b, p.neuron_c, slope);
            for (int64_t r = 0; r < acc.phases; ++r) {
                const float* a = acc.phase(r);
                const int64_t step = int64_t(p.stride_x) * p.dst_stride_w;
                const int64_t count = ceil_div(p.clip_w - r, p.stride_x);
                const int64_t first = out0 + r * p.dst_stride_w;
                if (p.dst_type == CONVT_TYPE_F32) {
                    float* d = static_cast<float*>(dst) + first;
                    for (int64_t j = 0; j < count; ++j) d[j * step] = a[j];
                } else {
                    for (int64_t j = 0; j < count; ++j)
                        store<float>(dst, p.dst_type, first + j * step, a[j]);
                }
            }
        }
    });
}

void backward_data_depthwise(const ConvtParams& p, const DepthwiseWeights& w, const void* dy,
                             void* dx) {
    const int64_t taps = int64_t(p.kernel_h) * p.kernel_w;
    ThreadPool::instance().parallel_for(int64_t(p.num_images) * p.groups, [&](int64_t task) {
        const int64_t n = task / p.groups, ch = task % p.groups;
        const float* wc = w.taps.data() + ch * taps;
        thread_local PhaseRows phases;
        thread_local std::vector<float> acc, row;
        phases.shape(p.stride_x, p.clip_w);
        acc.resize(static_cast<size_t>(p.src_w));
        for (int64_t iy = 0; iy < p.src_h; ++iy) {
            std::fill(acc.begin(), acc.end(), 0.f);
            for (int ky = 0; ky < p.kernel_h; ++ky) {
                const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
                if (yy < 0 || yy >= p.clip_h) continue;
                load_dy_row(p, dy, n, ch, yy, row, phases);
                for (int kx = 0; kx < p.kernel_w; ++kx) {
                    const auto [lo, hi, d] = tap_run(p, phases, kx);
                    if (lo > hi) continue;
                    const float wv = wc[ky * p.kernel_w + kx];
                    float* a = acc.data() + lo;
                    for (int64_t i = 0; i <= hi - lo; ++i) a[i] += wv * d[i];
                }
            }
            const int64_t out0 = src_index(p, n, ch, iy, 0);
            for (int64_t ix = 0; ix < p.src_w; ++ix)
                store<float>(dx, p.src_type, out0 + ix * p.src_stride_w, acc[ix]);
        }
    });
}

void backward_weights_depthwise(const ConvtParams& p, const void* x, const void* dy,
                                const detail::GradientOutput& out) {
    const int taps = p.kernel_h * p.kernel_w;
    ThreadPool::instance().parallel_for(p.groups, [&](int64_t ch) {
        thread_local PhaseRows phases;
        thread_local std::vector<float> xrow, row, lanes;
        phases.shape(p.stride_x, p.clip_w);
        xrow.resize(static_cast<size_t>(p.src_w));
        lanes.assign(static_cast<size_t>(taps) * 8, 0.f);  // [tap][column % 8]
        for (int64_t n = 0; n < p.num_images; ++n)
            for (int64_t iy = 0; iy < p.src_h; ++iy) {
                bool loaded = false;
                for (int ky = 0; ky < p.kernel_h; ++ky) {
                    const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
                    if (yy < 0 || yy >= p.clip_h) continue;
                    if (!loaded)
                        load_row(x, p.src_type, src_index(p, n, ch, iy, 0), p.src_stride_w, p.src_w,
                                 xrow.data());
                    loaded = true;
                    load_dy_row(p, dy, n, ch, yy, row, phases);
                    for (int kx = 0; kx < p.kernel_w; ++kx) {
                        const auto [lo, hi, d] = tap_run(p, phases, kx);  // d[ix - lo]
                        if (lo > hi) continue;
                        float* lane = lanes.data() + (ky * p.kernel_w + kx) * 8;
                        float l[8];  // local: lets the compiler keep them in a register
                        std::copy(lane, lane + 8, l);
                        const float* xr = xrow.data();
                        int64_t ix = lo;
                        for (; ix <= hi && ix % 8 != 0; ++ix) l[ix % 8] += xr[ix] * d[ix - lo];
                        for (; ix + 8 <= hi + 1; ix += 8)
                            for (int k = 0; k < 8; ++k) l[k] += xr[ix + k] * d[ix - lo + k];
                        for (; ix <= hi; ++ix) l[ix % 8] += xr[ix] * d[ix - lo];
                        std::copy(l, l + 8, lane);
                    }
                }
            }
        auto* dw = static_cast<float*>(out.weights);
        for (int t = 0; t < taps; ++t) {
            const float* l = lanes.data() + t * 8;
            const float v = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
            float& o = dw[ch * taps + t];
            o = out.accumulate ? o + v : v;
        }
    });
}

}  // namespace convt::cpu
