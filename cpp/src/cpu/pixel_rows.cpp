#include "pixel_rows.h"

#include <algorithm>
#include <vector>

#include "elements.h"
#include "geometry.h"
#include "half_rows.h"
#include "micro_kernel.h"
#include "neuron.h"
#include "thread_pool.h"

namespace convt::cpu {
namespace {

// dX: fewer output channels a group make segments of a step or two, each a restart of the
// kernel's loop (fsrcnn's 81 taps of one channel: 1.03x the channel-major path's time; three,
// dcgan_out: 0.81-0.89x).
constexpr int kMinOutputChannels = 3;
// The forward's segments are a tap's input channels.
constexpr int kMinDepth = 8;

// Channels that fill three quarters of their register tile's 16-column panels or more.
bool fills_panels(int64_t channels) { return 4 * channels >= 3 * ceil_div(channels, kNr) * kNr; }

// Where 3x3 Winograd tiles (winograd.cpp, tried first) lose to pixel rows on channels-contiguous
// tensors: their transposes, transforms and strided stores outweigh the products they save
// at most this many channels one way, or kMaxDilatedWinogradLoss with dilation. In-process
// A/B, pixel rows over tiles (time), N = 8, two threads, 64 x 64, forward / dX: 16 channels
// 0.80 / 0.59, 16 -> 64 0.84 / 0.74, 64 -> 16 0.79 / 0.85; at dilation 2, 16 channels 0.46 /
// 0.39, 24 0.92 / 0.80, 32 0.77 / 0.77 (dil2; 0.89 / 0.85 at 128 x 128, 0.91 / 0.92 at N = 1);
// one kernel row of 4096, 16 channels 0.70 / 0.55, 32 at dilation 2 0.42 / 0.49. Against: 24
// channels 1.40 / 1.13 (three quarters of their panels), 32 0.99 / 0.96, 48 1.33 / 1.33, 48 at
// dilation 2 0.99 / 1.05; columns that fill half their panels or less (4 or 8 input channels of
// dX: 1.12 and 1.30 on one kernel row). fp16, tiles over pixel rows: 16 channels 1.13 / 1.29,
// 2.03 / 2.03 at dilation 2; 32 at dilation 2 1.12 / 1.06; 24 at dilation 2 0.92 / 1.31.
// Odd kernels (k = 2s - 1 at stride s >= 2, whose dX Winograd runs stride phase by phase, from
// 64 channels either way) lose up to kMaxOddWinogradLoss channels one way: pixel rows over
// tiles, dX, 32 x 32 sources, float32 / fp16: 64 channels 0.69 / 0.76 (0.76 / 0.62 at 64 x 64),
// 64 -> 128 0.67 / 0.83, 96 0.86 / 0.93, 128 0.94 / 0.98, vae_dec (128 -> 64) 0.92-1.00 /
// 0.91; 256 -> 128 at 16 x 16 0.99 / 0.99, 128 -> 64 at k5 s3 0.99 / 1.03.
constexpr int kMaxWinogradLoss = 16;
constexpr int kMaxDilatedWinogradLoss = 32;
constexpr int kMaxOddWinogradLoss = 128;
bool few_channels_for_winograd(const ConvtParams& p) {
    const int least = std::min(p.in_per_group, p.out_per_group);
    const bool odd = p.stride_x >= 2 && p.stride_y == p.stride_x &&
                     p.kernel_w == 2 * p.stride_x - 1 && p.kernel_h == p.kernel_w;
    if (odd) return least <= kMaxOddWinogradLoss;
    const bool dilated = p.dilation_y > 1 || p.dilation_x > 1;
    return least <= (dilated ? kMaxDilatedWinogradLoss : kMaxWinogradLoss);
}

// Weights with `cols` channels (input channels for dX, output channels for the forward) as the
// register tile's columns, taps in blocks of `row_taps` (1, or a kernel row's kernel_w, kx from
// the last down): out[g][tap / row_taps][panel][row_taps - 1 - tap % row_taps][row channel][kNr]
// = from(g, tap, row, col), zeros past `cols` in the last panel.
template <typename From>
void pack_by_pixel(const GemmWeights& w, int rows, int cols, int row_taps, std::vector<float>& out,
                   const From& from) {
    const int64_t panels = ceil_div(cols, kNr);
    out.assign(size_t(w.groups) * w.taps * panels * rows * kNr, 0.f);
    for (int64_t g = 0; g < w.groups; ++g)
        for (int64_t t = 0; t < w.taps; ++t) {
            const int64_t block = g * (w.taps / row_taps) + t / row_taps;
            const int64_t within = row_taps - 1 - t % row_taps;
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t col = 0; col < cols; ++col)
                    out[(((block * panels + col / kNr) * row_taps + within) * rows + r) * kNr +
                        col % kNr] = from(g, t, r, col);
        }
}

int panels_of(const GemmWeights& w) { return static_cast<int>(ceil_div(w.in_per_group, kNr)); }
int out_panels_of(const GemmWeights& w) { return static_cast<int>(ceil_div(w.out_per_group, kNr)); }

// dX: rows output channels, columns input channels, from `backward`, a kernel row's taps in one
// block (kx from the last down: the order in which they read dY's pixels).
const float* by_pixel_weights(const GemmWeights& w, int kernel_w) {
    std::call_once(w.by_pixel_once, [&w, kernel_w] {
        const int og = w.out_per_group;
        pack_by_pixel(
            w, og, w.in_per_group, kernel_w, w.by_pixel,
            [&](int64_t g, int64_t t, int64_t ocl, int64_t icl) {
                return w.backward[g * w.taps * w.in_tiles * og * kMr + t * w.backward_tap_step +
                                  icl / kMr * w.backward_tile_step + ocl * kMr + icl % kMr];
            });
    });
    return w.by_pixel.data();
}

// The forward: rows input channels, columns output channels, from `forward`.
const float* forward_by_pixel_weights(const GemmWeights& w) {
    std::call_once(w.forward_by_pixel_once, [&w] {
        const int ig = w.in_per_group;
        pack_by_pixel(
            w, ig, w.out_per_group, 1, w.forward_by_pixel,
            [&](int64_t g, int64_t t, int64_t icl, int64_t ocl) {
                return w.forward[(((g * w.taps + t) * w.out_tiles + ocl / kMr) * ig + icl) * kMr +
                                 ocl % kMr];
            });
    });
    return w.forward_by_pixel.data();
}

template <typename Body>
void for_row_runs(int64_t images, int64_t rows, const Body& body) {
    const int64_t threads = ThreadPool::instance().num_threads();
    const int64_t per_run = std::clamp<int64_t>(images * rows / (8 * threads), 1, rows);
    const int64_t runs = ceil_div(rows, per_run);
    ThreadPool::instance().parallel_for(images * runs, [&](int64_t task) {
        const int64_t y0 = task % runs * per_run;
        body(task / runs, y0, std::min(rows, y0 + per_run));
    });
}

// Lines fetched into L2 a few at a time: rows [y0, y1] of a channels-contiguous image, `width`
// pixels from element `first` (row y0's first pixel, channel 0) on, as one span of memory (the
// caller checks that rows and pixels lie forwards), spread over `calls` pump() calls.
class LinePump {
 public:
    void set(const void* data, int32_t type, int64_t first, int64_t rows_apart,
             int64_t pixel_stride, int64_t width, int64_t channels, int64_t calls) {
        const int64_t last = first + rows_apart + (width - 1) * pixel_stride + channels - 1;
        const int64_t bytes = type_bytes(type);
        from_ = static_cast<const char*>(data) + first * bytes;
        lines_ = (last - first) * bytes / 64 + 2;  // the ends' partial lines
        rate_ = ceil_div(lines_, std::max<int64_t>(calls, 1));
    }
    void pump() {
        for (int64_t k = 0; k < rate_ && done_ < lines_; ++k, ++done_)
            __builtin_prefetch(from_ + done_ * 64, 0, 2);
    }

