"""Layers with few channels per group, where GPU backends run the narrow kernels: the depthwise
forward (metal/convt_forward_depthwise.metal: only the taps that land, found once a thread), the
forward for fewer than 4 output channels per group (convt_forward_rows.metal: 8 rows of one
stride phase a thread, where the weights are finite and a phase's ky taps read consecutive source
rows; else convt_forward_narrow.metal: 4 pixels of one stride phase a thread) and dX for long
reductions (taps x output channels >= 64): split over SIMD-groups
(convt_backward_data_ksplit.metal), or with lanes over kx mod 8 for kernel widths that are
multiples of 8 (convt_backward_data_kxlanes.metal). Odd channel counts, pixel tails
of every tile, strides, dilation, groups, both layouts, 1-D images, fp16, the half accumulator,
and outputs poisoned with NaN, against the float64 reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference as R
from _helpers import (
    FP16_TOL,
    FP32_TOL,
    assert_close,
    assert_written,
    build_transpose,
    check_windowed_fp16_dx,
    from_nchw,
    poison,
    run_encoded,
    set_total_offset,
)


@pytest.fixture(autouse=True)
def _narrow_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU backends run the narrow forward kernel only on grids of >= 2048 threadgroups
    (gpu_launch.h); these images are smaller, so every such layer is sent there."""
    monkeypatch.setenv("CONVT_GPU_NARROW", "always")


# (stride, k, pad, output_padding, dilation): fsrcnn-like k9 s3, k4 s2, dilated, stride 1, and
# a wide dilation (taps 12 pixels apart: 29 rows reach only some).
GEOMETRIES = [
    (3, 9, 4, 2, 1), (2, 4, 1, 0, 1), (2, 3, 2, 1, 2), (1, 3, 1, 0, 1), (4, 5, 0, 3, 1),
    (1, 9, 0, 0, 12),
]  # fmt: skip


def _forward(device, x, w, b, geo, groups, layout, dtype=np.float32):
    """convt into a NaN-poisoned ``out`` and the float64 reference on the same (rounded) data."""
    import convt

    stride, k, pad, op, dil = geo
    x, w = x.astype(dtype), w.astype(dtype)
    b = None if b is None else b.astype(dtype)
    ref = R.conv_transpose_torch_ref(x, w, b, stride, pad, op, groups, dil)
    out = poison(np.empty(from_nchw(ref, layout).shape, dtype))
    convt.conv_transpose2d(
        from_nchw(x, layout), w, b, stride, pad, op, groups, dil,
        out=out, layout=layout, device=device,
    )  # fmt: skip
    return (out if layout == "NCHW" else np.moveaxis(out, -1, 1)), ref


