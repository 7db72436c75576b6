#include "depthwise_nhwc.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "elements.h"
#include "geometry.h"
#include "half_rows.h"
#include "micro_kernel.h"
#include "neuron.h"
#include "thread_pool.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

namespace convt::cpu {
namespace {

// Image parts for dW: up to kRowCuts row ranges an image, as many as bring the parts to
// kMinParts (the cuts depend on the batch alone, so the bits do not).
constexpr int64_t kRowCuts = 4;
constexpr int64_t kMinParts = 8;

// dW's channel loops are built twice on x86, for AVX2 (picked by use_avx2()) and the baseline,
// and vectorized by the compiler; the forward's and dX's sums are AVX2 intrinsics (GCC turned
// the same loops with a register chunk into scalar code) or portable loops.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CONVT_DW_AVX2 1
#endif
#define CONVT_INLINE inline __attribute__((always_inline))

// acc[c] += a[c] * b[c], c < channels.
CONVT_INLINE void multiply_add(float* __restrict acc, const float* __restrict a,
                               const float* __restrict b, int64_t channels) {
    for (int64_t c = 0; c < channels; ++c) acc[c] += a[c] * b[c];
}

// The taps one pixel meets along an axis: (tap index, the other tensor's coordinate).
struct AxisTap {
    int k;
    int64_t at;
};

// For each coordinate i < count along an axis: the taps k < kernel with e = i * s - first -
// dilation * k (gradients: the dY coordinate a source pixel meets), or with first + i +
// dilation * k = e * s (the forward: the source coordinate an output pixel takes) inside
// [0, size); flattened, with offsets[i] .. offsets[i + 1] the taps of coordinate i.
struct AxisTaps {
    std::vector<AxisTap> taps;
    std::vector<int64_t> offsets;
};

// The taps of every coordinate i < count whose other coordinate other(i, k) (negative: none)
// lies below size.
template <typename Other>
AxisTaps axis_taps(int64_t count, int kernel, int64_t size, Other other) {
    AxisTaps a;
    for (int64_t i = 0; i < count; ++i) {
        a.offsets.push_back(static_cast<int64_t>(a.taps.size()));
        for (int k = 0; k < kernel; ++k) {
            const int64_t e = other(i, k);
            if (e >= 0 && e < size) a.taps.push_back({k, e});
        }
    }
    a.offsets.push_back(static_cast<int64_t>(a.taps.size()));
    return a;
}

AxisTaps gradient_taps(int64_t count, int64_t s, int64_t first, int64_t dilation, int kernel,
                       int64_t size) {
    return axis_taps(count, kernel, size,
                     [&](int64_t i, int k) { return i * s - first - dilation * k; });
}

AxisTaps forward_taps(int64_t count, int64_t s, int64_t first, int64_t dilation, int kernel,
                      int64_t size) {
    return axis_taps(count, kernel, size, [&](int64_t i, int k) {
        const int64_t e = first + i + dilation * k;
        return e >= 0 && e % s == 0 ? e / s : int64_t(-1);
    });
}

// Pixels m < pixels of a run: out[m * out_step + c] = init[c] + the sum over k < count, in
// order, of v[k][m * in_step + c] * t[k][c], for c < channels (each tap's source advancing
// in_step floats a pixel).
using RunSum = void (*)(const float* init, const float* const* v, const float* const* t, int count,
                        int64_t channels, int64_t pixels, int64_t in_step, float* out,
                        int64_t out_step);

void run_sum_base(const float* init, const float* const* v, const float* const* t, int count,
                  int64_t channels, int64_t pixels, int64_t in_step, float* out, int64_t out_step) {
    for (int64_t m = 0; m < pixels; ++m)
        for (int64_t c = 0; c < channels; ++c) {
            float sum = init[c];
            for (int k = 0; k < count; ++k) sum += v[k][m * in_step + c] * t[k][c];
            out[m * out_step + c] = sum;
        }
}

#ifdef CONVT_DW_AVX2
// 32 channels at a time in four registers across the taps, then 8, then one by one (summed in
// a buffer instead, each tap loaded and stored the sums again).
__attribute__((target("avx2,fma"))) void run_sum_avx2(const float* init, const float* const* v,
                                                      const float* const* t, int count,
                                                      int64_t channels, int64_t pixels,
                                                      int64_t in_step, float* out,
                                                      int64_t out_step) {
    for (int64_t m = 0; m < pixels; ++m) {
        const int64_t at = m * in_step;
        float* o = out + m * out_step;
        int64_t c = 0;
        for (; c + 32 <= channels; c += 32) {
            __m256 s0 = _mm256_loadu_ps(init + c), s1 = _mm256_loadu_ps(init + c + 8);
            __m256 s2 = _mm256_loadu_ps(init + c + 16), s3 = _mm256_loadu_ps(init + c + 24);
            for (int k = 0; k < count; ++k) {
                const float* a = v[k] + at + c;
                const float* b = t[k] + c;
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b), s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + 8), _mm256_loadu_ps(b + 8), s1);
                s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + 16), _mm256_loadu_ps(b + 16), s2);
                s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + 24), _mm256_loadu_ps(b + 24), s3);
            }
            _mm256_storeu_ps(o + c, s0);
            _mm256_storeu_ps(o + c + 8, s1);
            _mm256_storeu_ps(o + c + 16, s2);
            _mm256_storeu_ps(o + c + 24, s3);
        }
        for (; c + 8 <= channels; c += 8) {
            __m256 s0 = _mm256_loadu_ps(init + c);
            for (int k = 0; k < count; ++k)
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(v[k] + at + c), _mm256_loadu_ps(t[k] + c), s0);
            _mm256_storeu_ps(o + c, s0);
        }
        for (; c < channels; ++c) {
            float sum = init[c];
            for (int k = 0; k < count; ++k) sum = std::fma(v[k][at + c], t[k][c], sum);
            o[c] = sum;
        }
    }
}
#endif

