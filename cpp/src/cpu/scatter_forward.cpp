#include "scatter_forward.h"

#include <algorithm>
#include <cstring>

#include "conv_gemm.h"
#include "elements.h"
#include "geometry.h"
#include "half_rows.h"
#include "micro_kernel.h"
#include "neuron.h"
#include "row_shuffles.h"
#include "thread_pool.h"

namespace convt::cpu {
namespace {

// Output channels per group served (fsrcnn: 1, dcgan_out: 3); from 6 up a tile of output
// channels is full and the phase-by-phase GEMM reads each source pixel fewer times.
constexpr int kScatterMaxOut = 4;
// A task's destination rows, split by phase, stay within this many floats (L2-resident with
// the product rows and the packed source row).
constexpr int64_t kAccumulatorFloats = 64 * 1024;

int tiles_of(int64_t n) { return static_cast<int>(ceil_div(n, kMr)); }

// Source row (n, channels [c0, c0 + ig), iy) as [panel][icl][kNr] floats, zeros past the row.
void pack_source_row(const ConvtParams& p, const void* src, int64_t n, int64_t c0, int ig,
                     int64_t iy, int panels, float* out) {
    thread_local std::vector<float> line;
    line.resize(size_t(panels) * kNr);
    for (int icl = 0; icl < ig; ++icl) {
        const int64_t at = src_index(p, n, c0 + icl, iy, 0);
        const float* row = line.data();
        if (p.src_type == CONVT_TYPE_F32 && p.src_stride_w == 1 && p.src_w % kNr == 0) {
            row = static_cast<const float*>(src) + at;  // whole panels: copied from the tensor
        } else {
            load_row(src, p.src_type, at, p.src_stride_w, p.src_w, line.data());
            std::fill(line.begin() + p.src_w, line.end(), 0.f);
        }
        for (int jp = 0; jp < panels; ++jp)
            std::memcpy(out + (int64_t(jp) * ig + icl) * kNr, row + int64_t(jp) * kNr,
                        sizeof(float) * kNr);
    }
}

}  // namespace

bool scatter_weights_wanted(const detail::PreparedWeights& pw) {
    const int64_t og = pw.out_channels / pw.groups;
    return pw.type != DataType::Float64 && og <= kScatterMaxOut &&
           og * pw.kernel_h * pw.kernel_w >= 8;
}

void pack_scatter_weights(const detail::PreparedWeights& pw, ScatterWeights& out) {
    out.take_shape(pw);
    const int og = out.out_per_group, ig = out.in_per_group, taps = out.taps;
    out.tiles = tiles_of(int64_t(og) * taps);
    out.packed.assign(size_t(out.groups) * out.tiles * ig * kMr, 0.f);
    for (int64_t oc = 0; oc < pw.out_channels; ++oc) {
        const int64_t g = oc / og, ocl = oc % og;
        for (int64_t t = 0; t < taps; ++t) {
            const int64_t m = ocl * taps + t;
            float* tile = out.packed.data() + ((g * out.tiles + m / kMr) * ig) * kMr + m % kMr;
            for (int64_t icl = 0; icl < ig; ++icl)
                tile[icl * kMr] = static_cast<float>(pw.values[(oc * taps + t) * ig + icl]);
        }
    }
    pack_epilogue(pw, out.bias, out.slopes);
}

bool forward_scatter_fits(const ConvtParams& p, const ScatterWeights& w) {
    return !w.packed.empty() && p.src_type != CONVT_TYPE_F64 && p.dst_type != CONVT_TYPE_F64 &&
           !p.accumulate_half && w.out_per_group == p.out_per_group &&
           w.in_per_group == p.in_per_group && w.taps == p.kernel_h * p.kernel_w;
}

void forward_scatter(const ConvtParams& p, const ScatterWeights& w, const void* src, void* dst) {
    const int og = p.out_per_group, ig = p.in_per_group, kw = p.kernel_w, taps = w.taps;
    const int64_t sy = p.stride_y, sx = p.stride_x, dy = p.dilation_y;
    const int64_t qw = ceil_div(p.clip_w, sx);  // columns of phase 0, the longest
    const int panels = static_cast<int>(ceil_div(p.src_w, kNr));
    const int64_t ldc = int64_t(panels) * kNr;
    const int64_t images = p.num_images;
    if (images == 0 || p.clip_h == 0 || p.clip_w == 0) return;
    std::vector<ColumnRun> columns(static_cast<size_t>(kw));
    for (int kx = 0; kx < kw; ++kx) columns[kx] = column_run(p, kx);

    // Destination rows per task: as many as the accumulator holds, then halved while the
    // threads would get fewer than 4 tasks each (a task also computes the source rows its
    // neighbours share: rows / stride + kernel span / stride of them).
    const int64_t row_floats = int64_t(og) * sx * qw;
    int64_t block = std::clamp<int64_t>(kAccumulatorFloats / row_floats, 1, p.clip_h);
    const int64_t want = 4 * int64_t(ThreadPool::instance().num_threads());
    while (block > sy && p.groups * images * ceil_div(p.clip_h, block) < want)
        block = ceil_div(block, 2);
    const int64_t blocks = ceil_div(p.clip_h, block);
    const auto ntype = static_cast<NeuronType>(p.neuron);
    const MicroKernel uk = micro_kernel();

    ThreadPool::instance().parallel_for(p.groups * images * blocks, [&](int64_t task) {
        const int g = static_cast<int>(task / (images * blocks));
        const int64_t n = task / blocks % images;
        const int64_t oy0 = task % blocks * block, oy1 = std::min<int64_t>(p.clip_h, oy0 + block);
        const int64_t rows = oy1 - oy0;
        thread_local std::vector<float> acc, xpack, c, line;
        thread_local std::vector<const float*> phase_rows;
        acc.resize(static_cast<size_t>(og * rows * sx * qw));  // [ocl][row][phase][q]
        for (int ocl = 0; ocl < og; ++ocl)
            std::fill_n(acc.data() + ocl * rows * sx * qw, rows * sx * qw,
                        w.bias[int64_t(g) * og + ocl]);
        xpack.resize(size_t(panels) * ig * kNr);
        c.resize(size_t(w.tiles) * kMr * ldc);
        // Source rows whose taps land in [oy0, oy1): yy = iy * sy - first_tap_y - dy * ky.
        const int64_t iy_lo = std::max<int64_t>(0, ceil_div(oy0 + p.first_tap_y, sy));
        const int64_t iy_hi = std::min<int64_t>(
            p.src_h - 1, floor_div(oy1 - 1 + p.first_tap_y + dy * (p.kernel_h - 1), sy));
        const float* a_group = w.packed.data() + int64_t(g) * w.tiles * ig * kMr;
        for (int64_t iy = iy_lo; iy <= iy_hi; ++iy) {
            auto lands = [&](int m) {  // row m's destination row, or -1 outside the block
                const int ky = m % taps / kw;
                const int64_t yy = iy * sy - p.first_tap_y - dy * ky;
                return yy >= oy0 && yy < oy1 && columns[m % taps % kw].count > 0 ? yy : -1;
            };
            pack_source_row(p, src, n, int64_t(g) * ig, ig, iy, panels, xpack.data());
            for (int o = 0; o < w.tiles; ++o) {
                bool needed = false;
                for (int m = o * kMr; m < std::min(og * taps, (o + 1) * kMr); ++m)
                    needed = needed || lands(m) >= 0;
                if (!needed) continue;
                float* ct = c.data() + int64_t(o) * kMr * ldc;
                std::fill_n(ct, kMr * ldc, 0.f);
                for (int jp = 0; jp < panels; ++jp) {
                    const Segment one{a_group + int64_t(o) * ig * kMr,
                                      xpack.data() + int64_t(jp) * ig * kNr, ig};
                    uk(&one, 1, 0, 0, ct + jp * kNr, ldc, false);
                }
            }
            // Row m = (ocl, ky, kx) adds its run of source columns to the phase row of
            // destination columns xx0, xx0 + sx, ...: consecutive entries there.
            for (int m = 0; m < og * taps; ++m) {
                const int64_t yy = lands(m);
                if (yy < 0) continue;
                const ColumnRun& run = columns[m % taps % kw];
                const int ocl = m / taps;
                float* to = acc.data() + ((ocl * rows + (yy - oy0)) * sx + run.xx0 % sx) * qw +
                            run.xx0 / sx;
                const float* from = c.data() + int64_t(m) * ldc + run.ix0;
                for (int64_t j = 0; j < run.count; ++j) to[j] += from[j];
            }
        }
        // Neuron, phases interleaved, stored.
        line.resize(static_cast<size_t>(sx * qw));
        phase_rows.resize(static_cast<size_t>(sx));
        for (int ocl = 0; ocl < og; ++ocl) {
            const int64_t ch = int64_t(g) * og + ocl;
            const float slope = w.slopes.empty() ? 0.f : w.slopes[ch];
            for (int64_t r = 0; r < rows; ++r) {
                float* phases = acc.data() + (ocl * rows + r) * sx * qw;
                if (ntype != NeuronType::None)
                    for (int64_t i = 0; i < sx * qw; ++i)
                        phases[i] = apply_neuron(ntype, phases[i], p.neuron_a, p.neuron_b,
                                                 p.neuron_c, slope);
                const float* out = phases;
                if (sx > 1) {
                    for (int64_t ph = 0; ph < sx; ++ph) phase_rows[ph] = phases + ph * qw;
                    interleave(phase_rows.data(), static_cast<int>(sx), qw, line.data());
                    out = line.data();
                }
                store_row(dst, p.dst_type, dst_index(p, n, ch, oy0 + r, 0), p.dst_stride_w,
                          p.clip_w, out);
            }
        }
    });
}

}  // namespace convt::cpu
