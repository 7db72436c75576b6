"""The CPU backend's kernel paths (cpp/src/cpu/). Which one runs depends on the channel counts
per group, the row length, the layout and the element type, so each case below is chosen to reach
particular paths (named in CASES), with channel counts that leave tails on every register tile
(6 and 16 for the GEMM micro-kernel) and pixel counts that leave
tails on the 16-pixel columns and the 8-element vectors. Every storage kind runs: NCHW, NHWC,
sliced views (gaps in C, H and W) and transposed views. The whole file runs again in a subprocess
with CONVT_CPU_ISA=portable, so the portable micro-kernels are checked on machines with AVX2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import reference as R
from _helpers import FP16_TOL, FP32_TOL, STORAGE_KINDS, assert_close, make_storage

# name: (cin, cout, groups, (H, W), k, stride, padding, output_padding, dilation), k an int (k x k)
# or (kh, kw), the rest ints or pairs; the paths are forward / dX / dW for NCHW float32 (NHWC and
# views take the packed GEMM for dW).
CASES = {
    # GEMM forward, dX and dW with tails on both tile axes.
    "gemm_tails": (23, 23, 1, (7, 9), 3, 2, 1, 1, 1),
    # GEMM forward (8 outputs); dX and dW by the row paths (3 inputs).
    "few_inputs": (3, 8, 1, (5, 21), 4, 2, 1, 0, 1),
    # Long rows at stride 1: dW slices of a few whole rows.
    "rows_s1": (7, 23, 1, (3, 40), 3, 1, 1, 0, 1),
    # Stride 2: dY rows packed per phase; forward phases of unequal size.
    "rows_s2": (9, 13, 1, (4, 37), 4, 2, 1, 1, 1),
    # Groups and dilation on every path.
    "groups_dilated": (16, 24, 2, (6, 33), 3, 1, 2, 0, 2),
    # Three outputs: half-empty register tiles on the GEMM forward; the few-output dW (X read in
    # place as A, B the dY at every pixel's taps), a tap row's 4 columns copied at once.
    "narrow_out": (23, 3, 1, (6, 20), 4, 2, 1, 0, 1),
    # One output channel, a large stride and kernel (FSRCNN-like): the narrow forward and dW.
    "one_out": (7, 1, 1, (5, 18), 9, 3, 4, 2, 1),
    # Stride 2 and dilation 2: every odd phase gets no tap (bias alone).
    "empty_phases": (9, 10, 1, (4, 18), 2, 2, 0, 1, 2),
    # Two groups of 8 channels and blocks enough for four units a thread (two threads): in NHWC a
    # forward unit runs a block's groups one after another, each group's footprint built anew.
    "group_units": (16, 16, 2, (24, 40), 4, 2, 1, 0, 1),
    # Stride 3 with every phase the same size (15 x 57 outputs): the forward stores the three
    # x-phases of a row together (the stride-2 cases above with equal phases take the two-phase
    # shuffle: gemm_tails, narrow_out, empty_phases, row_ranges_groups, deep_forward).
    "phases_s3": (7, 8, 1, (5, 19), 5, 3, 1, 0, 1),
    # dX with few output channels (tile-major weights) over dY's footprint, rows a whole number
    # of register columns (32 and 16 pixels): the indirect kernel reads every tap in place, at
    # stride 3 (the footprint split phase by phase) and at stride 2.
    "indirect_s3": (23, 2, 1, (3, 32), 9, 3, 4, 2, 1),
    "indirect_s2": (23, 5, 1, (4, 16), 4, 2, 1, 0, 1),
    # Depthwise (one channel in and out per group): the direct per-plane loops.
    "depthwise": (7, 7, 7, (5, 19), 4, 2, 1, 0, 1),
    "depthwise_s3_d2": (5, 5, 5, (6, 23), 3, 3, 2, 1, 2),
    # Dilation 3 at stride 1: the source rows one output row reads span 7 rows for 3 taps.
    "depthwise_d3": (6, 6, 6, (9, 20), 3, 1, 3, 0, 3),
    # Stride 2 to an odd output width (41): the two phase rows interleaved, with a tail.
    "depthwise_odd": (6, 6, 6, (4, 21), 3, 2, 1, 0, 1),
    # Rows of 75 (dX) and phase rows of 75 (the forward): the fused taps' four-vector passes
    # (32 columns), then one vector, then 3 columns; 9 rows (dY's rows prefetched 4 on).
    "depthwise_wide": (6, 6, 6, (9, 75), 4, 2, 1, 0, 1),
    # Depthwise with 8 or more channels: in NHWC storage (fp32 or fp16), each pixel's taps as
    # vector loops over the channels (23: a tail of 7 after the 8-wide vectors), at stride 2 with
    # an output_padding, and at stride 3 with dilation 2.
    "depthwise_channels": (23, 23, 23, (5, 19), 4, 2, 1, 1, 1),
    "depthwise_channels_s3_d2": (16, 16, 16, (6, 11), 3, 3, 2, 2, 2),
    # One or two outputs from eight or more inputs: the few-output dW, a tap row's 9 columns
    # across two 16-column panels (gathered one by one) or in one (copied).
    "two_out_wide_in": (23, 2, 1, (5, 18), 9, 3, 4, 2, 1),
    "one_out_groups": (24, 2, 2, (4, 21), 5, 2, 2, 1, 1),
    # Rows wider than a few-output dW slice (one row a slice), dilated: B gathered tap by tap.
    "narrow_wide_dilated": (9, 2, 1, (6, 400), 5, 2, 1, 0, 4),
    # Image parts of 9 rows (36 rows in 4 cuts) in slices of 6 rows of 40 pixels, then 3.
    "narrow_out_slices": (23, 3, 1, (36, 40), 4, 2, 1, 0, 1),
    # A stride larger than the image's pixel count per tile, 17 taps wide.
    "big_stride": (10, 9, 1, (3, 5), 17, 8, 4, 0, 1),
    # Stride 1, rows of 16 pixels or more, 4 taps or more: forward and dX read a block's
    # footprint, copied once (23 inputs: the dX GEMM).
    "footprint_s1": (23, 13, 1, (5, 37), 3, 1, 1, 0, 1),
    # Enough source rows (N x H >= 32) that dW sums row ranges into partials: 2 ranges, and
    # groups with stride 2; then the most ranges (8) with an output-channel tail.
    "row_ranges": (23, 13, 1, (20, 11), 3, 1, 1, 0, 1),
    "row_ranges_groups": (16, 24, 2, (19, 9), 3, 2, 1, 1, 1),
    "row_ranges_many": (9, 7, 1, (70, 5), 3, 1, 1, 0, 1),
    # dW's last register tile of og % 6 rows by the short-tile kernel (AVX2): 32 outputs (2 rows)
    # over 40 inputs, three 16-column panels in one call (big_stride: 3 rows; tile_major_batches:
    # 4; gemm_tails: 5; row_ranges: 1 row over two panels).
    "short_tile_rows": (40, 32, 1, (6, 11), 3, 2, 1, 0, 1),
    # Sixteen outputs or fewer: dX weights tile-major, packed B (rows under 16 pixels: no
    # footprint), a batch of taps one segment; 49 taps of 16 channels over 128 pixels fill
    # three batches (24 taps each).
    "tile_major_batches": (23, 16, 1, (40, 13), 7, 1, 3, 0, 1),
    # Reductions deeper than one packed slice (kKc = 512 channels): the forward over 530 input
    # channels (a full slice and an 18-deep tail); 530 output channels for dX and dW.
    "deep_forward": (530, 7, 1, (3, 5), 3, 2, 1, 1, 1),
    "deep_dx": (7, 530, 1, (3, 5), 3, 2, 1, 1, 1),
    # 3x3 at stride 1 with 16 or more channels each way: forward and dX by Winograd F(4x4, 3x3),
    # with a ragged last tile row and column (7 x 9 outputs: 3 and 1 past whole tiles; 6 x 11:
    # 2 and 3), 17 outputs (a 5-row register tile) and 23 inputs; dilation 2 with groups (tiles
    # split by residue mod 2, 11 x 13 outputs), and alone at 10 x 10 (five outputs a residue:
    # one tile and one output); long rows (the contiguous-row runs, 72 columns) at padding 0.
    # Channels-contiguous float32 or fp16 (NHWC, nhwc-gaps) of at most 16 channels one way (32
    # with dilation) go by pixel rows instead where their columns fill the panels: winograd_ragged's
    # forward, winograd_dilated_ragged, and the dX of winograd_dilated_groups, winograd_wide and
    # winograd_1d_k3_dilated_ragged.
    "winograd": (23, 17, 1, (7, 9), 3, 1, 1, 0, 1),
    "winograd_ragged": (19, 16, 1, (6, 11), 3, 1, 1, 0, 1),
    "winograd_dilated_groups": (32, 36, 2, (9, 13), 3, 1, 1, 0, 2),
    "winograd_dilated_ragged": (16, 24, 1, (10, 10), 3, 1, 2, 0, 2),
    "winograd_wide": (16, 19, 1, (5, 70), 3, 1, 0, 0, 1),
    # Fewer than 16 channels either way: the transforms from 2 channels, on 256 tiles or more
    # (2 images of 48 x 50 outputs: 312), 5 -> 7 channels; groups of 4 -> 6 at dilation 2
    # (44 x 48: 264 tiles); 1-D, 3 -> 6 channels over 1100 outputs (550 runs of 4).
    "winograd_narrow": (5, 7, 1, (48, 50), 3, 1, 1, 0, 1),
    "winograd_narrow_dilated_groups": (8, 12, 2, (44, 48), 3, 1, 2, 0, 2),
    "winograd_1d_narrow": (3, 6, 1, (1, 1100), (1, 3), 1, (0, 1), 0, 1),
    # 64 or more channels each way: dW by the transforms too, with 67 inputs (a 3-channel tail
    # on the 16-wide panels) and 64 outputs (a 4-row register tile); 33 x 32 outputs make 544
    # tiles, summed in two ranges. Then groups and dilation 2 (65 outputs a group).
    "winograd_dw": (67, 64, 1, (33, 32), 3, 1, 1, 0, 1),
    "winograd_dw_groups_dilated": (128, 130, 2, (6, 7), 3, 1, 2, 0, 2),
    # A 2s x 2s kernel at stride s: every phase 2x2 taps, F(2x2, 2x2). dX from 64 channels each
    # way (dY's s x s phase planes, one source each, a tap class each): at stride 2 with an
    # output_padding, and at stride 3 (nine planes); the forward from 256 x 256 channels, with
    # 257 inputs and 256 outputs (a 4-row register tile).
    "phases_winograd": (67, 64, 1, (7, 9), 4, 2, 1, 1, 1),
    "phases_winograd_s3": (64, 70, 1, (5, 4), 6, 3, 1, 2, 1),
    "phases_winograd_forward": (257, 256, 1, (3, 5), 4, 2, 1, 0, 1),
    # A (2s - 1)-tap kernel at stride s: dX by F(2x2, 2x2) as if it were 2s taps (the missing
    # ones zero), each point over the phases not zero by that padding (3 of 4 classes at the
    # points of a missing row or column, 1 of 4 at both): 3x3 at stride 2 with 67 outputs and
    # an output_padding, then 5x5 at stride 3 in two groups of 64 -> 66 channels. In
    # channels-contiguous float storages (NHWC, nhwc-gaps) these two go by pixel rows (up to 128
    # channels one way); 136 -> 144 channels keep the phases there.
    "phases_winograd_odd": (64, 67, 1, (5, 7), 3, 2, 1, 1, 1),
    "phases_winograd_odd_s3_groups": (128, 132, 2, (4, 5), 5, 3, 1, 2, 1),
    "phases_winograd_odd_wide": (136, 144, 1, (4, 5), 3, 2, 1, 1, 1),
    # A 2x2 kernel at stride 1 (one class of 2x2 taps), dilated: dX by F(2x2, 2x2) with tiles
    # split by residue.
    "phases_winograd_k2_dilated": (64, 64, 1, (6, 7), 2, 1, 0, 0, 2),
    # A kernel the size of the stride (unet-like): every phase one tap over the same source
    # pixels, the phases stacked into one GEMM of taps x outputs rows (68: a 2-row last tile),
    # stored woven (NCHW) or scattered phase by phase (NHWC below 16 MB, views); at padding 2
    # every phase reads one pixel on (7 x 37 sources, 20 x 9 at padding 2: blocks cross rows).
    # Then 3 x 2 taps at stride (3, 2) in two groups of 8 -> 7 (42 rows: whole tiles).
    "stacked": (23, 17, 1, (7, 37), 2, 2, 0, 0, 1),
    "stacked_padded": (9, 10, 1, (20, 9), 2, 2, 2, 0, 1),
    "stacked_groups": (16, 14, 2, (5, 19), (3, 2), (3, 2), 0, 0, 1),
    # Few weights and a kernel past the stride: forward and dX blocks of 512 pixels (9 of them,
    # the last 134: not whole register columns), as are group_units' (4 of them a group).
    "wide_blocks": (9, 5, 1, (47, 45), 4, 2, 1, 0, 1),
    # Channels-contiguous float dX (NHWC storages) by pixel rows: 23 inputs a group (a whole
    # panel and 7 columns of the next, copied out of a buffer), 10 outputs, two rows a task on
    # two threads (the next row's dY prefetched), each row's end pixels, whose taps reach past
    # dY, in tiles of their own.
    "pixel_rows": (46, 20, 2, (23, 29), 4, 2, 1, 0, 1),
    # ... in one group (23 inputs, 7 outputs): a kernel row's taps one segment where dY's pixels
    # follow one another (NHWC; nhwc-gaps keeps a segment a tap).
    "pixel_rows_merged": (23, 7, 1, (11, 19), 4, 2, 1, 0, 1),
    # The forward by pixel rows (channels-contiguous float storages): 28 outputs a group, a
    # whole panel and 12 columns of the next (filled three quarters or more), 9 inputs a tap.
    "pixel_rows_forward": (18, 56, 2, (9, 17), 3, 2, 1, 1, 1),
    # ... and at stride 2, dilation 2, where the odd phases get no tap (bias alone).
    "pixel_rows_empty_phases": (9, 12, 1, (4, 18), 2, 2, 0, 1, 2),
    # One kernel row (1-D layers, as ConvTranspose1d runs them): one-row tiles, F(2, r) (F(4, 3)
    # for 3 taps) along the row. The forward of a 2s kernel at stride 8 (hifigan-like, 512 x 257
    # channels: a 5-row register tile; 13 inputs, an output_padding); forward and dX of 3 taps
    # at stride 1, dilation 2, in two groups of 23 -> 17 channels (F(4, 3): 21 and 20 outputs a
    # residue, one past whole tiles and none); then 23 outputs (three past) and, at dilation 2,
    # 22 (11 a residue: three past).
    "winograd_1d_phases": (512, 257, 1, (1, 13), (1, 16), (1, 8), (0, 4), (0, 3), 1),
    "winograd_1d_k3_dilated_groups": (46, 34, 2, (1, 41), (1, 3), 1, (0, 2), 0, (1, 2)),
    "winograd_1d_k3_ragged": (24, 17, 1, (1, 23), (1, 3), 1, (0, 1), 0, 1),
    "winograd_1d_k3_dilated_ragged": (16, 20, 1, (1, 22), (1, 3), 1, (0, 2), 0, (1, 2)),
}


def _kernel(k: int | tuple[int, int]) -> tuple[int, int]:
    """A CASES kernel size as (kh, kw)."""
    return k if isinstance(k, tuple) else (k, k)


def _case_tensors(
    rng: np.random.Generator, case: str, images: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int, int]]:
    """x, torch-layout weights and dY of a CASES entry, and its (stride, padding,
    output_padding, groups, dilation)."""
    cin, cout, groups, (h, w), k, s, p, op, d = CASES[case]
    x = rng.standard_normal((images, cin, h, w)).astype(np.float32)
    wt = rng.standard_normal((cin, cout // groups, *_kernel(k))).astype(np.float32)
    dy = rng.standard_normal(
        R.conv_transpose_torch_ref(x, wt, None, s, p, op, groups, d).shape
    ).astype(np.float32)
    return x, wt, dy, (s, p, op, groups, d)


def _cpu() -> Any:
    import convt

    return next(d for d in convt.devices() if d.kind == "cpu")


# Channels-contiguous storage with gaps between pixels: not among the random sweeps' kinds.
PATH_STORAGE = (*STORAGE_KINDS, "nhwc-gaps")


@pytest.mark.parametrize("storage", PATH_STORAGE)
@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_path_forward_and_gradients(rng: np.random.Generator, case: str, storage: str) -> None:
    import convt

    cin, cout, groups, (h, w), k, s, p, op, d = CASES[case]
    x = rng.standard_normal((2, cin, h, w)).astype(np.float32)
    wt = rng.standard_normal((cin, cout // groups, *_kernel(k))).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    ref = R.conv_transpose_torch_ref(x, wt, b, s, p, op, groups, d)
    dy = rng.standard_normal(ref.shape).astype(np.float32)
    gx, gw, gb = R.conv_transpose_torch_backward(dy, x, wt, s, p, op, groups, d)

    xs, layout, _, _ = make_storage(x, storage, np.float32)
    out, _, out_base, inside = make_storage(np.full(ref.shape, np.nan), storage, np.float32)
    convt.conv_transpose2d(xs, wt, b, s, p, op, groups, d, out=out, layout=layout, device=_cpu())
    got = out if layout == "NCHW" else np.moveaxis(out, -1, 1)
    assert_close(got, ref, FP32_TOL, f"{case} {storage} forward")
    assert np.isnan(out_base[~inside]).all(), "wrote outside the output view"

    dys, _, _, _ = make_storage(dy, storage, np.float32)
    dx, dw, db = convt.conv_transpose2d_backward(
        dys, xs, wt, s, p, op, groups, d, layout=layout, device=_cpu()
    )
    dx = dx if layout == "NCHW" else np.moveaxis(dx, -1, 1)
    assert_close(dx, gx, FP32_TOL, f"{case} {storage} dX")
    assert_close(dw, gw, FP32_TOL, f"{case} {storage} dW")
    assert_close(db, gb, FP32_TOL, f"{case} {storage} dB")


# fp16 cases: the GEMM (its forward's phases stacked too), the few-output forward and dW, the
# scatter form (one output), the depthwise plane loops (7 channels) and channel loops (8 or more,
# NHWC), whose rows are converted a chunk at a time, strided rows gathered as bits first;
# Winograd's forward and dX (patch rows converted before staging, output rows converted as
# stored): 3x3 with ragged tiles, dilated in groups, a 2s kernel's phases (dX, and the forward
# of 257 x 256 channels), an odd kernel's dX, and one-row tiles; pixel rows (channels-contiguous
# storages: the rows an output row reads converted, the output row converted as stored).
FLOAT16_CASES = (
    "gemm_tails",
    "stacked",
    "stacked_groups",
    "wide_blocks",
    "rows_s2",
    "narrow_out",
    "one_out",
    "depthwise",
    "depthwise_channels",
    "depthwise_channels_s3_d2",
    "winograd",
    "winograd_ragged",
    "winograd_dilated_groups",
    "winograd_dilated_ragged",
    "winograd_narrow",
    "phases_winograd",
    "phases_winograd_forward",
    "phases_winograd_odd",
    "phases_winograd_odd_wide",
    "winograd_1d_k3_dilated_groups",
    "pixel_rows",
    "pixel_rows_merged",
    "pixel_rows_forward",
    "pixel_rows_empty_phases",
)


@pytest.mark.parametrize("storage", PATH_STORAGE)
@pytest.mark.parametrize("case", FLOAT16_CASES)
def test_cpu_path_float16(rng: np.random.Generator, case: str, storage: str) -> None:
    """fp16 images and weights in every storage kind: converted tile by tile (F16C where the
    kernels use AVX2), float accumulation."""
    import convt

    cin, cout, groups, (h, w), k, s, p, op, d = CASES[case]
    x = rng.standard_normal((2, cin, h, w)).astype(np.float16)
    wt = rng.standard_normal((cin, cout // groups, *_kernel(k))).astype(np.float16)
    ref = R.conv_transpose_torch_ref(x, wt, None, s, p, op, groups, d)
    xs, layout, _, _ = make_storage(x, storage, np.float16)
    out, _, out_base, inside = make_storage(np.full(ref.shape, np.nan), storage, np.float16)
    convt.conv_transpose2d(xs, wt, None, s, p, op, groups, d, out=out, layout=layout, device=_cpu())
    back = (lambda a: a) if layout == "NCHW" else (lambda a: np.moveaxis(a, -1, 1))
    assert_close(back(out), ref, FP16_TOL, f"{case} {storage} fp16 forward")
    assert np.isnan(out_base[~inside]).all(), "wrote outside the output view"
    dy = rng.standard_normal(ref.shape).astype(np.float16)
    gx, gw, gb = R.conv_transpose_torch_backward(dy, x, wt, s, p, op, groups, d)
    dys, _, _, _ = make_storage(dy, storage, np.float16)
    dx, dw, db = convt.conv_transpose2d_backward(
        dys, xs, wt, s, p, op, groups, d, layout=layout, device=_cpu()
    )
    assert_close(back(dx), gx, FP16_TOL, f"{case} {storage} fp16 dX")
    assert_close(dw, gw, FP16_TOL, f"{case} {storage} fp16 dW")
    assert_close(db, gb, FP16_TOL, f"{case} {storage} fp16 dB")


# Forwards of 16 MB or more written with streaming stores: (input shape, weight shape, groups,
# layout).
STREAMED_FORWARDS = {
    # Depthwise, rows of an odd width: stores start unaligned and end in a tail.
    "depthwise": ((1, 2, 520, 1023), (2, 1, 2, 2), 2, "NCHW"),
    # Depthwise 4x4 at stride 2: rows of 2202 elements, every other one 16-byte aligned (those
    # woven straight into the output), and a tail.
    "depthwise-k4": ((1, 4, 600, 1100), (4, 1, 4, 4), 4, "NCHW"),
    # The GEMM forward's woven rows, equal stride phases (7 output channels: neither depthwise
    # nor the scatter form), rows of 2 x 511 elements: every other one starts 16-byte aligned
    # (woven straight into the output at stride 2), blocks start mid-row, tails.
    "gemm": ((1, 3, 300, 511), (3, 7, 2, 2), 1, "NCHW"),
    # NHWC: the two x-phases' pixels woven (8 output channels: whole pixels, one after another),
    # 8 pixels at a time where a row goes on, else one.
    "gemm-nhwc": ((1, 3, 300, 511), (3, 8, 2, 2), 1, "NHWC"),
    # Sources of 16 MB or more (the phases stacked): units of consecutive blocks, the next one's
    # source fetched ahead, the last unit short; in NHWC, two groups.
    "gemm-deep-source": ((1, 8, 520, 1023), (8, 5, 2, 2), 1, "NCHW"),
    "gemm-deep-source-nhwc": ((1, 16, 260, 1023), (16, 5, 2, 2), 2, "NHWC"),
}


@pytest.mark.parametrize("shift", [0, 1], ids=["out", "out+4B"])
@pytest.mark.parametrize("kind", sorted(STREAMED_FORWARDS))
def test_cpu_streamed_output(rng: np.random.Generator, kind: str, shift: int) -> None:
    """An output of 16 MB or more is streamed to memory, unaligned starts and tails included
    (`shift`: the output one float past an aligned start)."""
    import convt

    x_shape, w_shape, groups, layout = STREAMED_FORWARDS[kind]
    x = rng.standard_normal(x_shape).astype(np.float32)
    wt = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[1] * groups).astype(np.float32)
    ref = R.conv_transpose_torch_ref(x, wt, b, 2, 0, 0, groups, 1)
    assert ref.nbytes // 2 >= 16 << 20  # float32 output of at least 16 MB
    assert "deep-source" not in kind or x.nbytes >= 16 << 20  # float32 source of 16 MB or more

    def put(a: np.ndarray) -> np.ndarray:
        return a if layout == "NCHW" else a.transpose(0, 2, 3, 1)

    out = np.full(ref.size + 1, np.nan, dtype=np.float32)[shift : shift + ref.size]
    out = out.reshape(put(ref).shape)
    xs = np.ascontiguousarray(put(x))
    convt.conv_transpose2d(xs, wt, b, 2, 0, 0, groups, 1, out=out, layout=layout, device=_cpu())
    assert_close(out, put(ref), FP32_TOL, f"streamed {kind} forward")


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_cpu_gemm_streamed_grad_input(rng: np.random.Generator, layout: str, groups: int) -> None:
    """A GEMM dX of 16 MB or more is streamed to memory: NCHW rows of 1021 elements (unaligned
    starts, tails); NHWC blocks of whole pixels, 8 at a time through a buffer, then pixels one
    by one (531941 pixels: the last block ends in 5). dY of 16 MB or more runs in units of
    consecutive blocks (and groups), the next one's dY fetched ahead; the last unit is short."""
    import convt

    rows = 521 if groups == 1 else 261
    x = rng.standard_normal((1, 8 * groups, rows, 1021)).astype(np.float32)
    wt = rng.standard_normal((8 * groups, 3, 2, 2)).astype(np.float32)
    g = rng.standard_normal((1, 3 * groups, 2 * rows, 2042)).astype(np.float32)
    ref = R.conv_transpose_torch_backward(g, x, wt, stride=2, groups=groups)[0]
    assert ref.nbytes // 2 >= 16 << 20  # float32 dX of at least 16 MB
    assert g.nbytes >= 16 << 20  # float32 dY of at least 16 MB

    def put(a: np.ndarray) -> np.ndarray:
        return a if layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))

    got = convt.conv_transpose2d_backward(
        put(g), put(x), wt, stride=2, groups=groups, layout=layout, device=_cpu()
    )[0]
    got = got if layout == "NCHW" else np.moveaxis(got, -1, 1)
    assert_close(got, ref, FP32_TOL, f"streamed GEMM dX, {layout}")