RunSum pick_run_sum() {
#ifdef CONVT_DW_AVX2
    if (use_avx2()) return &run_sum_avx2;
#endif
    return &run_sum_base;
}

// Runs of coordinates along an axis that meet the same taps, each tap's other coordinate
// advancing by `step` from one to the next: coordinates first, first + stride, ... (count),
// tap b at taps[b].at + i * step for the i-th. A row of pixels then sums run by run, with no
// per-pixel tap lists (4 taps of 64 channels a pixel at dw_k4s2: the lists cost as much).
struct AxisRun {
    int64_t first, stride, count, step;
    std::vector<AxisTap> taps;
};

// stride: the coordinates' class step (the forward: s, whose phases meet different taps;
// the gradients: 1); step: each tap's coordinate per run step (the forward: 1; gradients: s).
std::vector<AxisRun> axis_runs(const AxisTaps& a, int64_t count, int64_t stride, int64_t step) {
    std::vector<AxisRun> runs;
    for (int64_t r = 0; r < std::min(stride, count); ++r) {
        for (int64_t i = r; i < count; i += stride) {
            const int64_t lo = a.offsets[i], hi = a.offsets[i + 1];
            if (!runs.empty() && runs.back().stride == stride &&
                runs.back().first + runs.back().count * stride == i &&
                runs.back().taps.size() == size_t(hi - lo)) {
                AxisRun& run = runs.back();
                bool same = true;
                for (int64_t b = 0; b < hi - lo && same; ++b)
                    same = a.taps[lo + b].k == run.taps[b].k &&
                           a.taps[lo + b].at == run.taps[b].at + run.count * step;
                if (same) {
                    ++run.count;
                    continue;
                }
            }
            runs.push_back({i, stride, 1, step,
                            std::vector<AxisTap>(a.taps.begin() + lo, a.taps.begin() + hi)});
        }
    }
    return runs;
}

