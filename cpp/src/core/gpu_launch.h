// Launch geometry of the GPU kernels in metal/*.metal, shared by the Metal and CUDA backends:
// which kernel runs a dispatch, its threadgroup shape and its grid. The numbers mirror the
// kernels' own #defines (metal/convt_kernel.h, convt_forward_gemm.metal,
// convt_backward_weights_gemm.metal).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "../../../metal/convt_params.h"
#include "backend.h"
#include "check.h"

namespace convt::detail::gpu {

struct Dims {
    int64_t x, y, z;
};

/// One kernel dispatch: entry point (without its type suffix), threadgroups and threads.
struct Launch {
    std::string kernel;
    Dims groups, threads;
};

constexpr int64_t kTile = 8, kThreads = 64, kChannelBlock = 4, kSimd = 32;
// GEMM kernels: 64 x 64 tiles, 256 threads. The forward one serves layers with at least
// kGemmMinOut output channels per group (narrower ones waste most of its tile), dW the layers
// with at least kDwGemmMin output and input channels per group. Measured on an H100 (dW kernel,
// N=8, tools/gpu_dw_bench.py): the taps kernel beat it below that (dcgan_out 3 x 128 channels
// 0.21 -> 0.03 ms, grp4 16 x 16 1.70 -> 0.25, fcn8s 21 x 21 1.72 -> 0.47, fsrcnn 1 x 56 10.1 ->
// 0.32), and lost at 32 x 64 (unet_up2: GEMM 0.49, narrow kernel 0.67, taps 4 x 16 3.3).
constexpr int64_t kGemmTile = 64, kGemmThreads = 256, kGemmMinOut = 32, kDwGemmMin = 32;
// dW splits K into slices until about this many threadgroups run, each slice >= kDwMinSlice.
constexpr int64_t kDwTargetGroups = 512, kDwMinSlice = 256, kDwMaxSplits = 64;
// Narrow dW (convt_backward_weights.metal): a SIMD-group per kDwdOut x kDwdIn channels of a tap
// and a slice, kDwdSimds SIMD-groups a threadgroup; slices until about kDwdTargetSimds
// SIMD-groups run (a full H100 holds 132 x 64), each of >= kDwdMinSlice K positions. 2 x 8 had
// the lowest total over five shapes on an H100 of 4 x 8, 2 x 8, 4 x 4, 2 x 4, 1 x 8, 8 x 4.
constexpr int64_t kDwdOut = 2, kDwdIn = 8, kDwdSimds = 4, kDwdTargetSimds = 8192,
                  kDwdMinSlice = 2048;
// "Taps" dW (convt_backward_weights_taps{1,8}): a threadgroup of kDwwSimds SIMD-groups per
// output channel, kDwwIn input channels and kDwwTaps taps (1 and 16 when the group has one input
// channel) and slice; slices until about kDwwTargetGroups threadgroups run, each of >=
// kDwwMinUnits units (32 source columns of a row). Lanes run over columns: images narrower than
// kDwwMinWidth take the narrow kernel instead.
constexpr int64_t kDwwIn = 8, kDwwTaps = 4, kDwwTaps1 = 16, kDwwSimds = 8, kDwwTargetGroups = 528,
                  kDwwMinUnits = 64, kDwwMinWidth = 24;
// dB: a threadgroup of kDbSimds SIMD-groups per output channel and slice of the clip rows;
// slices until about kDbTargetGroups threadgroups run, each of >= kDbMinRows rows (fsrcnn's one
// channel had 7 SIMD-groups for 1.2M pixels).
constexpr int64_t kDbSimds = 8, kDbTargetGroups = 528, kDbMinRows = 8;
constexpr int64_t kDxMinTiles = 128;
// Narrow kernels: rows per thread (convt_forward_depthwise.metal), pixels per thread
// (convt_forward_narrow.metal), and dX's reduction slices,
// pixels and channels per lane (convt_backward_data_ksplit.metal). dX splits the reduction when
// it is long (taps x output channels) and there are at least as many taps as slices.
constexpr int64_t kDwRows = 4, kNarrowPixels = 4, kDxSlices = 8, kDxPixels = 2, kDxChannels = 8;
constexpr int64_t kDxMinReduction = 64;
// Depthwise dX (convt_backward_data_depthwise.metal): a thread per column and kDxdRows rows.
constexpr int64_t kDxdRows = 4;
// dX with lanes over (pixel column, kx mod 8) (convt_backward_data_kxlanes.metal): 4 columns x 8
// residues a SIMD-group, 4 pixels x 8 input channels a lane, 2 pixel tiles x 4 reduction slices a
// threadgroup; weights of up to kDxlMaxTaps taps (output channels x taps) staged at a time. It
// needs kernel widths that are multiples of 8 (else lanes idle) and 32-bit dY offsets in one image.
// Against ksplit on an H100 (bench_gpu): fcn8s_up8 N=8 0.334 -> 0.274 ms, N=1 0.204 -> 0.084,
// hifigan_up1 N=1 0.162 -> 0.116.
constexpr int64_t kDxlLanes = 8, kDxlColumns = kSimd / kDxlLanes, kDxlPixels = 4, kDxlChannels = 8,
                  kDxlTiles = 2, kDxlSlices = 4, kDxlMaxTaps = 256;
// The narrow forward kernel runs only with at least this many threadgroups: with fewer it lost
// to convt_forward (H200, bench_gpu: fsrcnn_x3 N=1, 576 groups, 0.150 ms against 0.115;
// dcgan_out N=8, 384 groups, 0.149 against 0.074) and won with more (fsrcnn_x3 N=8, 4608 groups,
// 0.559 against 0.661). CONVT_GPU_NARROW=always drops the limit, and gives convt_forward_rows
// its tall threadgroups on any grid (tests reach both with small images).
constexpr int64_t kNarrowMinGroups = 2048;
// The narrow kernel's threadgroups are 32 x 2 threads (4 pixels a thread, 2 rows apart: a tile of
// 32 x 8 pixels), so a SIMD-group reads one 32-pixel row a load: on an H200 (fsrcnn_x3, N=8)
// L1 hits rose from 18% to 76% and the time fell 0.561 -> 0.513 ms against 8 x 8 threads.
constexpr int64_t kNarrowTileX = 32;
// convt_forward_rows: kRowsPixels consecutive rows of a phase a thread (CONVT_ROWS_R), lanes
// over columns, kRowsTileY SIMD-groups a threadgroup (1 where that makes fewer than
// kRowsMinTallGroups threadgroups, 4 an H100 core), at most kRowsMaxTaps ky taps a phase
// (CONVT_ROWS_MAX_TAPS). Grids of fewer than kRowsMinGroups SIMD-groups take the other kernels
// (H100, fp16: dcgan_out N=8, 384 SIMD-groups, 0.14-0.19 ms against convt_forward's 0.11;
// fsrcnn_x3 N=1, 576, 0.12-0.13 against convt_forward's 0.12-0.15; N=8 fp32
// 0.51 -> 0.17 ms, fp16 0.53 -> 0.23).
constexpr int64_t kRowsPixels = 8, kRowsTileX = 32, kRowsTileY = 4, kRowsMaxTaps = 4,
                  kRowsMinTallGroups = 528, kRowsMinGroups = 512;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// 64 pixels a threadgroup: 8x8, or 64x1 for one-row images (1-D layers).
inline Dims pixel_tile(int64_t rows) {
    return rows == 1 ? Dims{kThreads, 1, 1} : Dims{kTile, kTile, 1};
}

/// The kernels index one image's expanded coordinates (first tap + destination position +
/// kernel extent, source position x stride) in 32 bits.
inline void check_index_range(const ConvtParams& p) {
    const auto span = [](int64_t first_tap, int64_t clip, int64_t k, int64_t d, int64_t src,
                         int64_t s) { return std::abs(first_tap) + clip + d * k + src * s; };
    require(
        span(p.first_tap_x, p.clip_w, p.kernel_w, p.dilation_x, p.src_w, p.stride_x) <= INT32_MAX,
        "GPU expanded width (|total offset x| + clip width + kernel extent + source width x "
        "stride)",
        span(p.first_tap_x, p.clip_w, p.kernel_w, p.dilation_x, p.src_w, p.stride_x), "< 2^31");
    require(
        span(p.first_tap_y, p.clip_h, p.kernel_h, p.dilation_y, p.src_h, p.stride_y) <= INT32_MAX,
        "GPU expanded height (|total offset y| + clip height + kernel extent + source height "
        "x stride)",
        span(p.first_tap_y, p.clip_h, p.kernel_h, p.dilation_y, p.src_h, p.stride_y), "< 2^31");
}

inline bool narrow_always() {
    const char* v = std::getenv("CONVT_GPU_NARROW");
    if (v == nullptr || std::string(v) == "auto") return false;
    if (std::string(v) == "always") return true;
    throw std::invalid_argument(
        concat("CONVT_GPU_NARROW must be 'auto' or 'always', got '", v, "'"));
}

/// Whether every weight is finite: the forward kernels that read missing source pixels as 0
/// need that (0 * Inf would add a NaN where the reference adds nothing).
inline bool all_finite(const std::vector<double>& values) {
    return std::all_of(values.begin(), values.end(), [](double v) { return std::isfinite(v); });
}

/// convt_forward_rows runs the layer: float accumulation, fewer output channels per group than a
/// channel block, finite weights, consecutive ky taps of a phase one source row apart (the
/// dilation divides the stride) and at most kRowsMaxTaps of them, more than one phase row, and
/// source offsets of one channel plane in 32 bits.
inline bool forward_rows_fit(const ConvtParams& p, bool weights_finite) {
    const auto mag = [](int64_t v) { return v < 0 ? -v : v; };
    const int64_t dy = p.dilation_y, sy = p.stride_y;
    const int64_t step = sy / std::gcd(sy, dy);  // taps of a phase are `step` apart
    const int64_t span =
        (int64_t(p.src_h) - 1) * mag(p.src_stride_h) + (int64_t(p.src_w) - 1) * mag(p.src_stride_w);
    return weights_finite && !p.accumulate_half && p.out_per_group < kChannelBlock &&
           sy % dy == 0 && ceil_div(p.kernel_h, step) <= kRowsMaxTaps &&
           ceil_div(p.clip_h, sy) > 1 && span <= INT32_MAX;
}

inline Launch forward(const ConvtParams& p, bool weights_finite) {
    check_index_range(p);
    const int64_t sx = p.stride_x, sy = p.stride_y;
    const int64_t cols = ceil_div(p.clip_w, sx), rows = ceil_div(p.clip_h, sy);
    if (p.out_per_group == 1 && p.in_per_group == 1)  // depthwise: kDwRows rows of a phase
        return {"convt_forward_depthwise_",
                {ceil_div(p.clip_w, kThreads),
                 ceil_div(p.clip_h, sy * kDwRows) * std::min<int64_t>(sy, p.clip_h),
                 int64_t(p.num_images) * p.groups},
                {kThreads, 1, 1}};
    // Only phases that reach the clip (convt_phases in metal/convt_kernel.h).
    const int64_t images = int64_t(p.num_images) * p.groups * std::min<int64_t>(sx, p.clip_w) *
                           std::min<int64_t>(sy, p.clip_h);
    if (!p.accumulate_half && p.out_per_group >= kGemmMinOut)
        return {"convt_forward_gemm_",
                {ceil_div(rows * cols, kGemmTile), ceil_div(p.out_per_group, kGemmTile), images},
                {kGemmThreads, 1, 1}};
    const bool always = narrow_always();  // read (and checked) on every such layer
    if (forward_rows_fit(p, weights_finite)) {
        // One SIMD-group a threadgroup on small grids, so that they spread over every core.
        const Dims tall{ceil_div(cols, kRowsTileX), ceil_div(rows, kRowsTileY * kRowsPixels),
                        images * p.out_per_group};
        if (tall.x * tall.y * tall.z >= kRowsMinTallGroups || always)
            return {"convt_forward_rows_", tall, {kRowsTileX, kRowsTileY, 1}};
        const Dims flat{tall.x, ceil_div(rows, kRowsPixels), tall.z};
        if (flat.x * flat.y * flat.z >= kRowsMinGroups)
            return {"convt_forward_rows_", flat, {kRowsTileX, 1, 1}};
    }
    const Dims tile = pixel_tile(rows);
    // Fewer channels than a channel block: one channel and kNarrowPixels pixels a thread.
    const Dims ntile =
        rows == 1 ? Dims{kThreads, 1, 1} : Dims{kNarrowTileX, kThreads / kNarrowTileX, 1};
    const Dims narrow{ceil_div(cols, ntile.x * (rows == 1 ? kNarrowPixels : 1)),
                      ceil_div(rows, ntile.y * (rows == 1 ? 1 : kNarrowPixels)),
                      images * p.out_per_group};
    if (p.out_per_group < kChannelBlock &&
        (narrow.x * narrow.y * narrow.z >= kNarrowMinGroups || always))
        return {"convt_forward_narrow_", narrow, ntile};
    return {"convt_forward_",
            {ceil_div(cols, tile.x), ceil_div(rows, tile.y),
             images * ceil_div(p.out_per_group, kChannelBlock)},
            tile};
}

/// convt_backward_data_kxlanes runs the layer: kernel width a multiple of 8, at most kDxlMaxTaps
/// taps, and the dY offsets it forms inside one image (rows x stride_h + columns x stride_w)
/// in 32 bits.
inline bool dx_kx_lanes_fit(const ConvtParams& p) {
    const auto mag = [](int64_t v) { return v < 0 ? -v : v; };
    // A lane's pixels are up to 3 rows apart (the offset of a lower row from the first pixel's).
    const int64_t span = (int64_t(p.clip_h) + kDxlPixels * p.stride_y) * mag(p.dst_stride_h) +
                         (int64_t(p.clip_x) + p.clip_w) * mag(p.dst_stride_w);
    return p.kernel_w % kDxlLanes == 0 && int64_t(p.kernel_h) * p.kernel_w <= kDxlMaxTaps &&
           span <= INT32_MAX;
}

inline Launch backward_data(const ConvtParams& p) {
    check_index_range(p);
    if (p.out_per_group == 1 && p.in_per_group == 1)  // depthwise: kDxdRows rows a thread
        return {"convt_backward_data_depthwise_",
                {ceil_div(p.src_w, kThreads), ceil_div(p.src_h, kDxdRows),
                 int64_t(p.num_images) * p.groups},
                {kThreads, 1, 1}};
    // GEMM (64 source pixels x 64 input channels) for wide layers with enough tiles to fill the
    // GPU; measured on an H200: 128 tiles (hifigan_up1, N=8) gained 1.7x, 64 (dcgan_g2) lost.
    const Dims gemm{ceil_div(int64_t(p.src_h) * p.src_w, kGemmTile),
                    ceil_div(p.in_per_group, kGemmTile), int64_t(p.num_images) * p.groups};
    if (p.in_per_group >= kGemmMinOut && gemm.x * gemm.y * gemm.z >= kDxMinTiles)
        return {"convt_backward_data_gemm_", gemm, {kGemmThreads, 1, 1}};
    const int64_t taps = int64_t(p.kernel_h) * p.kernel_w;
    if (taps >= kDxSlices && taps * p.out_per_group >= kDxMinReduction && dx_kx_lanes_fit(p)) {
        const bool one_row = p.src_h == 1;
        const int64_t tile_w = kDxlTiles * kDxlColumns * (one_row ? kDxlPixels : 1);
        // Two taps a stride phase on 2-D images: the paired entry (convt_dxl_column_paired).
        const bool paired = !one_row && p.stride_y % p.dilation_y == 0 &&
                            p.kernel_h == 2 * (p.stride_y / p.dilation_y);
        return {paired ? "convt_backward_data_kxlanes2_" : "convt_backward_data_kxlanes_",
                {ceil_div(p.src_w, tile_w), ceil_div(p.src_h, one_row ? 1 : kDxlPixels),
                 int64_t(p.num_images) * p.groups * ceil_div(p.in_per_group, kDxlChannels)},
                {kDxlTiles * kDxlSlices * kSimd, 1, 1}};
    }
    if (taps >= kDxSlices && taps * p.out_per_group >= kDxMinReduction) {
        // A SIMD-group per slice; its lanes cover 8x4 pixels (32x1 for one-row images).
        const bool one_row = p.src_h == 1;
        const int64_t lanes_x = one_row ? kSimd : 8, lanes_y = one_row ? 1 : kSimd / 8;
        return {"convt_backward_data_ksplit_",
                {ceil_div(p.src_w, lanes_x * (one_row ? kDxPixels : 1)),
                 ceil_div(p.src_h, lanes_y * (one_row ? 1 : kDxPixels)),
                 int64_t(p.num_images) * p.groups * ceil_div(p.in_per_group, kDxChannels)},
                {kDxSlices * kSimd, 1, 1}};
    }
    const Dims tile = pixel_tile(p.src_h);
    return {"convt_backward_data_",
            {ceil_div(p.src_w, tile.x), ceil_div(p.src_h, tile.y),
             int64_t(p.num_images) * p.groups * ceil_div(p.in_per_group, kChannelBlock)},
            tile};
}

inline int64_t weight_count(const ConvtParams& p) {
    return int64_t(p.out_channels) * p.kernel_h * p.kernel_w * p.in_per_group;
}

/// The dW kernel for a layer: CONVT_GPU_DW=gemm, direct or taps forces one (tests reach every
/// kernel with small layers; benchmarks compare them); auto picks by channels and width.
enum class WeightsKernel { Gemm, Direct, Taps };

inline WeightsKernel weights_kernel(const ConvtParams& p) {
    const char* v = std::getenv("CONVT_GPU_DW");
    const std::string mode = v ? v : "auto";
    if (mode == "gemm") return WeightsKernel::Gemm;
    if (mode == "direct") return WeightsKernel::Direct;
    if (mode == "taps") return WeightsKernel::Taps;
    if (mode != "auto")
        throw std::invalid_argument(
            concat("CONVT_GPU_DW must be 'auto', 'gemm', 'direct' or 'taps', got '", mode, "'"));
    if (p.out_per_group >= kDwGemmMin && p.in_per_group >= kDwGemmMin) return WeightsKernel::Gemm;
    return p.src_w >= kDwwMinWidth ? WeightsKernel::Taps : WeightsKernel::Direct;
}

/// CONVT_GPU_DW_SPLITS=n forces n slices on every dW and dB kernel (tests); 0: by shape.
inline int64_t forced_splits() {
    const char* v = std::getenv("CONVT_GPU_DW_SPLITS");
    if (v == nullptr || *v == '\0') return 0;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (*end != '\0' || n < 1 || n > 4096)
        throw std::invalid_argument(
            concat("CONVT_GPU_DW_SPLITS must be an integer in [1, 4096], got '", v, "'"));
    return n;
}

/// Slices of K: fixed by the shape alone (never by timing or the device), so results are the
/// same on every run.
inline int64_t splits_for(int64_t units, int64_t target, int64_t k, int64_t min_slice) {
    const int64_t forced = forced_splits();
    if (forced) return forced;
    return std::clamp<int64_t>(
        std::min(ceil_div(target, std::max<int64_t>(units, 1)), k / min_slice), 1, kDwMaxSplits);
}

inline int64_t phase_positions(const ConvtParams& p) {
    return int64_t(p.num_images) * ceil_div(p.clip_h, p.stride_y) * ceil_div(p.clip_w, p.stride_x);
}

inline int64_t weight_splits(const ConvtParams& p) {
    const int64_t groups = ceil_div(p.out_per_group, kGemmTile) *
                           ceil_div(p.in_per_group, kGemmTile) * p.kernel_h * p.kernel_w * p.groups;
    return splits_for(groups, kDwTargetGroups, phase_positions(p), kDwMinSlice);
}

/// Input channels and taps a "taps" threadgroup owns.
struct TapsTile {
    int64_t in, taps;
};

inline TapsTile taps_tile(const ConvtParams& p) {
    return p.in_per_group == 1 ? TapsTile{1, kDwwTaps1} : TapsTile{kDwwIn, kDwwTaps};
}

inline int64_t direct_units(const ConvtParams& p) {
    return ceil_div(p.out_per_group, kDwdOut) * ceil_div(p.in_per_group, kDwdIn) * p.kernel_h *
           p.kernel_w * p.groups;
}

inline int64_t direct_splits(const ConvtParams& p) {
    return splits_for(direct_units(p), kDwdTargetSimds, phase_positions(p), kDwdMinSlice);
}

/// "Taps" units of a channel: 32 source columns of one row of one image.
inline int64_t taps_units(const ConvtParams& p) {
    return int64_t(p.num_images) * p.src_h * ceil_div(p.src_w, kSimd);
}

inline int64_t taps_groups(const ConvtParams& p) {
    const TapsTile t = taps_tile(p);
    return int64_t(p.out_channels) * ceil_div(p.in_per_group, t.in) *
           ceil_div(int64_t(p.kernel_h) * p.kernel_w, t.taps);
}

inline int64_t taps_splits(const ConvtParams& p) {
    return splits_for(taps_groups(p), kDwwTargetGroups, taps_units(p), kDwwMinUnits);
}

inline int64_t bias_splits(const ConvtParams& p) {
    return splits_for(p.out_channels, kDbTargetGroups, int64_t(p.num_images) * p.clip_h,
                      kDbMinRows);
}

inline Launch weights_gemm(const ConvtParams& p, int64_t splits) {
    return {"convt_backward_weights_gemm_",
            {ceil_div(p.out_per_group, kGemmTile) * ceil_div(p.in_per_group, kGemmTile),
             int64_t(p.kernel_h) * p.kernel_w * p.groups, splits},
            {kGemmThreads, 1, 1}};
}

inline Launch weights_direct(const ConvtParams& p, int64_t splits) {
    return {"convt_backward_weights_",
            {ceil_div(direct_units(p), kDwdSimds), 1, splits},
            {kDwdSimds * kSimd, 1, 1}};
}

inline Launch weights_taps(const ConvtParams& p, int64_t splits) {
    const TapsTile tile = taps_tile(p);
    return {tile.in == 1 ? "convt_backward_weights_taps1_" : "convt_backward_weights_taps8_",
            {int64_t(p.out_channels) * ceil_div(p.in_per_group, tile.in),
             ceil_div(int64_t(p.kernel_h) * p.kernel_w, tile.taps), splits},
            {kDwwSimds * kSimd, 1, 1}};
}

inline Launch bias_partial(const ConvtParams& p, int64_t splits) {
    return {"convt_backward_bias_partial_", {p.out_channels, 1, splits}, {kDbSimds * kSimd, 1, 1}};
}

/// Adds the slices of `count` weights (row 0) and of the biases (row 1).
inline Launch reduce_partials(int64_t count, int64_t biases) {
    return {"convt_reduce_partials",
            {ceil_div(std::max(count, biases), kGemmThreads), 2, 1},
            {kGemmThreads, 1, 1}};
}

/// The same sums written into PyTorch-convention views (GradientOutput::weight_view, bias_view):
/// a threadgroup per kFinishTile taps x kFinishTile input channels of an output channel.
constexpr int64_t kFinishTile = 16;
inline Launch reduce_partials_torch(const ConvtParams& p, bool weights) {
    const int64_t tiles = ceil_div(p.in_per_group, kFinishTile) *
                          ceil_div(int64_t(p.kernel_h) * p.kernel_w, kFinishTile);
    return {"convt_reduce_partials_torch_",
            {weights ? tiles : 1, p.out_channels, 1},
            {kFinishTile * kFinishTile, 1, 1}};
}

/// The gradient kernels' function constants (9: accumulate, 10: dW slices, 11: dB slices).
struct Constants {
    bool accumulate = false;
    int64_t splits = 1;
    int64_t bias_splits = 1;
};

/// Every function constant of a dispatch, indexed as in metal/convt_kernel.h (0-11).
inline std::array<int32_t, 12> function_constants(const ConvtParams& p, Constants c) {
    return {p.neuron,
            p.has_bias,
            p.accumulate_half,
            p.kernel_w,
            p.kernel_h,
            p.stride_x,
            p.stride_y,
            p.dilation_x,
            p.dilation_y,
            c.accumulate,
            static_cast<int32_t>(c.splits),
            static_cast<int32_t>(c.bias_splits)};
}

/// A kernel's type suffix ("f32", "f16"); GPUs run no float64 images.
inline const char* type_suffix(int32_t type, const char* backend) {
    if (type == CONVT_TYPE_F16) return "f16";
    if (type == CONVT_TYPE_F32) return "f32";
    throw TypeError(
        concat("the ", backend, " backend runs float32 and float16 images only, got float64"));
}

/// A gradient view's CONVT_TYPE_* code: GPU backends write float32 and float16.
inline int32_t gradient_type(const TensorView& v, const char* name, const char* backend) {
    if (v.type == DataType::Float32) return CONVT_TYPE_F32;
    if (v.type == DataType::Float16) return CONVT_TYPE_F16;
    throw TypeError(concat(name, " dtype must be float32 or float16 on the ", backend,
                           " backend, got ", to_string(v.type)));
}

/// Whether the view's elements fill its byte extent, so writing every element overwrites all of
/// it (a staged copy then needs no copy in).
inline bool fills_extent(const TensorView& v) {
    const char *first, *last;
    v.byte_extent(&first, &last);
    return last - first == v.numel() * static_cast<int64_t>(element_size(v.type));
}

/// dW and dB, the same sequence on every GPU backend: each kernel writes the partial sums of its
/// slices of K to scratch, and one pass adds them in slice order, straight into the destination
/// (dense OHWI float for MPS states, or PyTorch-layout views in their dtype). `call` binds memory
/// (`bind(view, written, &base, read)`, `bind_raw(data, bytes, read)`, `scratch(bytes)`) and
/// returns the backend's buffer handle; `run(launch, types, params, constants, {buffers})`
/// encodes one launch. `xs` and `ys` are X and dY, already bound.
template <typename Buffer, typename Call, typename Run>
void backward_weights(ConvtParams p, Buffer xs, Buffer ys, const GradientOutput& out, Call& call,
                      Run&& run, const char* backend) {
    const bool want_w = out.wants_weights(), want_b = out.wants_bias();
    if (!want_w && !want_b) return;
    const bool torch_views = out.weight_view || out.bias_view;
    if (torch_views && (out.accumulate || out.weights || out.bias))
        throw std::logic_error("gradient views are overwritten, never mixed with dense outputs");
    if (!torch_views && out.type != DataType::Float32)
        throw TypeError(concat("the ", backend, " backend writes float32 weight gradients"));
    const int64_t count = want_w ? weight_count(p) : 0;
    const int64_t biases = want_b ? p.out_channels : 0;
    const std::string y = type_suffix(p.dst_type, backend);
    const std::string xy = std::string(type_suffix(p.src_type, backend)) + "_" + y;
    const auto bytes = [](int64_t n) { return static_cast<size_t>(n) * sizeof(float); };
    p.has_bias = want_b;
    Launch weights{};
    Constants fc{out.accumulate, 0, want_b ? bias_splits(p) : 1};
    if (want_w) {
        switch (weights_kernel(p)) {
            case WeightsKernel::Gemm:
                weights = weights_gemm(p, fc.splits = weight_splits(p));
                break;
            case WeightsKernel::Direct:
                weights = weights_direct(p, fc.splits = direct_splits(p));
                break;
            case WeightsKernel::Taps:
                weights = weights_taps(p, fc.splits = taps_splits(p));
                break;
        }
    }
    Buffer partial =
        call.scratch(bytes(fc.splits * count + (want_b ? fc.bias_splits : 0) * biases));
    Buffer dw = partial, db = partial;
    // PyTorch-layout views: the finish reads dW's through the destination role of its
    // parameters, dB's through the source role (convt_reduce_partials_torch_impl).
    ConvtParams q = p;
    int32_t type = CONVT_TYPE_F32;
    if (torch_views) {
        const TensorView* w = out.weight_view;
        const TensorView* b = out.bias_view;
        if (w && b && w->type != b->type)
            throw TypeError(concat("grad_bias dtype must match grad_weight dtype (",
                                   to_string(w->type), "), got ", to_string(b->type)));
        type =
            w ? gradient_type(*w, "grad_weight", backend) : gradient_type(*b, "grad_bias", backend);
        q.dst_base = q.src_base = 0;
        if (w) {
            q.dst_type = type;
            q.dst_stride_n = w->stride_n, q.dst_stride_c = w->stride_c;
            q.dst_stride_h = w->stride_h, q.dst_stride_w = w->stride_w;
            dw = call.bind(*w, true, &q.dst_base, !fills_extent(*w));
        }
        if (b) {
            q.src_type = type;
            q.src_stride_c = b->stride_c;
            db = call.bind(*b, true, &q.src_base, !fills_extent(*b));
        }
    } else {
        if (out.weights) dw = call.bind_raw(out.weights, bytes(count), out.accumulate);
        if (out.bias) db = call.bind_raw(out.bias, bytes(biases), out.accumulate);
    }
    if (want_w) run(weights, xy, p, fc, {xs, ys, partial});
    if (want_b) run(bias_partial(p, fc.bias_splits), y, p, fc, {ys, partial});
    if (torch_views)
        run(reduce_partials_torch(p, want_w), type == CONVT_TYPE_F16 ? "f16" : "f32", q, fc,
            {partial, dw, db});
    else
        run(reduce_partials(count, biases), "", p, fc, {partial, dw, db});
}

}  // namespace convt::detail::gpu
