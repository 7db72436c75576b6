// Launch geometry of the GPU kernels in metal/*.metal, shared by the Metal and CUDA backends:
// which kernel runs a dispatch, its threadgroup shape and its grid. The numbers mirror the
// kernels' own #defines (metal/convt_kernel.h, convt_forward_gemm.metal,
// convt_backward_weights_gemm.metal).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "../../../metal/convt_params.h"

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
// whose per-group channel product reaches kDwMinProduct: measured on an H200 (bench_gpu, N=8),
// GEMM dW beat the direct kernel from 3 x 128 channels up (dcgan_out 0.88 -> 0.56 ms, fcn8s
// 15.5 -> 8.6 ms, fsrcnn 22 -> 14 ms) but lost 10x on depthwise (2.9 -> 27 ms).
constexpr int64_t kGemmTile = 64, kGemmThreads = 256, kGemmMinOut = 32, kDwMinProduct = 16;
// dW splits K into slices until about this many threadgroups run, each slice >= kDwMinSlice.
constexpr int64_t kDwTargetGroups = 512, kDwMinSlice = 256, kDwMaxSplits = 64;
constexpr int64_t kDxMinTiles = 128;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// 64 pixels a threadgroup: 8x8, or 64x1 for one-row images (1-D layers).
inline Dims pixel_tile(int64_t rows) {
    return rows == 1 ? Dims{kThreads, 1, 1} : Dims{kTile, kTile, 1};
}

inline Launch forward(const ConvtParams& p) {
    const int64_t sx = p.stride_x, sy = p.stride_y;
    const int64_t cols = ceil_div(p.clip_w, sx), rows = ceil_div(p.clip_h, sy);
    if (p.out_per_group == 1 && p.in_per_group == 1)  // depthwise: a thread per pixel
        return {"convt_forward_depthwise_",
                {ceil_div(p.clip_w, kThreads), p.clip_h, int64_t(p.num_images) * p.groups},
                {kThreads, 1, 1}};
    const int64_t images = int64_t(p.num_images) * p.groups * sx * sy;
    if (!p.accumulate_half && p.out_per_group >= kGemmMinOut)
        return {"convt_forward_gemm_",
                {ceil_div(rows * cols, kGemmTile), ceil_div(p.out_per_group, kGemmTile), images},
                {kGemmThreads, 1, 1}};
    const Dims tile = pixel_tile(rows);
    return {"convt_forward_",
            {ceil_div(cols, tile.x), ceil_div(rows, tile.y),
             images * ceil_div(p.out_per_group, kChannelBlock)},
            tile};
}

inline Launch backward_data(const ConvtParams& p) {
    // GEMM (64 source pixels x 64 input channels) for wide layers with enough tiles to fill the
    // GPU; measured on an H200: 128 tiles (hifigan_up1, N=8) gained 1.7x, 64 (dcgan_g2) lost.
    const Dims gemm{ceil_div(int64_t(p.src_h) * p.src_w, kGemmTile),
                    ceil_div(p.in_per_group, kGemmTile), int64_t(p.num_images) * p.groups};
    if (p.in_per_group >= kGemmMinOut && gemm.x * gemm.y * gemm.z >= kDxMinTiles)
        return {"convt_backward_data_gemm_", gemm, {kGemmThreads, 1, 1}};
    const Dims tile = pixel_tile(p.src_h);
    return {"convt_backward_data_",
            {ceil_div(p.src_w, tile.x), ceil_div(p.src_h, tile.y),
             int64_t(p.num_images) * p.groups * ceil_div(p.in_per_group, kChannelBlock)},
            tile};
}

inline int64_t weight_count(const ConvtParams& p) {
    return int64_t(p.out_channels) * p.kernel_h * p.kernel_w * p.in_per_group;
}

inline bool weights_by_gemm(const ConvtParams& p) {
    return int64_t(p.out_per_group) * p.in_per_group >= kDwMinProduct;
}

/// Fixed by the shape alone, so results are the same on every run.
inline int64_t weight_splits(const ConvtParams& p) {
    const int64_t groups = ceil_div(p.out_per_group, kGemmTile) *
                           ceil_div(p.in_per_group, kGemmTile) * p.kernel_h * p.kernel_w * p.groups;
    const int64_t k =
        int64_t(p.num_images) * ceil_div(p.clip_h, p.stride_y) * ceil_div(p.clip_w, p.stride_x);
    return std::clamp<int64_t>(std::min(ceil_div(kDwTargetGroups, groups), k / kDwMinSlice), 1,
                               kDwMaxSplits);
}

inline Launch weights_gemm(const ConvtParams& p, int64_t splits) {
    return {"convt_backward_weights_gemm_",
            {ceil_div(p.out_per_group, kGemmTile) * ceil_div(p.in_per_group, kGemmTile),
             int64_t(p.kernel_h) * p.kernel_w * p.groups, splits},
            {kGemmThreads, 1, 1}};
}

inline Launch bias_partial(const ConvtParams& p, int64_t splits) {
    return {"convt_backward_bias_partial_", {p.out_channels, 1, splits}, {kSimd, 1, 1}};
}

/// Sums `total` partial elements (weights, then biases) over the slices.
inline Launch reduce_partials(int64_t total) {
    return {"convt_reduce_partials", {ceil_div(total, kGemmThreads), 1, 1}, {kGemmThreads, 1, 1}};
}

inline Launch weights_direct(const ConvtParams& p) {
    return {"convt_backward_weights_", {weight_count(p), 1, 1}, {kSimd, 1, 1}};
}

inline Launch bias_direct(const ConvtParams& p) {
    return {"convt_backward_bias_", {p.out_channels, 1, 1}, {kSimd, 1, 1}};
}

}  // namespace convt::detail::gpu