// One output (or dX) row: each pixel's channels = init + the products of the taps its row and
// column meet, row taps outer. in_rows[i] is the other tensor's row of the row's i-th row tap
// (its pixels col_step apart); out is the row's first pixel, out_step apart.
void taps_row(const AxisTaps& rows, int64_t row, const std::vector<AxisRun>& cols,
              const float* const* in_rows, int64_t col_step, const float* by_tap, int kw,
              int64_t channels, const float* init, float* out, int64_t out_step) {
    const RunSum sum = pick_run_sum();
    thread_local std::vector<const float*> v_tl, t_tl;
    std::vector<const float*>& v = v_tl;
    std::vector<const float*>& t = t_tl;
    for (const AxisRun& run : cols) {
        v.clear();
        t.clear();
        for (int64_t a = rows.offsets[row]; a < rows.offsets[row + 1]; ++a)
            for (const AxisTap& b : run.taps) {
                v.push_back(in_rows[a - rows.offsets[row]] + b.at * col_step);
                t.push_back(by_tap + (rows.taps[a].k * kw + b.k) * channels);
            }
        sum(init, v.data(), t.data(), static_cast<int>(v.size()), channels, run.count,
            run.step * col_step, out + run.first * out_step, run.stride * out_step);
    }
}

// One source row of dW: sums[tap][channel] = the products of the row's pixels with the dY
// pixels they meet (row taps outer, then column taps, pixel by pixel); dy_rows[i] is the dY
// row of the row's i-th row tap, its pixels dy_w apart.
CONVT_INLINE void weight_row(const AxisTaps& rows, int64_t row, const AxisTaps& cols, int64_t width,
                             const float* x_row, int64_t x_step, const float* const* dy_rows,
                             int64_t dy_w, int kw, int64_t channels, float* sums) {
    for (int64_t a = rows.offsets[row]; a < rows.offsets[row + 1]; ++a)
        for (int64_t j = 0; j < width; ++j)
            for (int64_t b = cols.offsets[j]; b < cols.offsets[j + 1]; ++b)
                multiply_add(sums + (rows.taps[a].k * kw + cols.taps[b].k) * channels,
                             x_row + j * x_step,
                             dy_rows[a - rows.offsets[row]] + cols.taps[b].at * dy_w, channels);
}

#define CONVT_DW_NHWC_ROWS(suffix, attr)                                                      \
    attr void weight_row_##suffix(const AxisTaps& rows, int64_t row, const AxisTaps& cols,    \
                                  int64_t width, const float* x_row, int64_t x_step,          \
                                  const float* const* dy_rows, int64_t dy_w, int kw,          \
                                  int64_t channels, float* sums) {                            \
        weight_row(rows, row, cols, width, x_row, x_step, dy_rows, dy_w, kw, channels, sums); \
    }
CONVT_DW_NHWC_ROWS(base, )
#ifdef CONVT_DW_AVX2
CONVT_DW_NHWC_ROWS(avx2, __attribute__((target("avx2,fma"))))
#endif
#undef CONVT_DW_NHWC_ROWS

// A thread's rows of one image of a channels-contiguous tensor as floats, a row tap's each:
// float32 rows read in place, fp16 rows converted into the thread's buffer, one row at a time
// (never the whole tensor).
class ImageRows {
 public:
    // The image's first element at `image`, rows row_step elements apart, pixels col_step.
    ImageRows(const void* base, int32_t type, int64_t image, int64_t row_step, int64_t col_step,
              int64_t width, int64_t channels)
        : base_(base),
          type_(type),
          image_(image),
          row_step_(row_step),
          col_step_(col_step),
          width_(width),
          channels_(channels) {}
    // The pixel step of the rows given out.
    int64_t step() const { return type_ == CONVT_TYPE_F32 ? col_step_ : channels_; }
    // Rows at[i] for i < count, into rows[i]; converted ones go to `buffer`.
    void get(const AxisTap* at, int64_t count, std::vector<float>& buffer,
             std::vector<const float*>& rows) const {
        rows.clear();
        if (type_ == CONVT_TYPE_F32) {
            for (int64_t i = 0; i < count; ++i)
                rows.push_back(static_cast<const float*>(base_) + image_ + at[i].at * row_step_);
            return;
        }
        const int64_t row_floats = width_ * channels_;
        buffer.resize(static_cast<size_t>(count * row_floats));
        for (int64_t i = 0; i < count; ++i) {
            float* to = buffer.data() + i * row_floats;
            load_pixels(base_, type_, image_ + at[i].at * row_step_, width_, col_step_, channels_,
                        to);
            rows.push_back(to);
        }
    }