 private:
    const char* from_ = nullptr;
    int64_t lines_ = 0, done_ = 0, rate_ = 0;
};

// A channels-contiguous tensor's rows of `pixels` pixels x `channels` channels, pixel_step
// elements apart, as floats: read and written in place when float32, else converted a row at a
// time through a buffer of floats() floats (pixels then `channels` floats apart). A source's
// rows (a const tensor, its pointer cast) are only read().
struct FloatRows {
    void* data;
    int32_t type;
    int64_t pixels, pixel_step, channels;
    bool in_place() const { return type == CONVT_TYPE_F32; }
    // Floats from one pixel to the next in the rows read() and sums() give.
    int64_t step() const { return in_place() ? pixel_step : channels; }
    int64_t floats() const { return pixels * channels; }
    // The row whose first element (pixel 0, channel 0) is `first`: in place, else into `slot`.
    const float* read(int64_t first, float* slot) const {
        if (in_place()) return static_cast<const float*>(data) + first;
        load_pixels(data, type, first, pixels, pixel_step, channels, slot);
        return slot;
    }
    // Where that row's sums go: in place, else `buffer`, which store() then converts.
    float* sums(int64_t first, float* buffer) const {
        return in_place() ? static_cast<float*>(data) + first : buffer;
    }
    void store(int64_t first, const float* buffer) const {
        if (!in_place()) store_pixels(data, type, first, pixels, pixel_step, channels, buffer);
    }
};

// A thread's buffers for a task: the segments, the source rows an output row reads (`slots` of
// them, converted for each output row that reads them when not float32) and the output row.
struct PixelRowsScratch {
    std::vector<Segment> segments;
    std::vector<const float*> rows;
    std::vector<float> converted, out_row;
    void begin(int64_t taps, int64_t slots, const FloatRows& in, const FloatRows& out) {
        segments.resize(size_t(taps));
        rows.resize(size_t(slots));
        if (!in.in_place()) converted.resize(size_t(slots * in.floats()));
        if (!out.in_place()) out_row.resize(size_t(out.floats()));
    }
    // rows[slot] = the source row whose first element is `first`.
    void read(const FloatRows& in, int64_t slot, int64_t first) {
        rows[size_t(slot)] =
            in.read(first, in.in_place() ? nullptr : converted.data() + slot * in.floats());
    }
};

// The end of the run of tiles' pixels from q0 on (at most kMr, before `count`) whose taps
// inside the source are those of q0, [lo0, hi0]: taps(q, lo, hi) gives pixel q's run of taps.
template <typename Taps>
int64_t run_end(int64_t q0, int64_t count, const Taps& taps, int& lo0, int& hi0) {
    taps(q0, lo0, hi0);
    int64_t q1 = q0 + 1;
    for (int lo, hi; q1 < count && q1 - q0 < kMr; ++q1) {
        taps(q1, lo, hi);
        if (lo != lo0 || hi != hi0) break;
    }
    return q1;
}

// The segments' sums for `rows` pixels x `cols` channels into c (pixels ldc apart): whole
// panels in place, a panel past the last channel through a buffer (the rest of its columns
// would be the next group's channels). With `start`, each pixel's sums begin from start[0,
// cols) (the forward's bias); without, they overwrite c.
void store_panels(StridedSegmentKernel kernel, const Segment* segments, int count, int64_t lda,
                  int64_t panel_stride, int rows, int cols, const float* start, float* c,
                  int64_t ldc) {
    const int whole = cols / kNr, part = cols - whole * kNr;
    for (int i = 0; i < rows && start; ++i) std::copy_n(start, cols, c + i * ldc);
    if (whole > 0) kernel(segments, count, 0, lda, 1, 0, panel_stride, rows, whole, c, ldc, !start);
    if (part == 0) return;
    float tail[kMr * kNr];
    for (int i = 0; i < rows && start; ++i) {
        std::copy_n(start + whole * kNr, part, tail + i * kNr);
        std::fill_n(tail + i * kNr + part, kNr - part, 0.f);  // summed, then dropped
    }
    kernel(segments, count, 0, lda, 1, whole * panel_stride, panel_stride, rows, 1, tail, kNr,
           !start);
    for (int i = 0; i < rows; ++i) std::copy_n(tail + i * kNr, part, c + i * ldc + whole * kNr);
}

}  // namespace