@pytest.mark.parametrize("shift", [0, 1, 4], ids=["aligned", "out+4B", "out+16B"])
@pytest.mark.parametrize("ig", [20, 23])
def test_cpu_gemm_large_grad_input_in_place(rng: np.random.Generator, ig: int, shift: int) -> None:
    """An NCHW GEMM dX of 4 MB or more (below the streamed 16 MB) written in place from the
    register tiles: with rows that start mid-line (`shift` floats past a 64-byte line) the tiles
    run outer, each row written front to back; aligned, the panels run outer. 20 input
    channels end in a tile of 2 rows over runs of 3 panels (32 panels a block: the last run
    short), 23 in one of 5 rows."""
    import convt

    n = 13
    x = rng.standard_normal((n, ig, 64, 64)).astype(np.float32)
    wt = rng.standard_normal((ig, 3, 4, 4)).astype(np.float32)
    g = rng.standard_normal((n, 3, 128, 128)).astype(np.float32)
    ref = R.conv_transpose_torch_backward(g, x, wt, stride=2, padding=1)[0]
    assert 4 << 20 <= ref.nbytes // 2 < 16 << 20  # float32 dX of 4 MB or more, not streamed
    buf = np.full(ref.size + 32, np.nan, dtype=np.float32)
    first = (-buf.ctypes.data // 4) % 16 + shift  # `shift` floats past a line
    got = buf[first : first + ref.size].reshape(ref.shape)
    convt.conv_transpose2d_backward(
        g,
        x,
        wt,
        stride=2,
        padding=1,
        output_mask=(True, False, False),
        out=(got, None, None),
        device=_cpu(),
    )
    assert_close(got, ref, FP32_TOL, f"in-place GEMM dX, {ig} channels, shift {shift}")


@pytest.mark.parametrize("k", [16, 11], ids=["k16", "k11"])
@pytest.mark.parametrize("cin, groups", [(24, 2), (23, 1)])
def test_cpu_1d_weight_gradient_windows(
    rng: np.random.Generator, cin: int, groups: int, k: int
) -> None:
    """A 1-D layer's dW goes to PyTorch's (Cin, Cout/groups, k) by the 8 x 8 transposes, as a
    2-D layer's: its unit height's stride is numpy's 0. 12 input channels a group (two groups)
    or 23 (one), each ending in a short block of 8; 16 and 11 taps (two whole blocks of 8, or
    one and 3 more); into a NaN-poisoned `out=`."""
    import convt

    cout, stride, padding = 10, 8, 4
    x = rng.standard_normal((3, cin, 9)).astype(np.float32)
    wt = rng.standard_normal((cin, cout // groups, k)).astype(np.float32)
    kw = dict(stride=stride, padding=padding, groups=groups)
    g = rng.standard_normal(convt.conv_transpose1d(x, wt, **kw, device=_cpu()).shape)
    g = g.astype(np.float32)
    ref = R.conv_transpose1d_torch_backward(g, x, wt, **kw)[1]
    got = np.full(wt.shape, np.nan, dtype=np.float32)
    convt.conv_transpose1d_backward(
        g, x, wt, **kw, output_mask=(False, True, False), out=(None, got, None), device=_cpu()
    )
    assert_close(got, ref, FP32_TOL, f"1-D dW, {cin} input channels, {k} taps")


def test_cpu_depthwise_odd_after_even_width(rng: np.random.Generator) -> None:
    """A thread's cached dY phase rows, reused from a call with an even row (42 columns) by one
    with an odd row (41), the same phase length: the odd row's last odd entry reads as zero."""
    import convt

    before = convt.get_num_threads()
    try:
        convt.set_num_threads(1)
        for op in (1, 0, 1, 0):
            x = rng.standard_normal((2, 5, 3, 21)).astype(np.float32)
            wt = rng.standard_normal((5, 1, 3, 3)).astype(np.float32)
            ref = R.conv_transpose_torch_ref(x, wt, None, 2, 1, op, 5, 1)
            dy = rng.standard_normal(ref.shape).astype(np.float32)
            gx, gw, _ = R.conv_transpose_torch_backward(dy, x, wt, 2, 1, op, 5, 1)
            dx, dw, _ = convt.conv_transpose2d_backward(dy, x, wt, 2, 1, op, 5, 1, device=_cpu())
            assert_close(dx, gx, FP32_TOL, f"output_padding {op} dX")
            assert_close(dw, gw, FP32_TOL, f"output_padding {op} dW")
    finally:
        convt.set_num_threads(before)


@pytest.mark.parametrize("storage", STORAGE_KINDS)
@pytest.mark.parametrize("case", ["depthwise", "depthwise_s3_d2", "depthwise_d3", "depthwise_odd"])
def test_cpu_depthwise_fused_backward_bitwise(
    rng: np.random.Generator, case: str, storage: str
) -> None:
    """dX and dW asked together run in one pass over dY (depthwise): the same bits as asked
    apart, which run the two passes."""
    import convt

    x, wt, dy, (s, p, op, groups, d) = _case_tensors(rng, case)
    xs, layout, _, _ = make_storage(x, storage, np.float32)
    dys, _, _, _ = make_storage(dy, storage, np.float32)

    def grads(mask: tuple[bool, bool, bool]) -> tuple[Any, Any, Any]:
        return convt.conv_transpose2d_backward(
            dys, xs, wt, s, p, op, groups, d, output_mask=mask, layout=layout, device=_cpu()
        )

    together = grads((True, True, True))
    dx_alone = grads((True, False, False))[0]
    dw_alone, db_alone = grads((False, True, True))[1:]
    np.testing.assert_array_equal(together[0], dx_alone)
    np.testing.assert_array_equal(together[1], dw_alone)
    np.testing.assert_array_equal(together[2], db_alone)
    gx, gw, _ = R.conv_transpose_torch_backward(dy, x, wt, s, p, op, groups, d)
    got_dx = together[0] if layout == "NCHW" else np.moveaxis(together[0], -1, 1)
    assert_close(got_dx, gx, FP32_TOL, f"{case} {storage} fused dX")
    assert_close(together[1], gw, FP32_TOL, f"{case} {storage} fused dW")


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", ["depthwise_channels", "gemm_tails", "winograd", "channels_37"])
def test_cpu_nhwc_threads_and_bias_bitwise(
    rng: np.random.Generator, case: str, dtype: type
) -> None:
    """NHWC float32 and fp16 (channels contiguous: the depthwise channel loops, the GEMM's
    transposed gathers and stores, dB a row of pixels at a time, fp16 rows converted first): 1
    and 2 threads give identical bits, and dB equals the NCHW dB bit for bit (the same summation
    order, channel by channel)."""
    import convt

    if case == "channels_37":  # 37 channels: dB's 32-channel vectors, then a 5-channel tail
        x = rng.standard_normal((3, 23, 7, 13)).astype(np.float32)
        wt = rng.standard_normal((23, 37, 3, 3)).astype(np.float32)
        geometry = (2, 1, 0, 1, 1)
        dy = rng.standard_normal(R.conv_transpose_torch_ref(x, wt, None, *geometry).shape).astype(
            np.float32
        )
    else:
        x, wt, dy, geometry = _case_tensors(rng, case)
    x, wt, dy = (a.astype(dtype) for a in (x, wt, dy))
    x_l, dy_l = (np.ascontiguousarray(np.moveaxis(a, 1, -1)) for a in (x, dy))
    before = convt.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            convt.set_num_threads(threads)
            y = convt.conv_transpose2d(x_l, wt, None, *geometry, layout="NHWC", device=_cpu())
            grads = convt.conv_transpose2d_backward(dy_l, x_l, wt, *geometry, layout="NHWC")
            runs.append([y, *grads])
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a, b, case)
        db_nchw = convt.conv_transpose2d_backward(dy, x, wt, *geometry)[2]
        np.testing.assert_array_equal(runs[0][3], db_nchw, f"{case}: NHWC dB against NCHW dB")
    finally:
        convt.set_num_threads(before)


def test_cpu_path_threads_bitwise(rng: np.random.Generator) -> None:
    """Every path sums in a fixed order: 1 and 2 threads give identical bits."""
    import convt

    before = convt.get_num_threads()
    try:
        for case in (
            "gemm_tails",
            "rows_s1",
            "rows_s2",
            "groups_dilated",
            "depthwise",
            "row_ranges_groups",
            "row_ranges_many",
            "winograd",
            "winograd_dw",
        ):
            x, wt, dy, (s, p, op, groups, d) = _case_tensors(rng, case)
            runs = []
            for threads in (1, 2):
                convt.set_num_threads(threads)
                y = convt.conv_transpose2d(x, wt, None, s, p, op, groups, d, device=_cpu())
                grads = convt.conv_transpose2d_backward(dy, x, wt, s, p, op, groups, d)
                runs.append([y, *[g for g in grads if g is not None]])
            for a, b in zip(*runs):
                assert np.array_equal(a, b), case
    finally:
        convt.set_num_threads(before)


@pytest.mark.skipif(
    os.environ.get("CONVT_CPU_ISA") == "portable", reason="the script runs the portable kernel too"
)
@pytest.mark.parametrize("target", ["native", "arm64"])
def test_micro_kernel_standalone(target: str) -> None:
    """tools/check_micro_kernel.sh: the GEMM micro-kernel against float64 sums, built alone:
    natively (AVX2 or portable, then portable) and for arm64 under qemu (the NEON kernel, then
    portable), which nothing else here can run."""
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler")
    script = Path(__file__).resolve().parents[1] / "tools" / "check_micro_kernel.sh"
    # Its own programs (bash, compilers, the check) must not inherit a sanitizer runtime that
    # tools/sanitize.sh preloads into this interpreter.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    run = subprocess.run(
        [str(script), target], capture_output=True, text=True, timeout=300, env=env
    )
    if run.returncode == 77:
        pytest.skip(run.stderr.strip())
    assert run.returncode == 0, run.stdout + run.stderr
    assert "300 of 300 cases agree" in run.stdout


@pytest.mark.skipif(
    os.environ.get("CONVT_CPU_ISA") == "portable", reason="already the portable run"
)
def test_portable_kernels_in_subprocess() -> None:
    import convt

    if convt.cpu_kernel_isa() == "portable":
        pytest.skip("this CPU runs the portable kernels already")
    env = dict(os.environ, CONVT_CPU_ISA="portable")
    check = "import convt, sys; sys.exit(convt.cpu_kernel_isa() != 'portable')"
    assert subprocess.run([sys.executable, "-c", check], env=env).returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout


def test_winograd_off_in_subprocess() -> None:
    """CONVT_CPU_WINOGRAD=off sends the Winograd layers (forward, dX and dW) to the exact GEMM
    paths: right results, and other bits than the transforms give."""
    script = f"""
import sys, numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
import convt, reference as R
from _helpers import FP32_TOL, assert_close
rng = np.random.default_rng(5)
for k, s, cin, cout in ((3, 1, 64, 64), (4, 2, 256, 256)):
    x = rng.standard_normal((2, cin, 5, 6)).astype(np.float32)
    wt = rng.standard_normal((cin, cout, k, k)).astype(np.float32)
    y = convt.conv_transpose2d(x, wt, None, s, 1)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, _ = convt.conv_transpose2d_backward(dy, x, wt, s, 1)
    rgx, rgw, _ = R.conv_transpose_torch_backward(dy, x, wt, s, 1, 0, 1, 1)
    assert_close(y, R.conv_transpose_torch_ref(x, wt, None, s, 1, 0, 1, 1), FP32_TOL, "forward")
    assert_close(gx, rgx, FP32_TOL, "dX")
    assert_close(gw, rgw, FP32_TOL, "dW")
    np.save(sys.argv[1] + f"_{{k}}.npy", np.concatenate([y.ravel(), gx.ravel(), gw.ravel()]))
"""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for mode in ("on", "off"):
            env = dict(os.environ, CONVT_CPU_WINOGRAD=mode)
            done = subprocess.run(
                [sys.executable, "-c", script, f"{tmp}/{mode}"],
                env=env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            runs[mode] = [np.load(f"{tmp}/{mode}_{k}.npy") for k in (3, 4)]
        for k, on, off in zip((3, 4), runs["on"], runs["off"]):
            assert not np.array_equal(on, off), f"k={k}: the switch changed nothing"


def test_cpu_paths_touch_only_their_tensors() -> None:
    """Every CASES entry, NCHW and NHWC, float32 and float16, with x, the weights, dY and the
    forward's output each flush against an inaccessible page, after them and then before them: a
    kernel that reads or writes past either end of a tensor (a vector load's last lanes, say)
    faults. In a subprocess, which prints each case before it runs it."""
    script = f"""
import sys, numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
import convt, reference as R
from _helpers import FP16_TOL, FP32_TOL, assert_close, guarded
from test_cpu_paths import CASES, _case_tensors
cpu = next(d for d in convt.devices() if d.kind == "cpu")
rng = np.random.default_rng(11)
for case, dtype in [(c, t) for c in sorted(CASES) for t in (np.float32, np.float16)]:
    x, wt, dy, (s, p, op, groups, d) = _case_tensors(rng, case, images=2)
    x, wt, dy = (a.astype(dtype) for a in (x, wt, dy))
    ref = R.conv_transpose_torch_ref(x, wt, None, s, p, op, groups, d)
    gx, gw, _ = R.conv_transpose_torch_backward(dy, x, wt, s, p, op, groups, d)
    tol = FP32_TOL if dtype == np.float32 else FP16_TOL
    for layout in ("NCHW", "NHWC"):
        def put(a):
            return a if layout == "NCHW" else a.transpose(0, 2, 3, 1)
        for side in ("after", "before"):
            print(case, np.dtype(dtype).name, layout, side, flush=True)
            xs = guarded(np.ascontiguousarray(put(x)), side)
            dys = guarded(np.ascontiguousarray(put(dy)), side)
            ws = guarded(wt, side)
            out = guarded(np.full(put(ref).shape, np.nan, dtype), side)
            geo = (s, p, op, groups, d)
            convt.conv_transpose2d(xs, ws, None, *geo, out=out, layout=layout, device=cpu)
            gxs, gws, _ = convt.conv_transpose2d_backward(
                dys, xs, ws, *geo, layout=layout, device=cpu
            )
            back = (lambda a: a) if layout == "NCHW" else (lambda a: np.moveaxis(a, -1, 1))
            assert_close(back(out), ref, tol, case + " forward")
            assert_close(back(gxs), gx, tol, case + " dX")
            assert_close(gws, gw, tol, case + " dW")
print("done")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.endswith("done\n"), (
        f"exit {done.returncode} during: {done.stdout.splitlines()[-1:]}\n{done.stderr[-2000:]}"
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_path_reversed_views(rng: np.random.Generator, case: str) -> None:
    """Every path reads X and dY through views with negative strides on C, H and W (element
    offsets below the first element's), in place."""
    import convt

    x, wt, dy, (s, p, op, groups, d) = _case_tensors(rng, case, images=2)
    flip = (slice(None), slice(None, None, -1), slice(None, None, -1), slice(None, None, -1))
    xr = np.ascontiguousarray(x[flip])[flip]  # x's values, strides < 0
    dyr = np.ascontiguousarray(dy[flip])[flip]
    assert xr.strides[1] < 0 and xr.strides[2] < 0 and dyr.strides[3] < 0
    ref = R.conv_transpose_torch_ref(x, wt, None, s, p, op, groups, d)
    got = convt.conv_transpose2d(xr, wt, None, s, p, op, groups, d, device=_cpu())
    assert_close(got, ref, FP32_TOL, f"{case} reversed forward")
    gx, gw, _ = R.conv_transpose_torch_backward(dy, x, wt, s, p, op, groups, d)
    dx, dw, _ = convt.conv_transpose2d_backward(dyr, xr, wt, s, p, op, groups, d, device=_cpu())
    assert_close(dx, gx, FP32_TOL, f"{case} reversed dX")
    assert_close(dw, gw, FP32_TOL, f"{case} reversed dW")


@pytest.mark.parametrize("images", [2, 1], ids=["wide_blocks", "few_tiles"])
def test_cpu_winograd_deep_dx(rng: np.random.Generator, images: int) -> None:
    """dX of a k4 s2 layer whose packed Winograd weights pass 2M floats (256 -> 258 channels):
    by the transforms in blocks of at least 64 tiles when there are 128 tiles or more (two
    16 x 16 images), else (one image) by the direct GEMM; dX either way, in a view with gaps."""
    import convt

    x = rng.standard_normal((images, 256, 16, 16)).astype(np.float32)
    wt = rng.standard_normal((256, 258, 4, 4)).astype(np.float32)
    dy = rng.standard_normal((images, 258, 32, 32)).astype(np.float32)
    gx = R.conv_transpose_torch_backward(dy, x, wt, 2, 1, 0, 1, 1)[0]
    dys, layout, _, _ = make_storage(dy, "strided", np.float32)
    xs, _, _, _ = make_storage(x, "strided", np.float32)
    dx = convt.conv_transpose2d_backward(
        dys, xs, wt, 2, 1, 0, 1, 1, layout=layout, device=_cpu(), output_mask=(True, False, False)
    )[0]
    assert_close(dx, gx, FP32_TOL, f"deep dX, {images} images")


@pytest.mark.parametrize("width", [16, 14], ids=["woven_rows", "tail_run"])
def test_cpu_winograd_dilation2_rows(rng: np.random.Generator, width: int) -> None:
    """3x3 at dilation 2 through the transforms (64 -> 64 channels, so dX runs there too): a tile
    row's two column phases are stored together, each output row woven whole, where the row
    width is a multiple of 4 (16; 14 leaves a short last run, stored phase by phase). Forward
    with a bias, and dX, into NaN-poisoned outputs; then the forward with a ReLU neuron and an
    Inf in the source (the transforms' sums are recomputed by the exact path)."""
    import convt
    from _helpers import build_transpose, run_encoded, set_total_offset

    c = 64
    x = rng.standard_normal((2, c, 10, width)).astype(np.float32)
    wt = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    dy = rng.standard_normal((2, c, 10, width)).astype(np.float32)
    geo = (1, 2, 0, 1, 2)  # stride, padding, output_padding, groups, dilation: same size
    out = np.full((2, c, 10, width), np.nan, np.float32)
    convt.conv_transpose2d(x, wt, b, *geo, out=out, device=_cpu())
    assert_close(out, R.conv_transpose_torch_ref(x, wt, b, *geo), FP32_TOL, "forward")
    gx = np.full(x.shape, np.nan, np.float32)
    convt.conv_transpose2d_backward(
        dy, x, wt, *geo, device=_cpu(), output_mask=(True, False, False), out=(gx, None, None)
    )
    assert_close(gx, R.conv_transpose_torch_backward(dy, x, wt, *geo)[0], FP32_TOL, "dX")

    w_ohwi = np.ascontiguousarray(rng.uniform(-0.5, 0.5, (c, 3, 3, c)).astype(np.float32))
    neuron = R.Neuron("relu", a=0.1)
    conv = build_transpose(
        _cpu(), w_ohwi, b, stride=1, dilation=2, neuron=neuron, kernel_weights_dtype="float32"
    )
    set_total_offset(conv, (2, 2))
    src = rng.uniform(-1, 1, (1, c, 10, width)).astype(np.float32)
    dst = convt.Image(np.full((1, c, 10, width), np.nan, np.float32))
    run_encoded(_cpu(), lambda cb: conv.encode(cb, convt.Image(src), destination_image=dst))
    ref = R.conv_transpose_mps(
        src, w_ohwi, b, stride=1, dilation=2, T=(2, 2), dst=np.full(dst.array.shape, np.nan),
        neuron=neuron,
    )  # fmt: skip
    assert_close(dst.array, ref, FP32_TOL, "leaky ReLU")


def _prelu_layer(
    rng: np.random.Generator, cout: int, k: int, in_per_group: int, groups: int
) -> tuple[Any, np.ndarray, np.ndarray, Any]:
    """An MPS-API layer on the CPU at stride 2: random OHWI k x k weights, a bias and a PReLU
    neuron (a slope per output channel); returns it with its weights, bias and neuron."""
    from _helpers import build_transpose

    w = rng.uniform(-0.5, 0.5, (cout, k, k, in_per_group)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, cout).astype(np.float32)
    neuron = R.Neuron("prelu", data=rng.uniform(0.05, 0.5, cout).astype(np.float32))
    conv = build_transpose(
        _cpu(), w, b, stride=2, groups=groups, neuron=neuron, kernel_weights_dtype="float32"
    )
    return conv, w, b, neuron


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_cpu_depthwise_nhwc_neuron(rng: np.random.Generator, dtype: type) -> None:
    """Depthwise layers on NHWC images (the channel loops; fp16 rows converted to float a row at
    a time) through the MPS API, with a bias and a PReLU neuron (a slope per channel) applied
    before the store, into a NaN-poisoned NHWC destination."""
    import convt
    from _helpers import run_encoded, set_total_offset

    c = 12
    conv, w, b, neuron = _prelu_layer(rng, c, 4, 1, c)
    set_total_offset(conv, (1, 1))
    src = rng.uniform(-1, 1, (2, c, 5, 9)).astype(dtype)
    dst = convt.Image(np.full((2, 10, 18, c), np.nan, dtype), layout="NHWC")
    image = convt.Image(np.ascontiguousarray(src.transpose(0, 2, 3, 1)), layout="NHWC")
    run_encoded(_cpu(), lambda cb: conv.encode(cb, image, destination_image=dst))
    ref = R.conv_transpose_mps(
        src, w, b, stride=2, groups=c, T=(1, 1), dst=np.full((2, c, 10, 18), np.nan),
        neuron=neuron,
    )  # fmt: skip
    tol = FP32_TOL if dtype == np.float32 else FP16_TOL
    assert_close(np.moveaxis(dst.array, -1, 1), ref, tol, f"depthwise NHWC PReLU {dtype}")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_cpu_stacked_phases_prelu(rng: np.random.Generator, dtype: type, layout: str) -> None:
    """A 2x2 kernel at stride 2 in two groups of 8 -> 7 channels (the forward's phases stacked,
    28 rows a group) through the MPS API, with a bias and a PReLU slope per channel applied to
    the stacked rows before the store, into a NaN-poisoned destination."""
    import convt
    from _helpers import run_encoded, set_total_offset

    cin, cout, groups = 16, 14, 2
    conv, w, b, neuron = _prelu_layer(rng, cout, 2, cin // groups, groups)
    set_total_offset(conv, (0, 0))
    src = rng.uniform(-1, 1, (2, cin, 5, 21)).astype(dtype)
    shape = (2, cout, 10, 42)

    def put(a: np.ndarray) -> np.ndarray:
        return a if layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))

    dst = convt.Image(put(np.full(shape, np.nan, dtype)), layout=layout)
    image = convt.Image(put(src), layout=layout)
    run_encoded(_cpu(), lambda cb: conv.encode(cb, image, destination_image=dst))
    ref = R.conv_transpose_mps(
        src, w, b, stride=2, groups=groups, T=(0, 0), dst=np.full(shape, np.nan), neuron=neuron
    )
    got = dst.array if layout == "NCHW" else np.moveaxis(dst.array, -1, 1)
    tol = FP32_TOL if dtype == np.float32 else FP16_TOL
    assert_close(got, ref, tol, f"stacked phases PReLU {layout} {dtype.__name__}")


@pytest.mark.parametrize(("cin", "cout", "k", "s", "p"), [(23, 7, 4, 2, 1), (17, 3, 3, 1, 1)])
def test_cpu_pixel_rows_merged_taps(
    rng: np.random.Generator, cin: int, cout: int, k: int, s: int, p: int
) -> None:
    """NHWC float dX by pixel rows in one group: a kernel row's taps read dY's pixels one after
    another, one segment of taps x channels, where contiguous; with gaps between pixels, a
    segment a tap, in the same order (kx from the last down). Both the same bits, and both the
    reference's numbers, rows' end pixels (fewer taps) included."""
    import convt

    x = rng.standard_normal((2, cin, 9, 21)).astype(np.float32)
    wt = rng.standard_normal((cin, cout, k, k)).astype(np.float32)
    ref = R.conv_transpose_torch_ref(x, wt, None, s, p, 0, 1, 1)
    dy = rng.standard_normal(ref.shape).astype(np.float32)
    gx, _, _ = R.conv_transpose_torch_backward(dy, x, wt, s, p, 0, 1, 1)
    got = []
    for storage in ("NHWC", "nhwc-gaps"):
        xs, layout, _, _ = make_storage(x, storage, np.float32)
        dys, _, _, _ = make_storage(dy, storage, np.float32)
        dx = convt.conv_transpose2d_backward(
            dys, xs, wt, s, p, output_mask=(True, False, False), layout=layout, device=_cpu()
        )[0]
        got.append(np.moveaxis(dx, -1, 1))
        assert_close(got[-1], gx, FP32_TOL, f"pixel rows dX, {storage}")
    np.testing.assert_array_equal(got[0], got[1], "one segment a kernel row against one a tap")


def test_cpu_pixel_rows_prelu(rng: np.random.Generator) -> None:
    """The NHWC float forward by pixel rows through the MPS API: 3x3 at stride 2 in two groups
    of 9 -> 28 channels (a whole panel and a part one), the bias first and a PReLU slope per
    channel after the sums, into a NaN-poisoned destination."""
    import convt
    from _helpers import run_encoded, set_total_offset

    cin, cout, groups = 18, 56, 2
    conv, w, b, neuron = _prelu_layer(rng, cout, 3, cin // groups, groups)
    set_total_offset(conv, (0, 0))
    src = rng.uniform(-1, 1, (2, cin, 7, 13)).astype(np.float32)
    shape = (2, cout, 15, 27)
    dst = convt.Image(np.full((2, 15, 27, cout), np.nan, np.float32), layout="NHWC")
    image = convt.Image(np.ascontiguousarray(src.transpose(0, 2, 3, 1)), layout="NHWC")
    run_encoded(_cpu(), lambda cb: conv.encode(cb, image, destination_image=dst))
    ref = R.conv_transpose_mps(
        src, w, b, stride=2, groups=groups, T=(0, 0), dst=np.full(shape, np.nan), neuron=neuron
    )
    assert_close(np.moveaxis(dst.array, -1, 1), ref, FP32_TOL, "pixel rows PReLU")


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    "k, stride, dilation", [(3, 1, 1), (3, 1, 2), (4, 2, 1)], ids=["3x3", "3x3_d2", "4x4_s2"]
)
def test_cpu_winograd_mps_window_and_clip(
    rng: np.random.Generator, k: int, stride: int, dilation: int, dtype: type
) -> None:
    """The MPS API on layers the CPU runs through Winograd transforms (3x3: 20 -> 24 channels;
    4x4 at stride 2: 256 -> 256, the forward's 2x2 phases): a manual window (offset and kernel
    offsets), a clip rectangle, a destination channel offset and image, a neuron and a bias;
    only the clip region is written. fp16 images too (patch rows converted, outputs converted
    as stored)."""
    import convt
    from _helpers import assert_written, build_transpose, run_encoded, set_total_offset

    cin, cout = (20, 24) if k == 3 else (256, 256)
    w = rng.uniform(-0.5, 0.5, (cout, k, k, cin)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, cout).astype(np.float32)
    neuron = R.Neuron("relu", a=0.1)
    conv = build_transpose(
        _cpu(),
        w,
        b,
        stride=stride,
        dilation=dilation,
        neuron=neuron,
        kernel_weights_dtype="float32",
    )
    T = (5, 3)
    set_total_offset(conv, T)
    conv.destination_feature_channel_offset = 2
    clip = (1, 2, 1, 13, 11, 1)  # x, y, z, width, height, depth
    conv.clip_rect = convt.Region(*clip)
    src = rng.uniform(-1, 1, (2, cin, 9, 8)).astype(dtype)
    dst_shape = (2, cout + 3, 16, 17)
    dst = convt.Image(np.full(dst_shape, np.nan, dtype))
    run_encoded(_cpu(), lambda cb: conv.encode(cb, convt.Image(src), destination_image=dst))
    ref = R.conv_transpose_mps(
        src.astype(np.float64), w, b, stride=stride, dilation=dilation, T=T,
        dst=np.full(dst_shape, np.nan), clip=clip, dst_c_offset=2, neuron=neuron,
    )  # fmt: skip
    mask = R.written_mask(dst_shape, cout, clip, 2, 0, 2)
    tol = FP32_TOL if dtype == np.float32 else FP16_TOL
    assert_written(dst.array, ref, mask, tol, f"k={k} s={stride} d={dilation} {dtype.__name__}")