 private:
    const void* base_;
    int32_t type_;
    int64_t image_, row_step_, col_step_, width_, channels_;
};

// One output (or dX) row by taps_row: the rows of `in` that its row taps reach (converted when
// fp16), the sums into the destination row `out_at` of `out` (`width` pixels, out_step apart) in
// place when it is float32, else into a float row stored after; finish(row, step) runs on the
// float row before it is stored.
template <typename Finish>
void tensor_row(const AxisTaps& rows, int64_t row, const std::vector<AxisRun>& cols,
                const ImageRows& in, const float* by_tap, int kw, int64_t channels,
                const float* init, void* out, int32_t out_type, int64_t out_at, int64_t width,
                int64_t out_step, Finish finish) {
    thread_local std::vector<float> buffer, row_out;
    thread_local std::vector<const float*> in_rows;
    in.get(rows.taps.data() + rows.offsets[row], rows.offsets[row + 1] - rows.offsets[row], buffer,
           in_rows);
    const bool in_place = out_type == CONVT_TYPE_F32;
    if (!in_place) row_out.resize(static_cast<size_t>(width * channels));
    float* o = in_place ? static_cast<float*>(out) + out_at : row_out.data();
    const int64_t step = in_place ? out_step : channels;
    taps_row(rows, row, cols, in_rows.data(), in.step(), by_tap, kw, channels, init, o, step);
    finish(o, step);
    if (!in_place) store_pixels(out, out_type, out_at, width, out_step, channels, o);
}

// Per-thread scratch: a dW source row's sums.
std::vector<float>& scratch() {
    thread_local std::vector<float> v;
    return v;
}

}  // namespace

bool depthwise_nhwc_fits(const ConvtParams& p) {
    return depthwise_fits(p) && float_or_half(p.src_type) && float_or_half(p.dst_type) &&
           p.src_stride_c == 1 && p.dst_stride_c == 1 && p.groups >= 8;
}

void forward_depthwise_nhwc(const ConvtParams& p, const DepthwiseWeights& w, const void* src,
                            void* dst) {
    const int64_t channels = p.groups;
    const AxisTaps rows =
        forward_taps(p.clip_h, p.stride_y, p.first_tap_y, p.dilation_y, p.kernel_h, p.src_h);
    const std::vector<AxisRun> col_runs = axis_runs(
        forward_taps(p.clip_w, p.stride_x, p.first_tap_x, p.dilation_x, p.kernel_w, p.src_w),
        p.clip_w, p.stride_x, 1);
    const auto ntype = static_cast<NeuronType>(p.neuron);
    ThreadPool::instance().parallel_for(int64_t(p.num_images) * p.clip_h, [&](int64_t task) {
        const int64_t n = task / p.clip_h, yy = task % p.clip_h;
        const ImageRows image(src, p.src_type, p.src_base + n * p.src_stride_n, p.src_stride_h,
                              p.src_stride_w, p.src_w, channels);
        tensor_row(rows, yy, col_runs, image, w.by_tap.data(), p.kernel_w, channels, w.bias.data(),
                   dst, p.dst_type, dst_index(p, n, 0, yy, 0), p.clip_w, p.dst_stride_w,
                   [&](float* out, int64_t step) {
                       for (int64_t xx = 0; xx < p.clip_w && ntype != NeuronType::None; ++xx)
                           for (int64_t c = 0; c < channels; ++c) {
                               float& v = out[xx * step + c];
                               v = apply_neuron(ntype, v, p.neuron_a, p.neuron_b, p.neuron_c,
                                                w.slopes.empty() ? 0.f : w.slopes[c]);
                           }
                   });
    });
}

