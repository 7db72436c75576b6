#include "weight_gradient_rows.h"

#include <algorithm>
#include <vector>

#include "elements.h"
#include "geometry.h"
#include "micro_kernel.h"
#include "thread_pool.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define CONVT_X86_DISPATCH 1
#endif

namespace convt::cpu {
namespace {

constexpr int kTileA = 4;    // dY channels per register tile
constexpr int kTileB = 3;    // X channels per register tile
constexpr int kMinRow = 16;  // shorter rows: the packed GEMM does better
// More channel pairs than this, or strided dY rows: the packed GEMM wins (measured).
constexpr int64_t kMaxPairs = 32 * 32;
constexpr int64_t kChunkBytes = 512 * 1024;  // rows of one chunk stay in L2

// out[i * ld + j] += sum over rows r and k < len of a[i * rows + r][k] * b[j * rows + r][k],
// in eight lanes (element k feeds lane k % 8) added pairwise at the end: a fixed order.
using DotTile = void (*)(int rows, int len, const float* const* a, const float* const* b,
                         float* out, int64_t ld);

void dot_tile_portable(int rows, int len, const float* const* a, const float* const* b, float* out,
                       int64_t ld) {
    float acc[kTileA][kTileB][8] = {};
    for (int r = 0; r < rows; ++r)
        for (int i = 0; i < kTileA; ++i)
            for (int j = 0; j < kTileB; ++j) {
                const float* ar = a[i * rows + r];
                const float* br = b[j * rows + r];
                for (int k = 0; k < len; ++k) acc[i][j][k % 8] += ar[k] * br[k];
            }
    for (int i = 0; i < kTileA; ++i)
        for (int j = 0; j < kTileB; ++j) {
            const float* l = acc[i][j];
            out[i * ld + j] += ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
        }
}

#ifdef CONVT_X86_DISPATCH
// acc[i][j] += y_i * x_j for one vector of eight elements.
__attribute__((target("avx2,fma"))) inline void dot_step(__m256 (&acc)[kTileA][kTileB], __m256 x0,
                                                         __m256 x1, __m256 x2, __m256 y0, __m256 y1,
                                                         __m256 y2, __m256 y3) {
    const __m256 xv[kTileB] = {x0, x1, x2}, yv[kTileA] = {y0, y1, y2, y3};
    for (int i = 0; i < kTileA; ++i)
        for (int j = 0; j < kTileB; ++j) acc[i][j] = _mm256_fmadd_ps(yv[i], xv[j], acc[i][j]);
}

__attribute__((target("avx2,fma"))) void dot_tile_avx2(int rows, int len, const float* const* a,
                                                       const float* const* b, float* out,
                                                       int64_t ld) {
    __m256 acc[kTileA][kTileB];
    for (auto& row : acc)
        for (auto& v : row) v = _mm256_setzero_ps();
    const int tail = len % 8;
    alignas(32) int mask_bits[8];
    for (int l = 0; l < 8; ++l) mask_bits[l] = l < tail ? -1 : 0;
    const __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask_bits));
    for (int r = 0; r < rows; ++r) {
        const float *a0 = a[r], *a1 = a[rows + r], *a2 = a[2 * rows + r], *a3 = a[3 * rows + r];
        const float *b0 = b[r], *b1 = b[rows + r], *b2 = b[2 * rows + r];
        int k = 0;
        for (; k + 8 <= len; k += 8)
            dot_step(acc, _mm256_loadu_ps(b0 + k), _mm256_loadu_ps(b1 + k), _mm256_loadu_ps(b2 + k),
                     _mm256_loadu_ps(a0 + k), _mm256_loadu_ps(a1 + k), _mm256_loadu_ps(a2 + k),
                     _mm256_loadu_ps(a3 + k));
        if (tail)  // masked loads read only the row's own elements
            dot_step(acc, _mm256_maskload_ps(b0 + k, mask), _mm256_maskload_ps(b1 + k, mask),
                     _mm256_maskload_ps(b2 + k, mask), _mm256_maskload_ps(a0 + k, mask),
                     _mm256_maskload_ps(a1 + k, mask), _mm256_maskload_ps(a2 + k, mask),
                     _mm256_maskload_ps(a3 + k, mask));
    }
    for (int i = 0; i < kTileA; ++i)
        for (int j = 0; j < kTileB; ++j) {
            alignas(32) float l[8];
            _mm256_store_ps(l, acc[i][j]);
            out[i * ld + j] += ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
        }
}
#endif

DotTile dot_tile() {
#ifdef CONVT_X86_DISPATCH
    if (use_avx2()) return &dot_tile_avx2;
#endif
    return &dot_tile_portable;
}

}  // namespace

bool backward_weights_rows_fits(const ConvtParams& p) {
    if (p.src_type != CONVT_TYPE_F32 || p.dst_type != CONVT_TYPE_F32 || p.accumulate_half)
        return false;
    if (p.src_stride_w != 1 || p.stride_x != 1 || p.out_per_group < kTileA ||
        p.in_per_group < kTileB || int64_t(p.out_per_group) * p.in_per_group > kMaxPairs)
        return false;
    // The shortest row any tap reads is at least the clip over the stride, less the kernel's span.
    const int64_t span = int64_t(p.dilation_x) * (p.kernel_w - 1);
    return std::min<int64_t>(p.src_w, p.clip_w / p.stride_x) - span / p.stride_x >= kMinRow;
}

