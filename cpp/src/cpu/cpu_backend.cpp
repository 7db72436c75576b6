// Native CPU backend. Stride is handled by phase decomposition: for each output column the
// taps that land on real (non-inserted) source pixels are found arithmetically, so no
// multiply ever touches an inserted zero and no col2im buffer exists. Each task owns a
// disjoint block of the result and sums in a fixed order, so results (gradients included)
// do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <type_traits>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <vector>

#include "../core/backend.h"
#include "conv_gemm.h"
#include "convt/device.h"
#include "depthwise.h"
#include "depthwise_nhwc.h"
#include "elements.h"
#include "geometry.h"
#include "half_rows.h"
#include "micro_kernel.h"
#include "neuron.h"
#include "pixel_rows.h"
#include "scatter_forward.h"
#include "thread_pool.h"
#include "winograd.h"

namespace convt::cpu {
namespace {

using detail::DeviceWeights;
using detail::GradientOutput;
using detail::PreparedWeights;

// Below this many output channels per group the GEMMs run along the rows (see the narrow paths).
constexpr int kNarrow = 16;
// Row ranges per image for the few-output-channel weight gradient's partial sums: at most
// kRowCuts, and no more than kMinParts parts in all need (each part is a weight-sized partial
// to write and add: dcgan_out's dW at N=8 ran 9% faster in 8 parts than in 32).
constexpr int64_t kRowCuts = 4;
constexpr int64_t kMinParts = 8;

template <typename T>
struct Packed {
    std::vector<T> forward;   // [g][ky][kx][icl][ocl]: output channels innermost
    std::vector<T> backward;  // [g][ky][kx][ocl][icl]: input channels innermost (dX)
    std::vector<T> by_input;  // [g][icl][ky][kx][ocl]: dX for few output channels (else empty)
    std::vector<T> bias;      // [O], zeros when the layer has none
    std::vector<T> slopes;    // [O] PReLU
};

struct CpuWeights : DeviceWeights {
    bool is_double = false;
    // Every weight finite. The GEMM and depthwise paths multiply the zeros that stand for
    // missing source pixels by the weights, and 0 * Inf is NaN where the contract adds nothing;
    // the row paths skip those taps, so they serve layers with an infinite or NaN weight.
    bool finite = true;
    GemmWeights gemm;        // float layers
    DepthwiseWeights depth;  // float layers with one channel in and out per group
    ScatterWeights scatter;  // float layers with few output channels per group
    WinogradWeights wino;    // float 3x3 layers with enough channels
    // dX by the transforms for a (2s - 1)-tap kernel, packed at the first dispatch at stride s.
    mutable std::once_flag odd_once;
    mutable WinogradWeights wino_odd;
    Packed<float> f;
    Packed<double> d;
};

template <typename T>
inline T round_acc(T v) {
    return static_cast<T>(detail::round_to_half(static_cast<float>(v)));
}

// c[j][0..n) += sum_i a[j][i] * b[i][0..n) for j < rows, with rows a + j * a_step,
// b + i * b_step and c + j * c_step. The generic form; the inner loop vectorises for the
// baseline instruction set.
template <typename T>
void gemm_generic(const T* a, int64_t a_step, const T* b, int64_t b_step, int n, T* c,
                  int64_t c_step, int64_t rows, int k) {
    for (int64_t j = 0; j < rows; ++j) {
        T* __restrict cj = c + j * c_step;
        const T* __restrict aj = a + j * a_step;
        for (int i = 0; i < k; ++i) {
            const T av = aj[i];
            const T* __restrict bi = b + static_cast<int64_t>(i) * b_step;
            for (int o = 0; o < n; ++o) cj[o] += av * bi[o];
        }
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// AVX2+FMA: 4 rows x 16 columns of c live in 8 registers while all k products accumulate.
__attribute__((target("avx2,fma"))) void gemm_avx2(const float* a, int64_t a_step, const float* b,
                                                   int64_t b_step, int n, float* c, int64_t c_step,
                                                   int64_t rows, int k) {
    int n0 = 0;
    for (; n0 + 16 <= n; n0 += 16) {
        int64_t j = 0;
        for (; j + 4 <= rows; j += 4) {
            const float* a0 = a + j * a_step;
            float* c0 = c + j * c_step + n0;
            __m256 acc[4][2];
            for (int r = 0; r < 4; ++r) {
                acc[r][0] = _mm256_loadu_ps(c0 + r * c_step);
                acc[r][1] = _mm256_loadu_ps(c0 + r * c_step + 8);
            }
            for (int i = 0; i < k; ++i) {
                const __m256 b0 = _mm256_loadu_ps(b + int64_t(i) * b_step + n0);
                const __m256 b1 = _mm256_loadu_ps(b + int64_t(i) * b_step + n0 + 8);
                for (int r = 0; r < 4; ++r) {
                    const __m256 av = _mm256_broadcast_ss(a0 + r * a_step + i);
                    acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
                }
            }
            for (int r = 0; r < 4; ++r) {
                _mm256_storeu_ps(c0 + r * c_step, acc[r][0]);
                _mm256_storeu_ps(c0 + r * c_step + 8, acc[r][1]);
            }
        }
        for (; j < rows; ++j) {
            const float* aj = a + j * a_step;
            float* cj = c + j * c_step + n0;
            __m256 lo = _mm256_loadu_ps(cj), hi = _mm256_loadu_ps(cj + 8);
            for (int i = 0; i < k; ++i) {
                const __m256 av = _mm256_broadcast_ss(aj + i);
                lo = _mm256_fmadd_ps(av, _mm256_loadu_ps(b + int64_t(i) * b_step + n0), lo);
                hi = _mm256_fmadd_ps(av, _mm256_loadu_ps(b + int64_t(i) * b_step + n0 + 8), hi);
            }
            _mm256_storeu_ps(cj, lo);
            _mm256_storeu_ps(cj + 8, hi);
        }
    }
    if (n0 == n) return;
    for (int64_t j = 0; j < rows; ++j) {  // the last n % 16 columns
        float* cj = c + j * c_step;
        const float* aj = a + j * a_step;
        for (int i = 0; i < k; ++i)
            for (int o = n0; o < n; ++o) cj[o] = std::fma(aj[i], b[int64_t(i) * b_step + o], cj[o]);
    }
}
#endif

using GemmF = void (*)(const float*, int64_t, const float*, int64_t, int, float*, int64_t, int64_t,
                       int);

// Picked once, by what this CPU can do (see use_avx2()).
GemmF gemm_f32() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (use_avx2()) return &gemm_avx2;
#endif
    return &gemm_generic<float>;
}

template <typename T>
inline void gemm_accumulate(const T* a, int64_t a_step, const T* b, int64_t b_step, int n, T* c,
                            int64_t c_step, int64_t rows, int k) {
    if constexpr (std::is_same_v<T, float>)
        gemm_f32()(a, a_step, b, b_step, n, c, c_step, rows, k);
    else
        gemm_generic<T>(a, a_step, b, b_step, n, c, c_step, rows, k);
}

// acc[x][oc] += sum_icl in[ix][icl] * w[icl][oc] over one run of columns sharing a tap.
template <typename T, bool kHalf>
inline void accumulate_run(T* acc, int64_t acc_step, const T* in, int64_t count, const T* w, int ig,
                           int og) {
    if constexpr (!kHalf) {
        gemm_accumulate<T>(in, ig, w, og, og, acc, acc_step, count, ig);
    } else {  // fp16 running sum, rounded after every multiply-add, taps in spec order
        for (int64_t j = 0; j < count; ++j) {
            T* __restrict a = acc + j * acc_step;
            const T* __restrict x = in + j * ig;
            for (int icl = 0; icl < ig; ++icl) {
                const T xv = x[icl];
                const T* __restrict wr = w + static_cast<int64_t>(icl) * og;
                for (int oc = 0; oc < og; ++oc) a[oc] = round_acc(std::fma(xv, wr[oc], a[oc]));
            }
        }
    }
}

template <typename T, bool kHalf>
void forward_row(const ConvtParams& p, const Packed<T>& w, const void* src, void* dst, int64_t task,
                 std::vector<T>& acc, std::vector<T>& row) {
    const int64_t n = task / p.clip_h, yy = task % p.clip_h;
    const int ig = p.in_per_group, og = p.out_per_group;
    const int64_t taps = static_cast<int64_t>(p.kernel_h) * p.kernel_w;
    acc.resize(static_cast<size_t>(p.clip_w) * og);
    row.resize(static_cast<size_t>(p.src_w) * ig);
    const auto ntype = static_cast<NeuronType>(p.neuron);

    for (int g = 0; g < p.groups; ++g) {
        const T* bias = w.bias.data() + static_cast<int64_t>(g) * og;
        for (int64_t xx = 0; xx < p.clip_w; ++xx)
            for (int oc = 0; oc < og; ++oc)
                acc[xx * og + oc] = kHalf ? round_acc(bias[oc]) : bias[oc];

        for (int ky = 0; ky < p.kernel_h; ++ky) {
            const int64_t iy = source_row(p, yy, ky);
            if (iy < 0) continue;
            for (int64_t ix = 0; ix < p.src_w; ++ix)  // the group's source row as [ix][icl]
                for (int icl = 0; icl < ig; ++icl)
                    row[ix * ig + icl] =
                        load<T>(src, p.src_type, src_index(p, n, int64_t(g) * ig + icl, iy, ix));
            for (int kx = 0; kx < p.kernel_w; ++kx) {
                const ColumnRun r = column_run(p, kx);
                if (r.count <= 0) continue;
                const T* wk =
                    w.forward.data() + ((int64_t(g) * taps + ky * p.kernel_w + kx) * ig) * og;
                accumulate_run<T, kHalf>(acc.data() + r.xx0 * og, int64_t(p.stride_x) * og,
                                         row.data() + r.ix0 * ig, r.count, wk, ig, og);
            }
        }

        for (int oc = 0; oc < og; ++oc) {
            const int64_t ch = int64_t(g) * og + oc;
            const float slope = w.slopes.empty() ? 0.f : static_cast<float>(w.slopes[ch]);
            for (int64_t xx = 0; xx < p.clip_w; ++xx) {
                const T v = acc[xx * og + oc];
                const T out =
                    ntype == NeuronType::None
                        ? v
                        : static_cast<T>(apply_neuron(ntype, static_cast<float>(v), p.neuron_a,
                                                      p.neuron_b, p.neuron_c, slope));
                store<T>(dst, p.dst_type, dst_index(p, n, ch, yy, xx), out);
            }
        }
    }
}

// Few output channels: the GEMM runs along the destination row instead, so its wide side is
// the pixels: acc[px][oc][jx] += W[oc][icl] * src[icl][ix] for each tap's run of columns
// (destination column xx = px + stride_x * jx). Float accumulation only.
void forward_row_narrow(const ConvtParams& p, const Packed<float>& w, const void* src, void* dst,
                        int64_t task, std::vector<float>& acc, std::vector<float>& row) {
    const int64_t n = task / p.clip_h, yy = task % p.clip_h;
    const int ig = p.in_per_group, og = p.out_per_group, sx = p.stride_x;
    const int64_t taps = static_cast<int64_t>(p.kernel_h) * p.kernel_w;
    const int64_t jn = (int64_t(p.clip_w) + sx - 1) / sx;  // columns per phase, at most
    acc.resize(static_cast<size_t>(sx) * og * jn);
    row.resize(static_cast<size_t>(ig) * p.src_w);
    const auto ntype = static_cast<NeuronType>(p.neuron);
    for (int g = 0; g < p.groups; ++g) {
        for (int px = 0; px < sx; ++px)
            for (int oc = 0; oc < og; ++oc)
                std::fill_n(acc.data() + (int64_t(px) * og + oc) * jn, jn,
                            w.bias[int64_t(g) * og + oc]);
        for (int ky = 0; ky < p.kernel_h; ++ky) {
            const int64_t iy = source_row(p, yy, ky);
            if (iy < 0) continue;
            for (int icl = 0; icl < ig; ++icl)  // the group's source row as [icl][ix]
                for (int64_t ix = 0; ix < p.src_w; ++ix)
                    row[icl * p.src_w + ix] = load<float>(
                        src, p.src_type, src_index(p, n, int64_t(g) * ig + icl, iy, ix));
            for (int kx = 0; kx < p.kernel_w; ++kx) {
                const ColumnRun r = column_run(p, kx);
                if (r.count <= 0) continue;
                const float* wk =
                    w.backward.data() + ((int64_t(g) * taps + ky * p.kernel_w + kx) * og) * ig;
                float* c = acc.data() + (r.xx0 % sx) * og * jn + r.xx0 / sx;
                gemm_accumulate<float>(wk, ig, row.data() + r.ix0, p.src_w,
                                       static_cast<int>(r.count), c, jn, og, ig);
            }
        }
        for (int oc = 0; oc < og; ++oc) {
            const int64_t ch = int64_t(g) * og + oc;
            const float slope = w.slopes.empty() ? 0.f : w.slopes[ch];
            for (int64_t xx = 0; xx < p.clip_w; ++xx) {
                const float v = acc[((xx % sx) * og + oc) * jn + xx / sx];
                store<float>(
                    dst, p.dst_type, dst_index(p, n, ch, yy, xx),
                    ntype == NeuronType::None
                        ? v
                        : apply_neuron(ntype, v, p.neuron_a, p.neuron_b, p.neuron_c, slope));
            }
        }
    }
}

// dX for few output channels: per source row, every tap's dY values are gathered into
// rows [ky][kx][oc] x source columns (zeros where a tap misses), then one GEMM against the
// weights as [icl][ky][kx][oc] gives dX[icl][ix] for the whole row.
void backward_data_row_narrow(const ConvtParams& p, const Packed<float>& w, const void* dy,
                              void* dx, int64_t task, std::vector<float>& acc,
                              std::vector<float>& packed) {
    const int64_t n = task / p.src_h, iy = task % p.src_h;
    const int ig = p.in_per_group, og = p.out_per_group, kw = p.kernel_w;
    const int64_t taps = static_cast<int64_t>(p.kernel_h) * kw;
    // Taps whose destination row exists form one range of ky.
    int ky_lo = p.kernel_h, ky_hi = -1;
    for (int ky = 0; ky < p.kernel_h; ++ky) {
        const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
        if (yy >= 0 && yy < p.clip_h) ky_lo = std::min(ky_lo, ky), ky_hi = std::max(ky_hi, ky);
    }
    acc.assign(static_cast<size_t>(ig) * p.src_w, 0.f);
    for (int g = 0; g < p.groups; ++g) {
        if (ky_hi >= ky_lo) {
            const int64_t depth = int64_t(ky_hi - ky_lo + 1) * kw * og;
            packed.assign(static_cast<size_t>(depth) * p.src_w, 0.f);
            for (int ky = ky_lo; ky <= ky_hi; ++ky) {
                const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
                for (int kx = 0; kx < kw; ++kx) {
                    const int64_t c = p.first_tap_x + int64_t(p.dilation_x) * kx;
                    const auto [lo, hi] = source_span(c, p.stride_x, p.clip_w, p.src_w);
                    for (int oc = 0; oc < og; ++oc) {
                        float* prow =
                            packed.data() + ((int64_t(ky - ky_lo) * kw + kx) * og + oc) * p.src_w;
                        for (int64_t ix = lo; ix <= hi; ++ix)
                            prow[ix] = load<float>(
                                dy, p.dst_type,
                                dst_index(p, n, int64_t(g) * og + oc, yy, ix * p.stride_x - c));
                    }
                }
            }
            const float* wg =
                w.by_input.data() + (int64_t(g) * ig * taps + int64_t(ky_lo) * kw) * og;
            gemm_accumulate<float>(wg, taps * og, packed.data(), p.src_w, static_cast<int>(p.src_w),
                                   acc.data(), p.src_w, ig, static_cast<int>(depth));
        }
        for (int icl = 0; icl < ig; ++icl)
            for (int64_t ix = 0; ix < p.src_w; ++ix) {
                float& a = acc[int64_t(icl) * p.src_w + ix];
                store<float>(dx, p.src_type, src_index(p, n, int64_t(g) * ig + icl, iy, ix), a);
                a = 0.f;
            }
    }
}

// dX row iy of image n: dX[ix][icl] = sum over taps and oc of dY * W.
template <typename T>
void backward_data_row(const ConvtParams& p, const Packed<T>& w, const void* dy, void* dx,
                       int64_t task, std::vector<T>& acc, std::vector<T>& row) {
    const int64_t n = task / p.src_h, iy = task % p.src_h;
    const int ig = p.in_per_group, og = p.out_per_group;
    const int64_t taps = static_cast<int64_t>(p.kernel_h) * p.kernel_w;
    acc.resize(static_cast<size_t>(p.src_w) * ig);
    row.resize(static_cast<size_t>(p.clip_w) * og);
    for (int g = 0; g < p.groups; ++g) {
        std::fill(acc.begin(), acc.end(), T(0));
        for (int ky = 0; ky < p.kernel_h; ++ky) {
            const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
            if (yy < 0 || yy >= p.clip_h) continue;
            for (int64_t xx = 0; xx < p.clip_w; ++xx)  // the group's dY row as [xx][ocl]
                for (int oc = 0; oc < og; ++oc)
                    row[xx * og + oc] =
                        load<T>(dy, p.dst_type, dst_index(p, n, int64_t(g) * og + oc, yy, xx));
            for (int kx = 0; kx < p.kernel_w; ++kx) {
                const int64_t c = p.first_tap_x + int64_t(p.dilation_x) * kx;
                const auto [lo, hi] = source_span(c, p.stride_x, p.clip_w, p.src_w);
                const T* wk =
                    w.backward.data() + ((int64_t(g) * taps + ky * p.kernel_w + kx) * og) * ig;
                if (lo <= hi)  // dX[ix][icl] += dY[xx][oc] * W[oc][icl], xx = ix * sx - c
                    gemm_accumulate<T>(row.data() + (lo * p.stride_x - c) * og,
                                       int64_t(p.stride_x) * og, wk, ig, ig, acc.data() + lo * ig,
                                       ig, hi - lo + 1, og);
            }
        }
        for (int icl = 0; icl < ig; ++icl)
            for (int64_t ix = 0; ix < p.src_w; ++ix)
                store<T>(dx, p.src_type, src_index(p, n, int64_t(g) * ig + icl, iy, ix),
                         acc[ix * ig + icl]);
    }
}

template <typename T>
void write_gradient(void* out, DataType type, int64_t i, T v, bool accumulate) {
    if (type == DataType::Float64) {
        auto* o = static_cast<double*>(out);
        o[i] = accumulate ? o[i] + static_cast<double>(v) : static_cast<double>(v);
    } else {
        auto* o = static_cast<float*>(out);
        o[i] = accumulate ? o[i] + static_cast<float>(v) : static_cast<float>(v);
    }
}

// dW for one (group, ky, kx): sum over images and destination pixels, in that order.
template <typename T>
void backward_weights_tap(const ConvtParams& p, const void* x, const void* dy,
                          const GradientOutput& out, int64_t task, std::vector<T>& acc,
                          std::vector<T>& xv, std::vector<T>& dv) {
    const int64_t taps = static_cast<int64_t>(p.kernel_h) * p.kernel_w;
    const int g = static_cast<int>(task / taps);
    const int ky = static_cast<int>((task % taps) / p.kernel_w),
              kx = static_cast<int>(task % p.kernel_w);
    const int ig = p.in_per_group, og = p.out_per_group;
    acc.assign(static_cast<size_t>(og) * ig, T(0));
    // dW[oc][icl] = sum over the pixels this tap reaches of dY[oc][pixel] * X[pixel][icl]: a GEMM
    // whose depth is the pixel count, taken kBlock pixels at a time from packed copies.
    constexpr int kBlock = 256;
    xv.resize(static_cast<size_t>(kBlock) * ig);  // [pixel][icl]
    dv.resize(static_cast<size_t>(kBlock) * og);  // [oc][pixel]
    int packed = 0;
    auto flush = [&] {
        if (packed == 0) return;
        gemm_accumulate<T>(dv.data(), kBlock, xv.data(), ig, ig, acc.data(), ig, og, packed);
        packed = 0;
    };
    const ColumnRun r = column_run(p, kx);
    for (int64_t n = 0; n < p.num_images && r.count > 0; ++n)
        for (int64_t yy = 0; yy < p.clip_h; ++yy) {
            const int64_t iy = source_row(p, yy, ky);
            if (iy < 0) continue;
            for (int64_t j = 0; j < r.count; ++j) {
                const int64_t xx = r.xx0 + j * p.stride_x, ix = r.ix0 + j;
                for (int icl = 0; icl < ig; ++icl)
                    xv[int64_t(packed) * ig + icl] =
                        load<T>(x, p.src_type, src_index(p, n, int64_t(g) * ig + icl, iy, ix));
                for (int oc = 0; oc < og; ++oc)
                    dv[int64_t(oc) * kBlock + packed] =
                        load<T>(dy, p.dst_type, dst_index(p, n, int64_t(g) * og + oc, yy, xx));
                if (++packed == kBlock) flush();
            }
        }
    flush();
    for (int oc = 0; oc < og; ++oc)
        for (int icl = 0; icl < ig; ++icl)
            write_gradient(out.weights, out.type,
                           ((int64_t(g) * og + oc) * taps + ky * p.kernel_w + kx) * ig + icl,
                           acc[int64_t(oc) * ig + icl], out.accumulate);
}

// dW for few output channels, per image: each source row is read once and serves every tap
// (dW[g][tap][oc][icl] += sum_j dY[oc][xx_j] * X[ix_j][icl]). The per-image partial sums are
// added in image order afterwards, so the result does not depend on the thread count.
void backward_weights_image_narrow(const ConvtParams& p, const void* x, const void* dy, int64_t n,
                                   float* partial, std::vector<float>& xrow,
                                   std::vector<float>& dpack) {
    const int ig = p.in_per_group, og = p.out_per_group, kw = p.kernel_w;
    const int64_t taps = static_cast<int64_t>(p.kernel_h) * kw;
    xrow.resize(static_cast<size_t>(p.src_w) * ig);
    dpack.resize(static_cast<size_t>(og) * p.src_w);
    for (int g = 0; g < p.groups; ++g)
        for (int64_t iy = 0; iy < p.src_h; ++iy) {
            for (int64_t ix = 0; ix < p.src_w; ++ix)  // [ix][icl]
                for (int icl = 0; icl < ig; ++icl)
                    xrow[ix * ig + icl] =
                        load<float>(x, p.src_type, src_index(p, n, int64_t(g) * ig + icl, iy, ix));
            for (int ky = 0; ky < p.kernel_h; ++ky) {
                const int64_t yy = iy * p.stride_y - p.first_tap_y - int64_t(p.dilation_y) * ky;
                if (yy < 0 || yy >= p.clip_h) continue;
                for (int kx = 0; kx < kw; ++kx) {
                    const int64_t c = p.first_tap_x + int64_t(p.dilation_x) * kx;
                    const auto [lo, hi] = source_span(c, p.stride_x, p.clip_w, p.src_w);
                    if (lo > hi) continue;
                    const int64_t count = hi - lo + 1;
                    for (int oc = 0; oc < og; ++oc)  // [oc][j]
                        for (int64_t j = 0; j < count; ++j)
                            dpack[oc * count + j] =
                                load<float>(dy, p.dst_type,
                                            dst_index(p, n, int64_t(g) * og + oc, yy,
                                                      (lo + j) * p.stride_x - c));
                    float* dw = partial + (int64_t(g) * og * taps + ky * kw + kx) * ig;
                    gemm_accumulate<float>(dpack.data(), count, xrow.data() + lo * ig, ig, ig, dw,
                                           taps * ig, og, static_cast<int>(count));
                }
            }
        }
}

// dB[oc]: eight running sums over a row's columns (column xx feeds sum xx % 8), each row's
// added to eight double totals (float totals over many rows lose accuracy: one run saw 1.25e-5
// relative over 32K pixels), added pairwise at the end; the same order for every layout and
// thread count.
template <typename T>
T bias_gradient(const ConvtParams& p, const void* dy, int64_t oc) {
    double totals[8] = {};
    for (int64_t n = 0; n < p.num_images; ++n)
        for (int64_t yy = 0; yy < p.clip_h; ++yy) {
            T lanes[8] = {};
            const int64_t row = dst_index(p, n, oc, yy, 0);
            int64_t xx = 0;
            const float* r = nullptr;
            if (p.dst_type == CONVT_TYPE_F32 && p.dst_stride_w == 1) {
                r = static_cast<const float*>(dy) + row;
            } else if (p.dst_type == CONVT_TYPE_F16 && p.dst_stride_w == 1) {
                thread_local std::vector<float> converted;  // one row, converted at once
                converted.resize(static_cast<size_t>(p.clip_w));
                halves_to_floats(static_cast<const uint16_t*>(dy) + row, static_cast<int>(p.clip_w),
                                 converted.data());
                r = converted.data();
            }
            if (r) {
                for (; xx + 8 <= p.clip_w; xx += 8)
                    for (int l = 0; l < 8; ++l) lanes[l] += static_cast<T>(r[xx + l]);
                for (; xx < p.clip_w; ++xx) lanes[xx % 8] += static_cast<T>(r[xx]);
            }
            for (; xx < p.clip_w; ++xx)
                lanes[xx % 8] += load<T>(dy, p.dst_type, row + xx * p.dst_stride_w);
            for (int l = 0; l < 8; ++l) totals[l] += lanes[l];
        }
    return static_cast<T>(((totals[0] + totals[1]) + (totals[2] + totals[3])) +
                          ((totals[4] + totals[5]) + (totals[6] + totals[7])));
}

// dB when dY's channels are contiguous (NHWC float32 or fp16), in bias_gradient<float>'s order
// for each channel (the same bits): each row's eight lanes (columns l, l + 8, ... in order) for
// every channel at once, rows in parallel a batch at a time, then the batch's lanes added to
// the channels' double totals row by row. Channel by channel, every pixel's line was read once
// a channel (40 ms of dw_k4s2's NHWC backward; fp16, one conversion call an element, 35 ms);
// chunks of channels in parallel, each still read a quarter of every line (4 ms against 1 for
// NCHW).
constexpr int64_t kBiasRowBatch = 64;
// lanes[l * channels + c] = the sum, from 0 and in order, of channel c over columns l, l + 8, ...
// of a dY row whose pixels lie `step` floats apart.
void row_lanes_portable(const float* row, int64_t step, int64_t width, int64_t channels,
                        float* lanes) {
    std::fill(lanes, lanes + 8 * channels, 0.f);
    for (int l = 0; l < 8; ++l)
        for (int64_t xx = l; xx < width; xx += 8)
            for (int64_t c = 0; c < channels; ++c) lanes[l * channels + c] += row[xx * step + c];
}
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// The same sums, 32 channels at a time in four registers along the lane's columns.
__attribute__((target("avx2"))) void row_lanes_avx2(const float* row, int64_t step, int64_t width,
                                                    int64_t channels, float* lanes) {
    for (int l = 0; l < 8; ++l) {
        float* lane = lanes + l * channels;
        int64_t c = 0;
        for (; c + 32 <= channels; c += 32) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t xx = l; xx < width; xx += 8) {
                const float* px = row + xx * step + c;
                a0 = _mm256_add_ps(a0, _mm256_loadu_ps(px));
                a1 = _mm256_add_ps(a1, _mm256_loadu_ps(px + 8));
                a2 = _mm256_add_ps(a2, _mm256_loadu_ps(px + 16));
                a3 = _mm256_add_ps(a3, _mm256_loadu_ps(px + 24));
            }
            _mm256_storeu_ps(lane + c, a0);
            _mm256_storeu_ps(lane + c + 8, a1);
            _mm256_storeu_ps(lane + c + 16, a2);
            _mm256_storeu_ps(lane + c + 24, a3);
        }
        for (; c + 8 <= channels; c += 8) {
            __m256 a0 = _mm256_setzero_ps();
            for (int64_t xx = l; xx < width; xx += 8)
                a0 = _mm256_add_ps(a0, _mm256_loadu_ps(row + xx * step + c));
            _mm256_storeu_ps(lane + c, a0);
        }
        for (; c < channels; ++c) {
            float a = 0.f;
            for (int64_t xx = l; xx < width; xx += 8) a += row[xx * step + c];
            lane[c] = a;
        }
    }
}
#endif
void bias_gradients_by_pixel(const ConvtParams& p, const void* dy, float* sums) {
    const int64_t channels = p.out_channels, rows = int64_t(p.num_images) * p.clip_h;
    const int64_t lane_floats = 8 * channels;  // one row's lanes, [l][channel]
    std::vector<double> totals(static_cast<size_t>(lane_floats), 0.0);
    std::vector<float> lanes(static_cast<size_t>(std::min(rows, kBiasRowBatch) * lane_floats));
    auto& pool = ThreadPool::instance();
    for (int64_t r0 = 0; r0 < rows; r0 += kBiasRowBatch) {
        const int64_t batch = std::min(kBiasRowBatch, rows - r0);
        pool.parallel_for(batch, [&](int64_t i) {
            const int64_t n = (r0 + i) / p.clip_h, yy = (r0 + i) % p.clip_h;
            const int64_t at = dst_index(p, n, 0, yy, 0);
            const float* row = static_cast<const float*>(dy) + at;
            int64_t step = p.dst_stride_w;
            if (p.dst_type != CONVT_TYPE_F32) {  // fp16: the row converted first
                thread_local std::vector<float> floats;
                floats.resize(static_cast<size_t>(p.clip_w * channels));
                load_pixels(dy, p.dst_type, at, p.clip_w, p.dst_stride_w, channels, floats.data());
                row = floats.data();
                step = channels;
            }
            float* l0 = lanes.data() + i * lane_floats;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
            if (use_avx2()) return row_lanes_avx2(row, step, p.clip_w, channels, l0);
#endif
            row_lanes_portable(row, step, p.clip_w, channels, l0);
        });
        constexpr int64_t kChunk = 1024;  // totals a task
        pool.parallel_for(ceil_div(lane_floats, kChunk), [&](int64_t chunk) {
            const int64_t lo = chunk * kChunk, hi = std::min(lane_floats, lo + kChunk);
            for (int64_t i = 0; i < batch; ++i)
                for (int64_t k = lo; k < hi; ++k) totals[k] += lanes[i * lane_floats + k];
        });
    }
    for (int64_t c = 0; c < channels; ++c) {
        const double* t = totals.data() + c;
        sums[c] = static_cast<float>(
            ((t[0] + t[channels]) + (t[2 * channels] + t[3 * channels])) +
            ((t[4 * channels] + t[5 * channels]) + (t[6 * channels] + t[7 * channels])));
    }
}

template <typename T>
void pack(const PreparedWeights& pw, Packed<T>& out) {
    const int64_t og = pw.out_channels / pw.groups, ig = pw.in_per_group;
    const int64_t taps = pw.kernel_h * pw.kernel_w;
    out.forward.resize(pw.values.size());
    out.backward.resize(pw.values.size());
    if (og < kNarrow) out.by_input.resize(pw.values.size());
    for (int64_t oc = 0; oc < pw.out_channels; ++oc) {
        const int64_t g = oc / og, ocl = oc % og;
        for (int64_t t = 0; t < taps; ++t)
            for (int64_t icl = 0; icl < ig; ++icl) {
                const T v = static_cast<T>(pw.values[(oc * taps + t) * ig + icl]);
                out.forward[((g * taps + t) * ig + icl) * og + ocl] = v;
                out.backward[((g * taps + t) * og + ocl) * ig + icl] = v;
                if (!out.by_input.empty()) out.by_input[((g * ig + icl) * taps + t) * og + ocl] = v;
            }
    }
    out.bias.assign(static_cast<size_t>(pw.out_channels), T(0));
    for (size_t i = 0; i < pw.bias.size(); ++i) out.bias[i] = static_cast<T>(pw.bias[i]);
    if (pw.neuron.type == NeuronType::PReLU)
        out.slopes.assign(pw.neuron.data.begin(), pw.neuron.data.end());
}

class CpuBackend : public detail::Backend {
 public:
    std::string kind() const override { return "cpu"; }
    std::string name() const override {
        return "cpu (" + std::to_string(ThreadPool::instance().num_threads()) + " threads)";
    }