void backward_data_depthwise_nhwc(const ConvtParams& p, const DepthwiseWeights& w, const void* dy,
                                  void* dx) {
    const int64_t channels = p.groups;
    const std::vector<float> zeros(static_cast<size_t>(channels), 0.f);
    const AxisTaps rows =
        gradient_taps(p.src_h, p.stride_y, p.first_tap_y, p.dilation_y, p.kernel_h, p.clip_h);
    const std::vector<AxisRun> col_runs = axis_runs(
        gradient_taps(p.src_w, p.stride_x, p.first_tap_x, p.dilation_x, p.kernel_w, p.clip_w),
        p.src_w, 1, p.stride_x);
    ThreadPool::instance().parallel_for(int64_t(p.num_images) * p.src_h, [&](int64_t task) {
        const int64_t n = task / p.src_h, iy = task % p.src_h;
        const ImageRows grad(dy, p.dst_type, dst_index(p, n, 0, 0, 0), p.dst_stride_h,
                             p.dst_stride_w, p.clip_w, channels);
        tensor_row(rows, iy, col_runs, grad, w.by_tap.data(), p.kernel_w, channels, zeros.data(),
                   dx, p.src_type, src_index(p, n, 0, iy, 0), p.src_w, p.src_stride_w,
                   [](float*, int64_t) {});
    });
}

void backward_weights_depthwise_nhwc(const ConvtParams& p, const void* x, const void* dy,
                                     const detail::GradientOutput& out) {
    const int64_t channels = p.groups, taps = int64_t(p.kernel_h) * p.kernel_w;
    const int64_t count = taps * channels;  // one part's sums, [tap][channel]
    const AxisTaps rows =
        gradient_taps(p.src_h, p.stride_y, p.first_tap_y, p.dilation_y, p.kernel_h, p.clip_h);
    const AxisTaps cols =
        gradient_taps(p.src_w, p.stride_x, p.first_tap_x, p.dilation_x, p.kernel_w, p.clip_w);
    const int64_t cuts = std::clamp<int64_t>(ceil_div(kMinParts, p.num_images), 1,
                                             std::min<int64_t>(kRowCuts, p.src_h));
    const int64_t parts = int64_t(p.num_images) * cuts;
    const std::unique_ptr<float[]> partials(new float[static_cast<size_t>(parts * count)]);
    ThreadPool::instance().parallel_for(parts, [&](int64_t part) {
        const int64_t n = part / cuts, cut = part % cuts;
        const ImageRows image(x, p.src_type, src_index(p, n, 0, 0, 0), p.src_stride_h,
                              p.src_stride_w, p.src_w, channels);
        const ImageRows grad(dy, p.dst_type, dst_index(p, n, 0, 0, 0), p.dst_stride_h,
                             p.dst_stride_w, p.clip_w, channels);
        thread_local std::vector<float> x_buffer, dy_buffer;
        thread_local std::vector<const float*> x_row, dy_rows;
        float* sums = partials.get() + part * count;
        std::fill(sums, sums + count, 0.f);
        std::vector<float>& row_sums = scratch();  // one source row's, added to the part's
        row_sums.resize(static_cast<size_t>(count));
        for (int64_t iy = p.src_h * cut / cuts; iy < p.src_h * (cut + 1) / cuts; ++iy) {
            std::fill(row_sums.begin(), row_sums.end(), 0.f);
            const AxisTap self{0, iy};
            image.get(&self, 1, x_buffer, x_row);
            grad.get(rows.taps.data() + rows.offsets[iy], rows.offsets[iy + 1] - rows.offsets[iy],
                     dy_buffer, dy_rows);
#ifdef CONVT_DW_AVX2
            if (use_avx2())
                weight_row_avx2(rows, iy, cols, p.src_w, x_row[0], image.step(), dy_rows.data(),
                                grad.step(), p.kernel_w, channels, row_sums.data());
            else
#endif
                weight_row_base(rows, iy, cols, p.src_w, x_row[0], image.step(), dy_rows.data(),
                                grad.step(), p.kernel_w, channels, row_sums.data());
            for (int64_t i = 0; i < count; ++i) sums[i] += row_sums[i];
        }
    });
    // Each weight the sum of its parts in part order; OHWI: [channel][tap].
    auto* dw = static_cast<float*>(out.weights);
    for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = 0; c < channels; ++c) {
            float v = 0.f;
            for (int64_t k = 0; k < parts; ++k) v += partials[k * count + t * channels + c];
            float& o = dw[c * taps + t];
            o = out.accumulate ? o + v : v;
        }
}

}  // namespace convt::cpu