@pytest.mark.parametrize("cin, cout, groups", [(7, 1, 1), (23, 3, 1), (14, 2, 2), (7, 21, 7)])
@pytest.mark.parametrize("geo", GEOMETRIES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_narrow_forward(device: Any, rng: np.random.Generator, cin, cout, groups, geo, layout):
    """Fewer than 4 output channels per group (7 -> 21 in 7 groups: 3 a group); sizes that
    leave tails in the 32-column and 8-row pixel tiles of every phase (29 rows: all 4 pixels of a
    thread land in some tiles, not in others)."""
    x = rng.standard_normal((2, cin, 29, 13)).astype(np.float32)
    w = rng.standard_normal((cin, cout // groups, geo[1], geo[1])).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    got, ref = _forward(device, x, w, b, geo, groups, layout)
    assert_close(got, ref, FP32_TOL, f"{layout} {geo} g{groups}")


@pytest.mark.parametrize("cin, cout, groups", [(23, 1, 1), (14, 6, 2)])
@pytest.mark.parametrize(
    "geo", [(1, 3, 1, 0, 1), (3, 9, 4, 2, 1), (2, 8, 3, 1, 1), (4, 5, 2, 3, 2)]
)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_rows_forward_tall(device: Any, rng: np.random.Generator, cin, cout, groups, geo, layout):
    """Images of 70 rows, where GPU backends run convt_forward_rows (8 rows of a phase a thread,
    4 SIMD-groups a threadgroup: 32-row tiles with a 6-row tail) with 1 to 4 ky taps a phase
    (k3 s1: 3; k9 s3: 3; k8 s2: 4; k5 s4 dilation 2: 3, every other kernel row), fp32 and fp16."""
    x = rng.standard_normal((2, cin, 70, 37)).astype(np.float32)
    w = rng.standard_normal((cin, cout // groups, geo[1], geo[1])).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    got, ref = _forward(device, x, w, b, geo, groups, layout)
    assert_close(got, ref, FP32_TOL, f"{layout} {geo} g{groups}")
    got, ref = _forward(device, x, w, None, geo, groups, layout, np.float16)
    assert_close(got, ref, FP16_TOL, f"fp16 {layout} {geo} g{groups}")


def test_rows_forward_one_simd_group_tiles(
    device: Any, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CONVT_GPU_NARROW=auto on a grid of 576 SIMD-groups (fsrcnn's k9 s3 on a 128x128 image):
    GPU backends run convt_forward_rows with one SIMD-group a threadgroup (32 x 8 pixels of a
    phase), fp16 source."""
    monkeypatch.setenv("CONVT_GPU_NARROW", "auto")
    x = rng.standard_normal((1, 6, 128, 128)).astype(np.float32)
    w = rng.standard_normal((6, 1, 9, 9)).astype(np.float32)
    b = rng.standard_normal(1).astype(np.float32)
    got, ref = _forward(device, x, w, b, (3, 9, 4, 2, 1), 1, "NCHW", np.float16)
    assert_close(got, ref, FP16_TOL, "fp16 576 groups")


@pytest.mark.parametrize("geo", [(3, 9, 4, 2, 1), (2, 4, 1, 0, 1)])
def test_narrow_forward_nonfinite_weights(device: Any, rng: np.random.Generator, geo) -> None:
    """Inf and NaN weights on taps that fall outside the source at the borders: they reach only
    the pixels whose tap reads a real source pixel (no 0 * Inf). GPU backends send layers with a
    non-finite weight to convt_forward_narrow, not convt_forward_rows (which reads missing
    pixels as 0)."""
    x = rng.standard_normal((2, 5, 40, 11)).astype(np.float32)
    w = rng.standard_normal((5, 2, geo[1], geo[1])).astype(np.float32)
    w[1, 0, 0, 0] = np.inf
    w[3, 1, -1, -1] = -np.inf
    w[2, 1, 0, -1] = np.nan
    with np.errstate(invalid="ignore"):
        got, ref = _forward(device, x, w, None, geo, 1, "NCHW")
    for name, test in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        assert np.array_equal(test(got), test(ref)), f"{name} positions differ"
    fin = np.isfinite(ref)
    assert fin.any() and not fin.all()
    assert_close(got[fin], ref[fin], FP32_TOL, "finite outputs")


@pytest.mark.parametrize("channels", [7, 23])
@pytest.mark.parametrize("geo", GEOMETRIES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_depthwise_forward(device: Any, rng: np.random.Generator, channels, geo, layout):
    x = rng.standard_normal((3, channels, 9, 70)).astype(np.float32)
    w = rng.standard_normal((channels, 1, geo[1], geo[1])).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32)
    got, ref = _forward(device, x, w, b, geo, channels, layout)
    assert_close(got, ref, FP32_TOL, f"{layout} {geo}")


@pytest.mark.parametrize("groups, cout", [(1, 1), (5, 5)])
def test_narrow_forward_fp16_1d_and_views(device: Any, rng: np.random.Generator, groups, cout):
    """fp16 in and out, one-row images (64x1 tiles, 4 pixels 64 columns apart) and strided
    views with NaN around them."""
    import convt

    x = rng.standard_normal((2, 10, 1, 300)).astype(np.float32)
    w = rng.standard_normal((10, cout // groups, 1, 7)).astype(np.float32)
    got, ref = _forward(device, x, w, None, (3, 7, (0, 2), (0, 1), 1), groups, "NCHW", np.float16)
    assert_close(got, ref, FP16_TOL, "fp16 1-row")
    x2 = rng.standard_normal((2, 10, 6, 5)).astype(np.float32)
    big_x = np.full((2, 21, 6, 10), np.nan, np.float32)
    big_x[:, ::2][:, :10, :, ::2] = x2
    w2 = rng.standard_normal((10, cout // groups, 3, 3)).astype(np.float32)
    ref2 = R.conv_transpose_torch_ref(x2, w2, None, 2, 1, 1, groups)
    big_out = np.full((2, 2 * cout + 1, 12, 10), np.nan, np.float32)
    out = big_out[:, 1::2]
    convt.conv_transpose2d(big_x[:, ::2][:, :10, :, ::2], w2, None, 2, 1, 1, groups, out=out,
                           device=device)  # fmt: skip
    assert_close(out, ref2, FP32_TOL, "strided views")
    assert np.isnan(big_out[:, 0::2]).all(), "wrote outside the output view"


@pytest.mark.parametrize("accumulator", ["half", "float"])
@pytest.mark.parametrize("out_ch, groups", [(1, 1), (3, 1), (3, 3)])
def test_narrow_forward_accumulators_and_clip(
    device: Any, rng: np.random.Generator, out_ch, groups, accumulator
):
    """MPS-style: fp16 weights, the half accumulator (rounded after every multiply-add, in
    (ky, kx, channel) order) or the float one, a fused neuron, a total offset and a clip
    rectangle whose origin is not 0 and that leaves pixels unwritten (depthwise when groups ==
    channels; GPU backends run convt_forward_rows for the float accumulator with few output
    channels, convt_forward_narrow for the half one)."""
    import convt

    ig = 3 if groups == 1 else 1
    w = rng.uniform(-0.5, 0.5, (out_ch, 5, 5, ig)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, out_ch).astype(np.float32)
    neuron = R.Neuron("relu", a=0.1)
    kernel = build_transpose(device, w, b, in_channels=ig * groups, stride=2, groups=groups,
                             neuron=neuron)  # fmt: skip
    kernel.accumulator_precision = getattr(convt.AccumulatorPrecision, accumulator)
    set_total_offset(kernel, (1, 2))
    clip = (1, 2, 0, 13, 9, 2)
    kernel.clip_rect = convt.Region(*clip)
    x = rng.uniform(-1, 1, (2, ig * groups, 7, 8)).astype(np.float16)
    dst = poison(np.empty((2, out_ch, 16, 17), np.float16))
    run_encoded(
        device, lambda cb: kernel.encode(cb, convt.Image(x), destination_image=convt.Image(dst))
    )
    w16 = w.astype(np.float16).astype(np.float32)
    ref = R.conv_transpose_mps(
        x, w16, b, stride=2, groups=groups, T=(1, 2), dst_hw=(16, 17), clip=clip, neuron=neuron,
        accumulator=accumulator, dst_dtype=np.float16,
    )  # fmt: skip
    mask = R.written_mask(dst.shape, out_ch, clip, 2)
    assert_written(dst, ref, mask, FP16_TOL, f"{accumulator} accumulator")


def _check_backward_data(device: Any, rng: np.random.Generator, case, layout: str) -> None:
    """dX of ``case`` (cin, cout, groups, (h, w), stride, (kh, kw), padding, dilation) against
    the float64 reference, and bitwise the same on a second run."""
    import convt

    cin, cout, groups, size, stride, (kh, kw), padding, dil = case
    x = rng.standard_normal((2, cin, *size)).astype(np.float32)
    w = rng.standard_normal((cin, cout // groups, kh, kw)).astype(np.float32)
    ref_y = R.conv_transpose_torch_ref(x, w, None, stride, padding, 0, groups, dil)
    gy = rng.standard_normal(ref_y.shape).astype(np.float32)
    ri, _, _ = R.conv_transpose_torch_backward(gy, x, w, stride, padding, 0, groups, dil)
    runs = []
    for _ in range(2):
        gi, _, _ = convt.conv_transpose2d_backward(
            from_nchw(gy, layout), from_nchw(x, layout), w, stride, padding, 0, groups, dil,
            output_mask=(True, False, False), layout=layout, device=device,
        )  # fmt: skip
        runs.append(gi if layout == "NCHW" else np.moveaxis(gi, -1, 1))
    assert_close(runs[0], ri, FP32_TOL, f"grad_input {case}")
    assert np.array_equal(runs[0], runs[1]), f"grad_input {case} differs between runs"


# convt_backward_data_ksplit (taps >= 8, taps x output channels >= 64, kernel widths that are
# not multiples of 8): FCN-like stride 8, odd channel counts, groups, dilation, stride 1 (9
# taps, just over the 8 slices), a 1-D layer, a stride that the dilation does not divide.
DX_CASES = [
    (21, 21, 1, (5, 9), 8, (15, 15), 4, 1),
    (7, 23, 1, (9, 18), 2, (4, 4), 1, 1),
    (23, 7, 1, (17, 6), 1, (3, 3), 1, 1),
    (14, 46, 2, (7, 7), 2, (3, 3), 2, 2),
    (5, 9, 1, (1, 150), 4, (1, 9), (0, 2), 1),
    (6, 10, 2, (11, 13), 3, (7, 7), 3, 2),
]


@pytest.mark.parametrize("case", DX_CASES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_ksplit_backward_data(device: Any, rng: np.random.Generator, case, layout) -> None:
    _check_backward_data(device, rng, case, layout)


# convt_backward_data_kxlanes (kernel widths a multiple of 8, <= 256 taps): FCN's k16 s8 on 9 x
# 5 pixels (tails of the 16 x 4 pixel tile), 17 input channels (three blocks of 8, the last with
# one), 3 groups of 8 kx shared unevenly by the two reduction slices, groups with dilation and a
# stride that does not divide 8, stride 1, and 1-D layers with one kx group (a slice idle) and two.
# Kernels of two taps a stride phase (FCN's k16 s8, k4 s2 wide 8, k8 s8 dilated 2) take the paired
# entry (kxlanes2: one dY row load serves a pixel's tap rho and the next pixel's tap rho + P).
DXL_CASES = [
    (21, 21, 1, (5, 9), 8, (16, 16), 4, 1),
    (17, 6, 1, (6, 21), 4, (3, 24), (1, 9), 1),
    (6, 10, 2, (11, 13), 3, (5, 8), (3, 2), 2),
    (9, 12, 1, (7, 7), 1, (8, 8), 3, 1),
    (5, 9, 1, (1, 150), 4, (1, 8), (0, 2), 1),
    (7, 9, 1, (6, 11), 2, (4, 8), 1, 1),  # two taps a phase (paired), 2 units a slice
    (5, 10, 1, (7, 9), 8, (8, 8), 2, 2),  # paired with dilation: taps rho and rho + 4
    (3, 7, 1, (1, 70), 8, (1, 16), (0, 4), 1),
]


@pytest.mark.parametrize("case", DXL_CASES)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_kxlanes_backward_data(device: Any, rng: np.random.Generator, case, layout) -> None:
    _check_backward_data(device, rng, case, layout)


@pytest.mark.parametrize("k, stride", [((4, 4), 2), ((3, 8), 4)])
def test_narrow_backward_data_poisoned_fp16_and_window(
    device: Any, rng: np.random.Generator, k, stride
) -> None:
    """MPS gradient API (ksplit: 4x4 taps; kxlanes: 3x8): dX written into a NaN-poisoned image,
    fp16 dY and dX, a window that leaves some source pixels without any dY (written as 0), and
    a clip rectangle (dY read from an offset region only)."""
    w = rng.uniform(-0.5, 0.5, (9, *k, 3)).astype(np.float32)  # OHWI: 9 out, 3 in
    check_windowed_fp16_dx(device, rng, w, 1, stride)


@pytest.mark.parametrize("k", [(4, 4), (16, 16)])
def test_narrow_backward_data_nonfinite(device: Any, rng: np.random.Generator, k) -> None:
    """An Inf weight reaches only the dX pixels whose tap reads a real dY element (no 0 * Inf at
    the borders), and a NaN in dY only the pixels that read it (ksplit: 4x4; kxlanes: 16x16)."""
    import convt

    x = rng.uniform(-1, 1, (2, 5, 6, 7)).astype(np.float32)
    w = rng.uniform(-1, 1, (5, 6, *k)).astype(np.float32)
    w[1, 2, 0, 0] = np.inf
    w[3, 4, k[0] - 1, k[1] - 1] = -np.inf
    stride = k[1] // 2
    pad = k[1] // 4
    gy = rng.uniform(-1, 1, R.conv_transpose_torch_ref(x, w, None, stride, pad).shape)
    gy = gy.astype(np.float32)
    gy[0, 3, 5, 6] = np.nan
    with np.errstate(invalid="ignore"):
        ref, _, _ = R.conv_transpose_torch_backward(gy, x, w, stride, pad)
    got, _, _ = convt.conv_transpose2d_backward(
        gy, x, w, stride, pad, output_mask=(True, False, False), device=device
    )
    for name, test in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        assert np.array_equal(test(got), test(ref)), f"{name} positions differ"
    assert np.isfinite(ref).any() and not np.isfinite(ref).all()
    fin = np.isfinite(ref)
    assert_close(got[fin], ref[fin], FP32_TOL, "finite dX")


@pytest.mark.parametrize("mode", ["auto", "always"])
def test_narrow_selection_modes(
    device: Any, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """CONVT_GPU_NARROW=auto (small grids: convt_forward) and always (convt_forward_narrow) give
    the same function; any other value is refused on GPU backends."""
    monkeypatch.setenv("CONVT_GPU_NARROW", mode)
    x = rng.standard_normal((2, 9, 11, 10)).astype(np.float32)
    w = rng.standard_normal((9, 2, 9, 9)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    got, ref = _forward(device, x, w, b, (3, 9, 4, 2, 1), 1, "NCHW")
    assert_close(got, ref, FP32_TOL, mode)
    if device.kind == "cpu":
        return
    monkeypatch.setenv("CONVT_GPU_NARROW", "sometimes")
    with pytest.raises(ValueError, match="CONVT_GPU_NARROW must be 'auto' or 'always'"):
        _forward(device, x, w, b, (3, 9, 4, 2, 1), 1, "NCHW")