    bool supports_float64() const override { return true; }

    std::unique_ptr<DeviceWeights> upload(const PreparedWeights& pw) override {
        auto w = std::make_unique<CpuWeights>();
        w->is_double = pw.type == DataType::Float64;
        w->finite = std::all_of(pw.values.begin(), pw.values.end(),
                                [](double v) { return std::isfinite(v); });
        if (w->is_double)
            pack(pw, w->d);
        else {
            pack(pw, w->f);
            pack_gemm_weights(pw, w->gemm);
            if (pw.in_per_group == 1 && pw.out_channels == pw.groups)
                pack_depthwise_weights(pw, w->depth);
            if (scatter_weights_wanted(pw)) pack_scatter_weights(pw, w->scatter);
            if (winograd_weights_wanted(pw)) pack_winograd_weights(pw, w->wino);
        }
        return w;
    }

    void forward(const ConvtParams& p, const DeviceWeights& weights, const TensorView& src_view,
                 const TensorView& dst_view) override {
        const void* src = src_view.data;
        void* dst = dst_view.data;
        const auto& w = static_cast<const CpuWeights&>(weights);
        const int64_t tasks = static_cast<int64_t>(p.num_images) * p.clip_h;
        if (tasks == 0 || p.clip_w == 0) return;
        const bool fast = !w.is_double && w.finite;
        if (fast && depthwise_nhwc_fits(p)) return forward_depthwise_nhwc(p, w.depth, src, dst);
        if (fast && depthwise_fits(p)) return forward_depthwise(p, w.depth, src, dst);
        // Exact with any weights: it multiplies no zero padding.
        if (!w.is_double && forward_scatter_fits(p, w.scatter))
            return forward_scatter(p, w.scatter, src, dst);
        if (fast && forward_gemm_fits(p) && pixel_rows_forward_before_winograd(p))
            return forward_pixel_rows(p, w.gemm, src, dst);
        // An Inf or NaN in the result is recomputed exactly (the transforms subtract).
        if (fast && forward_winograd_fits(p, w.wino) &&
            forward_winograd(p, w.wino, w.gemm.bias, w.gemm.slopes, src, dst))
            return;
        if (fast && forward_gemm_fits(p) && pixel_rows_forward_fits(p))
            return forward_pixel_rows(p, w.gemm, src, dst);
        if (fast && forward_gemm_fits(p)) return forward_gemm(p, w.gemm, src, dst);
        // Few output channels and a wide row: make the pixels the GEMM's wide side.
        const bool narrow =
            !p.accumulate_half && p.out_per_group < kNarrow &&
            p.clip_w >= int64_t(16) * p.stride_x;  // 64-bit: 16 * a 2^30 stride overflows int
        ThreadPool::instance().parallel_for(tasks, [&](int64_t t) {
            if (w.is_double) {
                thread_local std::vector<double> acc, row;
                forward_row<double, false>(p, w.d, src, dst, t, acc, row);
            } else {
                thread_local std::vector<float> acc, row;
                if (narrow)
                    forward_row_narrow(p, w.f, src, dst, t, acc, row);
                else if (p.accumulate_half)
                    forward_row<float, true>(p, w.f, src, dst, t, acc, row);
                else
                    forward_row<float, false>(p, w.f, src, dst, t, acc, row);
            }
        });
    }