bool pixel_rows_forward_fits(const ConvtParams& p) {
    // Output channels fill three quarters of their panels or more.
    return !use_neon() && float_or_half(p.src_type) && float_or_half(p.dst_type) &&
           p.src_stride_c == 1 && p.dst_stride_c == 1 && !p.accumulate_half &&
           p.in_per_group >= kMinDepth && fills_panels(p.out_per_group);
}

bool pixel_rows_forward_before_winograd(const ConvtParams& p) {
    return pixel_rows_forward_fits(p) && few_channels_for_winograd(p);
}

void forward_pixel_rows(const ConvtParams& p, const GemmWeights& w, const void* src, void* dst) {
    const int og = p.out_per_group, ig = p.in_per_group;
    const int panels = out_panels_of(w);
    const float* const weights = forward_by_pixel_weights(w);
    const FloatRows in{const_cast<void*>(src), p.src_type, p.src_w, p.src_stride_w, p.in_channels};
    const FloatRows out{dst, p.dst_type, p.clip_w, p.dst_stride_w, p.out_channels};
    const int64_t pixel_step = in.step(), out_step = out.step();
    std::vector<Phase> ys, xs;
    for (int64_t r = 0; r < std::min<int64_t>(p.stride_y, p.clip_h); ++r)
        ys.push_back(phase_of(r, p.stride_y, p.clip_h, p.first_tap_y, p.dilation_y, p.kernel_h));
    for (int64_t r = 0; r < std::min<int64_t>(p.stride_x, p.clip_w); ++r)
        xs.push_back(phase_of(r, p.stride_x, p.clip_w, p.first_tap_x, p.dilation_x, p.kernel_w));
    // Tap a of a phase reads source index first_source[a] + q: inside for a run of a.
    auto taps_in = [](const Phase& ph, int64_t q, int64_t size, int& lo, int& hi) {
        lo = 0;
        hi = static_cast<int>(ph.taps.size()) - 1;
        while (lo <= hi && ph.first_source[lo] + q < 0) ++lo;
        while (hi >= lo && ph.first_source[hi] + q >= size) --hi;
    };
    const auto ntype = static_cast<NeuronType>(p.neuron);
    const StridedSegmentKernel kernel = strided_segment_kernel();
    const bool forwards = p.src_stride_h > 0 && p.src_stride_w > 0;  // LinePump's spans
    int64_t calls = 0;  // kernel calls a row, at least (LinePump's spread)
    for (const Phase& px : xs) calls += p.groups * (ceil_div(px.count, kMr) + 2);
    for_row_runs(p.num_images, p.clip_h, [&](int64_t n, int64_t y0, int64_t y1) {
        PixelRowsScratch& scratch = thread_scratch<PixelRowsScratch>();
        scratch.begin(int64_t(p.kernel_h) * p.kernel_w, p.kernel_h, in, out);
        std::vector<Segment>& segments = scratch.segments;
        for (int64_t oy = y0; oy < y1; ++oy) {
            const Phase& py = ys[size_t(oy % p.stride_y)];
            const int64_t qy = oy / p.stride_y;
            int a_lo, a_hi;
            taps_in(py, qy, p.src_h, a_lo, a_hi);
            for (int a = a_lo; a <= a_hi; ++a)
                scratch.read(
                    in, a - a_lo,
                    p.src_base + n * p.src_stride_n + (py.first_source[a] + qy) * p.src_stride_h);
            const int64_t out_first = p.dst_base + n * p.dst_stride_n +
                                      (p.clip_y + oy) * p.dst_stride_h + p.clip_x * p.dst_stride_w;
            float* const out_row = out.sums(out_first, scratch.out_row.data());
            LinePump fetch;  // the next row's source rows
            if (oy + 1 < y1 && forwards) {
                const Phase& ny = ys[size_t((oy + 1) % p.stride_y)];
                const int64_t nq = (oy + 1) / p.stride_y;
                int lo, hi;
                taps_in(ny, nq, p.src_h, lo, hi);
                if (lo <= hi)
                    fetch.set(src, p.src_type,
                              p.src_base + n * p.src_stride_n +
                                  (ny.first_source[lo] + nq) * p.src_stride_h,
                              (ny.first_source[hi] - ny.first_source[lo]) * p.src_stride_h,
                              p.src_stride_w, p.src_w, p.in_channels, calls);
            }
            for (const Phase& px : xs) {
                // Consecutive q-pixels read consecutive source pixels and land stride_x apart.
                const int64_t ldc = int64_t(p.stride_x) * out_step;
                for (int64_t q0 = 0; q0 < px.count;) {
                    // A run of q-pixels with the same taps inside the source, tiles of kMr.
                    int b_lo, b_hi;
                    const int64_t q1 = run_end(
                        q0, px.count,
                        [&](int64_t q, int& lo, int& hi) { taps_in(px, q, p.src_w, lo, hi); }, b_lo,
                        b_hi);
                    const int rows = static_cast<int>(q1 - q0);
                    for (int g = 0; g < p.groups; ++g) {
                        fetch.pump();
                        int count = 0;
                        for (int a = a_lo; a <= a_hi; ++a)
                            for (int b = b_lo; b <= b_hi; ++b) {
                                const int t = py.taps[a] * p.kernel_w + px.taps[b];
                                segments[count++] = {
                                    scratch.rows[size_t(a - a_lo)] + int64_t(g) * ig +
                                        (px.first_source[b] + q0) * pixel_step,
                                    weights + (int64_t(g) * w.taps + t) * panels * ig * kNr, ig};
                            }
                        float* c = out_row + int64_t(g) * og + (px.r + p.stride_x * q0) * out_step;
                        // The sums start from the bias, as the GEMM forward's.
                        store_panels(kernel, segments.data(), count, pixel_step, int64_t(ig) * kNr,
                                     rows, og, w.bias.data() + int64_t(g) * og, c, ldc);
                        if (ntype != NeuronType::None)
                            for (int i = 0; i < rows; ++i)
                                for (int oc = 0; oc < og; ++oc) {
                                    const float slope =
                                        w.slopes.empty() ? 0.f : w.slopes[int64_t(g) * og + oc];
                                    float& v = c[i * ldc + oc];
                                    v = apply_neuron(ntype, v, p.neuron_a, p.neuron_b, p.neuron_c,
                                                     slope);
                                }
                    }
                    q0 = q1;
                }
            }
            out.store(out_first, out_row);
        }
    });
}