void backward_weights_rows(const ConvtParams& p, const void* x, const void* dy,
                           const detail::GradientOutput& out) {
    const int og = p.out_per_group, ig = p.in_per_group;
    const int taps = p.kernel_h * p.kernel_w;
    const int a_tiles = (og + kTileA - 1) / kTileA, b_tiles = (ig + kTileB - 1) / kTileB;
    const int64_t want = 4 * int64_t(ThreadPool::instance().num_threads());
    const int splits = static_cast<int>(std::clamp<int64_t>(
        (want + int64_t(p.groups) * taps - 1) / (int64_t(p.groups) * taps), 1, a_tiles));
    const int tiles_per_split = (a_tiles + splits - 1) / splits;
    const float* xs = static_cast<const float*>(x);
    const float* ds = static_cast<const float*>(dy);
    const bool dy_rows = p.stride_x == 1 && p.dst_stride_w == 1;  // else deinterleaved first
    const DotTile tile = dot_tile();
    ThreadPool::instance().parallel_for(int64_t(p.groups) * taps * splits, [&](int64_t ti) {
        const int g = static_cast<int>(ti / (int64_t(taps) * splits));
        const int tap = static_cast<int>((ti / splits) % taps);
        const int t0 = static_cast<int>(ti % splits) * tiles_per_split;
        const int t1 = std::min(a_tiles, t0 + tiles_per_split);
        if (t0 >= t1) return;
        const int oc0 = t0 * kTileA, oc1 = std::min(og, t1 * kTileA);
        const int na = (t1 - t0) * kTileA, nb = b_tiles * kTileB;
        const int ky = tap / p.kernel_w, kx = tap % p.kernel_w;
        const int64_t cy = p.first_tap_y + int64_t(p.dilation_y) * ky;
        const int64_t cx = p.first_tap_x + int64_t(p.dilation_x) * kx;
        const auto [y_lo, y_hi] = source_span(cy, p.stride_y, p.clip_h, p.src_h);
        const auto [x_lo, x_hi] = source_span(cx, p.stride_x, p.clip_w, p.src_w);
        const int64_t rows_per_image = std::max<int64_t>(0, y_hi - y_lo + 1);
        const int len = static_cast<int>(std::max<int64_t>(0, x_hi - x_lo + 1));
        const int64_t rows = int64_t(p.num_images) * rows_per_image;
        thread_local std::vector<float> c, zeros, deinterleaved;
        thread_local std::vector<const float*> a_rows, b_rows;
        c.assign(size_t(na) * nb, 0.f);
        const int chunk = static_cast<int>(std::clamp<int64_t>(
            kChunkBytes / (int64_t(sizeof(float)) * std::max(len, 1) * (na + nb)), 1, 256));
        zeros.assign(size_t(len), 0.f);
        a_rows.resize(size_t(na) * chunk);
        b_rows.resize(size_t(nb) * chunk);
        if (!dy_rows) deinterleaved.resize(size_t(oc1 - oc0) * chunk * len);
        for (int64_t r0 = 0; r0 < rows && len > 0; r0 += chunk) {
            const int nr = static_cast<int>(std::min<int64_t>(chunk, rows - r0));
            for (int r = 0; r < nr; ++r) {
                const int64_t n = (r0 + r) / rows_per_image, iy = y_lo + (r0 + r) % rows_per_image;
                const int64_t xrow = p.src_base + n * p.src_stride_n +
                                     int64_t(g) * ig * p.src_stride_c + iy * p.src_stride_h + x_lo;
                for (int j = 0; j < nb; ++j)
                    b_rows[size_t(j) * nr + r] =
                        j < ig ? xs + xrow + j * p.src_stride_c : zeros.data();
                const int64_t yrow = p.dst_base + n * p.dst_stride_n +
                                     int64_t(g) * og * p.dst_stride_c +
                                     (p.clip_y + iy * p.stride_y - cy) * p.dst_stride_h +
                                     (p.clip_x + x_lo * p.stride_x - cx) * p.dst_stride_w;
                for (int i = 0; i < na; ++i) {
                    const int oc = oc0 + i;
                    const float* row = zeros.data();
                    if (oc < oc1 && dy_rows) {
                        row = ds + yrow + int64_t(oc) * p.dst_stride_c;
                    } else if (oc < oc1) {  // every stride_x-th element of the dY row
                        float* d = deinterleaved.data() + (size_t(i) * chunk + r) * len;
                        const float* s = ds + yrow + int64_t(oc) * p.dst_stride_c;
                        const int64_t step = int64_t(p.stride_x) * p.dst_stride_w;
                        for (int k = 0; k < len; ++k) d[k] = s[k * step];
                        row = d;
                    }
                    a_rows[size_t(i) * nr + r] = row;
                }
            }
            for (int ta = 0; ta < t1 - t0; ++ta)
                for (int tb = 0; tb < b_tiles; ++tb)
                    tile(nr, len, a_rows.data() + size_t(ta) * kTileA * nr,
                         b_rows.data() + size_t(tb) * kTileB * nr,
                         c.data() + size_t(ta) * kTileA * nb + tb * kTileB, nb);
        }
        auto* dw = static_cast<float*>(out.weights);
        for (int oc = oc0; oc < oc1; ++oc) {
            float* o = dw + ((int64_t(g) * og + oc) * taps + tap) * ig;
            const float* s = c.data() + size_t(oc - oc0) * nb;
            for (int icl = 0; icl < ig; ++icl) o[icl] = out.accumulate ? o[icl] + s[icl] : s[icl];
        }
    });
}

}  // namespace convt::cpu