    void backward_data(const ConvtParams& p, const DeviceWeights& weights,
                       const TensorView& dy_view, const TensorView& dx_view) override {
        const void* dy = dy_view.data;
        void* dx = dx_view.data;
        const auto& w = static_cast<const CpuWeights&>(weights);
        const int64_t tasks = static_cast<int64_t>(p.num_images) * p.src_h;
        if (tasks == 0 || p.src_w == 0) return;
        const bool fast = !w.is_double && w.finite;
        if (fast && depthwise_nhwc_fits(p)) return backward_data_depthwise_nhwc(p, w.depth, dy, dx);
        if (fast && depthwise_fits(p)) return backward_data_depthwise(p, w.depth, dy, dx);
        if (fast && pixel_rows_dx_before_winograd(p))
            return backward_data_pixel_rows(p, w.gemm, dy, dx);
        if (fast && backward_data_winograd_fits(p, w.wino) &&
            backward_data_winograd(p, w.wino, dy, dx))
            return;
        if (fast && p.stride_y == p.stride_x && p.dilation_y == 1 && p.dilation_x == 1 &&
            winograd_odd_wanted(p.groups, p.out_per_group, p.in_per_group, p.kernel_h, p.kernel_w,
                                p.stride_x)) {
            std::call_once(w.odd_once, [&] {
                pack_winograd_odd(p.groups, p.out_per_group, p.in_per_group, p.stride_x,
                                  w.f.backward.data(), w.wino_odd);
            });
            if (backward_data_winograd_fits(p, w.wino_odd) &&
                backward_data_winograd(p, w.wino_odd, dy, dx))
                return;
        }
        if (fast && pixel_rows_dx_fits(p)) return backward_data_pixel_rows(p, w.gemm, dy, dx);
        if (fast && backward_data_gemm_fits(p)) return backward_data_gemm(p, w.gemm, dy, dx);
        const bool narrow = w.finite && !w.f.by_input.empty() && p.src_w >= 16;
        ThreadPool::instance().parallel_for(tasks, [&](int64_t t) {
            if (w.is_double) {
                thread_local std::vector<double> acc, row;
                backward_data_row<double>(p, w.d, dy, dx, t, acc, row);
            } else {
                thread_local std::vector<float> acc, row;
                if (narrow)
                    backward_data_row_narrow(p, w.f, dy, dx, t, acc, row);
                else
                    backward_data_row<float>(p, w.f, dy, dx, t, acc, row);
            }
        });
    }