bool pixel_rows_dx_fits(const ConvtParams& p) {
    return !use_neon() && float_or_half(p.src_type) && float_or_half(p.dst_type) &&
           p.src_stride_c == 1 && p.dst_stride_c == 1 && !p.accumulate_half &&
           p.out_per_group >= kMinOutputChannels;
}

bool pixel_rows_dx_before_winograd(const ConvtParams& p) {
    return pixel_rows_dx_fits(p) && fills_panels(p.in_per_group) && few_channels_for_winograd(p);
}

void backward_data_pixel_rows(const ConvtParams& p, const GemmWeights& w, const void* dy,
                              void* dx) {
    const int og = p.out_per_group, ig = p.in_per_group, kh = p.kernel_h, kw = p.kernel_w;
    const int panels = panels_of(w);
    const float* const weights = by_pixel_weights(w, kw);
    // Tap (ky, kx)'s weights, panel 0; the panels are a kernel row's taps apart.
    auto tap_weights = [&](int g, int ky, int kx) {
        return weights + ((int64_t(g) * kh + ky) * panels * kw + (kw - 1 - kx)) * og * kNr;
    };
    const int64_t panel_stride = int64_t(kw) * og * kNr;
    const FloatRows in{const_cast<void*>(dy), p.dst_type, p.clip_w, p.dst_stride_w, p.out_channels};
    const FloatRows out{dx, p.src_type, p.src_w, p.src_stride_w, p.in_channels};
    const int64_t pixel_step = in.step(), out_step = out.step();
    // A kernel row's taps read dY pixels one after another, kx from the last down; where each
    // pixel's channels run on into the next's (one group, no dilation), they are one segment,
    // its steps the pixels' channels in order (dcgan_out's 3 channels: segments of 3 steps
    // were mostly the kernel's set-up).
    const bool merged = p.dilation_x == 1 && pixel_step == og;
    // dX pixel (iy, ix) meets dY at row iy * stride_y - first_tap_y - dilation_y * ky, column
    // likewise: the taps that land inside dY are a run of ky and one of kx.
    auto taps_in = [](int64_t e, int64_t dil, int64_t clip, int kernel, int& lo, int& hi) {
        lo = static_cast<int>(std::clamp<int64_t>(floor_div(e - clip, dil) + 1, 0, kernel));
        hi = static_cast<int>(std::clamp<int64_t>(floor_div(e, dil), -1, kernel - 1));
    };
    // Consecutive dX pixels of a row are stride_x dY pixels apart: A's row step.
    const int64_t lda = int64_t(p.stride_x) * pixel_step;
    const StridedSegmentKernel kernel = strided_segment_kernel();
    const bool forwards = p.dst_stride_h > 0 && p.dst_stride_w > 0;  // LinePump's spans
    for_row_runs(p.num_images, p.src_h, [&](int64_t n, int64_t y0, int64_t y1) {
        PixelRowsScratch& scratch = thread_scratch<PixelRowsScratch>();
        scratch.begin(int64_t(kh) * kw, kh, in, out);
        std::vector<Segment>& segments = scratch.segments;
        for (int64_t iy = y0; iy < y1; ++iy) {
            int ky_lo, ky_hi;
            taps_in(iy * p.stride_y - p.first_tap_y, p.dilation_y, p.clip_h, kh, ky_lo, ky_hi);
            for (int ky = ky_lo; ky <= ky_hi; ++ky) {
                const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
                scratch.read(in, ky - ky_lo,
                             p.dst_base + n * p.dst_stride_n + (p.clip_y + yy) * p.dst_stride_h +
                                 p.clip_x * p.dst_stride_w);
            }
            const int64_t out_first = p.src_base + n * p.src_stride_n + iy * p.src_stride_h;
            float* const out_row = out.sums(out_first, scratch.out_row.data());
            // The dY rows the next row adds to this row's (the highest row is ky_lo's).
            LinePump fetch;
            if (iy + 1 < y1 && forwards) {
                int lo, hi;
                const int64_t e = iy * p.stride_y - p.first_tap_y, next = e + p.stride_y;
                taps_in(next, p.dilation_y, p.clip_h, kh, lo, hi);
                const int64_t from =
                    std::max(ky_lo <= ky_hi ? e - int64_t(p.dilation_y) * ky_lo + 1 : int64_t(0),
                             next - int64_t(p.dilation_y) * hi);
                const int64_t to = next - int64_t(p.dilation_y) * lo;
                if (lo <= hi && from <= to)
                    fetch.set(dy, p.dst_type,
                              p.dst_base + n * p.dst_stride_n + (p.clip_y + from) * p.dst_stride_h +
                                  p.clip_x * p.dst_stride_w,
                              (to - from) * p.dst_stride_h, p.dst_stride_w, p.clip_w,
                              p.out_channels, p.groups * (ceil_div(p.src_w, kMr) + 2));
            }
            auto kx_taps = [&](int64_t ix, int& lo, int& hi) {
                taps_in(ix * p.stride_x - p.first_tap_x, p.dilation_x, p.clip_w, kw, lo, hi);
            };
            for (int64_t x0 = 0; x0 < p.src_w;) {
                // A run of pixels with the same taps inside dY, in tiles of up to kMr pixels.
                int kx_lo, kx_hi;
                const int64_t x1 = run_end(x0, p.src_w, kx_taps, kx_lo, kx_hi);
                const int64_t ex0 = x0 * p.stride_x - p.first_tap_x;
                const int rows = static_cast<int>(x1 - x0);
                for (int g = 0; g < p.groups; ++g) {
                    fetch.pump();
                    int count = 0;
                    for (int ky = ky_lo; ky <= ky_hi; ++ky) {
                        const float* row = scratch.rows[size_t(ky - ky_lo)] + int64_t(g) * og;
                        if (merged && kx_lo <= kx_hi) {
                            segments[count++] = {row + (ex0 - kx_hi) * pixel_step,
                                                 tap_weights(g, ky, kx_hi),
                                                 (kx_hi - kx_lo + 1) * og};
                            continue;
                        }
                        for (int kx = kx_hi; kx >= kx_lo; --kx)
                            segments[count++] = {
                                row + (ex0 - int64_t(p.dilation_x) * kx) * pixel_step,
                                tap_weights(g, ky, kx), og};
                    }
                    float* c = out_row + int64_t(g) * ig + x0 * out_step;
                    store_panels(kernel, segments.data(), count, lda, panel_stride, rows, ig,
                                 nullptr, c, out_step);
                }
                x0 = x1;
            }
            out.store(out_first, out_row);
        }
    });
}

}  // namespace convt::cpu