    void backward_weights(const ConvtParams& p, const TensorView& x_view, const TensorView& dy_view,
                          const GradientOutput& out) override {
        const void* x = x_view.data;
        const void* dy = dy_view.data;
        auto& pool = ThreadPool::instance();
        const bool dbl = out.type == DataType::Float64;
        const int64_t count = int64_t(p.out_channels) * p.kernel_h * p.kernel_w * p.in_per_group;
        // Few output channels: per-image partial sums (weight-sized each), added in image order.
        const bool partial_sums = out.weights && !dbl && p.out_per_group < kNarrow &&
                                  int64_t(p.num_images) * count <= (int64_t(1) << 22);
        const bool tiled = partial_sums && backward_weights_taps_fits(p);
        if (out.weights && (p.num_images == 0 || p.src_h == 0 || p.src_w == 0)) {
            // No X pixels: every weight's sum is empty. (The paths below cut rows into pixel
            // slices: a zero width divided by zero, killing the process with SIGFPE.)
            for (int64_t i = 0; i < count; ++i)
                write_gradient(out.weights, out.type, i, 0.0, out.accumulate);
        } else if (out.weights && !dbl && depthwise_nhwc_fits(p)) {
            backward_weights_depthwise_nhwc(p, x, dy, out);
        } else if (out.weights && !dbl && depthwise_fits(p)) {
            backward_weights_depthwise(p, x, dy, out);
        } else if (!tiled && out.weights && !dbl && backward_weights_winograd_fits(p) &&
                   backward_weights_winograd(p, x, dy, out)) {
            // Done; a result holding Inf or NaN wrote nothing and falls to the exact GEMM.
        } else if (!tiled && out.weights && !dbl && backward_weights_gemm_fits(p)) {
            backward_weights_gemm(p, x, dy, out);
        } else if (partial_sums) {
            // Parts: images, each cut into row ranges when the partials stay small (so a small
            // batch still keeps every thread busy); summed part by part in order. The cuts
            // depend on the batch alone, so the bits do not depend on the thread count.
            const int64_t cuts =
                tiled && int64_t(p.num_images) * kRowCuts * count <= (int64_t(1) << 22)
                    ? std::clamp<int64_t>(ceil_div(kMinParts, p.num_images), 1,
                                          std::min<int64_t>(kRowCuts, p.src_h))
                    : 1;  // (batch and rows are not empty here: see the first branch)
            const int64_t parts = int64_t(p.num_images) * cuts;
            // Not cleared here: a tiled part writes all of its partial, a narrow part clears
            // its own first (on its thread; the serial clear and sum below were a tenth of
            // dcgan_out's dW, the other thread waiting).
            std::unique_ptr<float[]> partials(new float[static_cast<size_t>(parts * count)]);
            if (detail::poison_scratch())
                std::fill_n(partials.get(), parts * count, std::numeric_limits<float>::quiet_NaN());
            pool.parallel_for(parts, [&](int64_t part) {
                thread_local std::vector<float> xrow, dpack;
                const int64_t n = part / cuts, cut = part % cuts;
                float* out_part = partials.get() + part * count;
                if (tiled) {
                    backward_weights_taps_image(p, x, dy, n, p.src_h * cut / cuts,
                                                p.src_h * (cut + 1) / cuts, out_part);
                } else {
                    std::fill(out_part, out_part + count, 0.f);
                    backward_weights_image_narrow(p, x, dy, n, out_part, xrow, dpack);
                }
            });
            // Each weight the sum of its parts in part order, from 0 (the same bits for any
            // thread count); weights in chunks across the threads, parts along contiguous rows.
            constexpr int64_t kChunk = 1024;
            pool.parallel_for(ceil_div(count, kChunk), [&](int64_t chunk) {
                const int64_t lo = chunk * kChunk, len = std::min(kChunk, count - lo);
                float sum[kChunk] = {};
                for (int64_t k = 0; k < parts; ++k) {
                    const float* part = partials.get() + k * count + lo;
                    for (int64_t i = 0; i < len; ++i) sum[i] += part[i];
                }
                for (int64_t i = 0; i < len; ++i)
                    write_gradient(out.weights, out.type, lo + i, sum[i], out.accumulate);
            });
        } else if (out.weights) {
            const int64_t tasks = int64_t(p.groups) * p.kernel_h * p.kernel_w;
            pool.parallel_for(tasks, [&](int64_t t) {
                if (dbl) {
                    thread_local std::vector<double> acc, xv, dv;
                    backward_weights_tap<double>(p, x, dy, out, t, acc, xv, dv);
                } else {
                    thread_local std::vector<float> acc, xv, dv;
                    backward_weights_tap<float>(p, x, dy, out, t, acc, xv, dv);
                }
            });
        }
        bias_gradients(p, dy, out);
    }

    bool backward_data_and_weights(const ConvtParams& pd, const DeviceWeights& weights,
                                   const TensorView& dy, const TensorView& dx,
                                   const ConvtParams& pw, const TensorView& x,
                                   const GradientOutput& out) override {
        // Depthwise: dX and dW in one pass over dY (dw_k4s2 reads 33 MB of it a pass).
        const auto& w = static_cast<const CpuWeights&>(weights);
        if (w.is_double || !w.finite || !out.weights || out.type != DataType::Float32 ||
            !depthwise_fits(pd) || !depthwise_fits(pw) || depthwise_nhwc_fits(pd) ||
            depthwise_nhwc_fits(pw) || pd.num_images == 0 || pd.src_h == 0 || pd.src_w == 0)
            return false;
        backward_depthwise(pd, w.depth, dy.data, dx.data, pw, x.data, out);  // dB too
        return true;
    }

 private:
    static void bias_gradients(const ConvtParams& p, const void* dy, const GradientOutput& out) {
        if (!out.bias) return;
        const bool dbl = out.type == DataType::Float64;
        if (!dbl && float_or_half(p.dst_type) && p.dst_stride_c == 1 && p.dst_stride_w != 1) {
            std::vector<float> sums(static_cast<size_t>(p.out_channels));
            bias_gradients_by_pixel(p, dy, sums.data());
            for (int64_t oc = 0; oc < p.out_channels; ++oc)
                write_gradient(out.bias, out.type, oc, sums[oc], out.accumulate);
            return;
        }
        ThreadPool::instance().parallel_for(p.out_channels, [&](int64_t oc) {
            if (dbl)
                write_gradient(out.bias, out.type, oc, bias_gradient<double>(p, dy, oc),
                               out.accumulate);
            else
                write_gradient(out.bias, out.type, oc, bias_gradient<float>(p, dy, oc),
                               out.accumulate);
        });
    }
};

}  // namespace
}  // namespace convt::cpu

namespace convt {

namespace detail {
std::shared_ptr<Backend> make_cpu_backend() { return std::make_shared<cpu::CpuBackend>(); }
}  // namespace detail

void set_num_threads(int n) { cpu::ThreadPool::instance().set_num_threads(n); }
int get_num_threads() { return cpu::ThreadPool::instance().num_threads(); }

}  // namespace convt
