"""Weight and bias gradients on every dW kernel of the GPU backends, each forced by CONVT_GPU_DW
(gpu_launch.h): the narrow kernel (convt_backward_weights.metal: a SIMD-group per 2 output x 8
input channels of a tap and a slice of K), the "taps" kernels (same file: lanes over 32 source
columns, 16 taps x 1 input channel or 4 taps x 8 input channels a thread) and the GEMM one; K
split into slices summed in order, by shape or forced by CONVT_GPU_DW_SPLITS (1 slice, 3, and
64: more slices than some taps have positions, so empty slices must write zeros); dB over
slices of rows. Odd sizes, channel and tap-chunk tails, groups, strides, dilation, 1-D images,
images narrower than a SIMD-group and images with fewer positions than lanes, fp16, NHWC,
non-finite values and MPS batches that add into one state (the accumulate path), against the
float64 reference and bitwise the same on a second run. On the CPU device the variables do
nothing. Also dX of depthwise layers (convt_backward_data_depthwise.metal on GPU backends)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference as R
from _helpers import (
    FP16_TOL,
    FP32_TOL,
    assert_close,
    build_transpose_pair,
    check_windowed_fp16_dx,
    from_nchw,
    run_encoded,
    set_total_offset,
)

# (images, cin, cout, groups, (h, w), stride, (kh, kw), padding, output_padding, dilation)
CASES = [
    (3, 7, 7, 7, (13, 37), 2, (4, 4), 1, 0, 1),  # depthwise k4 s2, a 32-column chunk's tail
    (2, 5, 5, 5, (6, 9), 3, (5, 5), 2, 1, 2),  # depthwise, 25 taps (two chunks), dilation
    (2, 3, 3, 3, (1, 70), 4, (1, 8), (0, 2), 0, 1),  # depthwise 1-D
    (2, 11, 1, 1, (10, 12), 3, (9, 9), 4, 2, 1),  # FSRCNN-like: one output channel
    (2, 6, 10, 2, (7, 9), 2, (3, 3), 2, 1, 2),  # groups and dilation: 5 x 3 channels a group
    (2, 5, 7, 1, (5, 6), 8, (16, 16), 4, 0, 1),  # FCN-like k16 s8: 7 = 2+2+2+1 output channels
    (2, 17, 9, 1, (8, 5), 1, (3, 3), 1, 0, 1),  # tails: 9 = 4 x 2 + 1 out, 17 = 8+8+1 in
    (7, 2, 3, 1, (2, 3), 1, (2, 2), 0, 0, 1),  # 6 positions an image: a lane's step wraps images
    (2, 3, 6, 3, (5, 40), 2, (3, 3), 1, 1, 1),  # one input, two output channels a group
]
MODES = ["auto", "direct", "taps", "gemm"]


def _check(device, rng, case, layout="NCHW", dtype=np.float32, tol=FP32_TOL) -> None:
    import convt

    n, cin, cout, groups, size, stride, k, pad, op, dil = case
    x = rng.standard_normal((n, cin, *size)).astype(dtype)
    w = rng.standard_normal((cin, cout // groups, *k)).astype(dtype)
    ref_y = R.conv_transpose_torch_ref(x, w, None, stride, pad, op, groups, dil)
    gy = rng.standard_normal(ref_y.shape).astype(dtype)
    _, rw, rb = R.conv_transpose_torch_backward(gy, x, w, stride, pad, op, groups, dil)
    runs = [
        convt.conv_transpose2d_backward(
            from_nchw(gy, layout),
            from_nchw(x, layout),
            w,
            stride,
            pad,
            op,
            groups,
            dil,
            output_mask=(False, True, True),
            layout=layout,
            device=device,
        )  # fmt: skip
        for _ in range(2)
    ]
    assert runs[0][1].dtype == dtype and runs[0][2].dtype == dtype
    assert_close(runs[0][1], rw, tol, f"grad_weight {case}")
    assert_close(runs[0][2], rb, tol, f"grad_bias {case}")
    for a, b, name in zip(runs[0][1:], runs[1][1:], ("grad_weight", "grad_bias")):
        assert a.tobytes() == b.tobytes(), f"{name} {case} differs between runs"


def _selections():
    """(case, mode, splits): every split count on the narrow kernel; the GEMM kernel (tested at
    its own sizes elsewhere) by shape and with 64 slices on the smaller grids, and the taps
    kernels with 64 slices on two small grids only (the simulation runs 256-thread groups
    slowly); FCN's 256 taps by shape and in one slice only."""
    for i, case in enumerate(CASES):
        for mode in MODES:
            counts = {"gemm": (None, 64), "taps": (None, 1, 3) + ((64,) if i in (2, 7) else ())}
            for splits in counts.get(mode, (None, 1, 3, 64)):
                if (mode == "gemm" and i in (0, 1, 3)) or (i == 5 and splits not in (None, 1)):
                    continue
                label = f"case{i}-{mode}-" + (f"s{splits}" if splits else "by_shape")
                yield pytest.param(case, mode, splits, id=label)


@pytest.mark.parametrize("case, mode, splits", list(_selections()))
def test_weight_gradient_kernels(device: Any, rng, dw_kernel, case, mode, splits) -> None:
    dw_kernel(mode, splits)
    _check(device, rng, case)


@pytest.mark.parametrize("mode", MODES)
def test_weight_gradient_split_counts_differ(device: Any, rng, dw_kernel, mode) -> None:
    """Slices by shape where dW and dB differ (3 -> 1 channels, 64 x 48 source pixels: dW in 3
    slices on the narrow kernel, 4 on the taps one, 24 on the GEMM one; dB in 32), so each
    reads its own part of the scratch buffer."""
    dw_kernel(mode)
    _check(device, rng, (2, 3, 1, 1, (64, 48), 2, (4, 4), 1, 0, 1))


@pytest.mark.parametrize("mode", ["auto", "direct", "taps"])
@pytest.mark.parametrize("case", CASES)
def test_weight_gradient_kernels_fp16_nhwc(device: Any, rng, dw_kernel, case, mode) -> None:
    """fp16 X and dY read from NHWC arrays (channel stride 1, pixel strides C); fp32 sums."""
    dw_kernel(mode)
    _check(device, rng, case, "NHWC", np.float16, FP16_TOL)


@pytest.mark.parametrize(
    "layout, dtype, tol", [("NCHW", np.float32, FP32_TOL), ("NHWC", np.float16, FP16_TOL)]
)
@pytest.mark.parametrize("case", CASES[:3])
def test_depthwise_backward_data(device: Any, rng, case, layout, dtype, tol) -> None:
    """dX of depthwise layers (GPU backends: convt_backward_data_depthwise.metal, a thread per
    column and 4 rows) into a NaN-poisoned array, bitwise the same on a second run."""
    import convt

    n, cin, cout, groups, size, stride, k, pad, op, dil = case
    x = rng.standard_normal((n, cin, *size)).astype(dtype)
    w = rng.standard_normal((cin, 1, *k)).astype(dtype)
    gy = rng.standard_normal(
        R.conv_transpose_torch_ref(x, w, None, stride, pad, op, groups, dil).shape
    ).astype(dtype)
    ri, _, _ = R.conv_transpose_torch_backward(gy, x, w, stride, pad, op, groups, dil)
    runs = []
    for _ in range(2):
        gi, _, _ = convt.conv_transpose2d_backward(
            from_nchw(gy, layout), from_nchw(x, layout), w, stride, pad, op, groups, dil,
            output_mask=(True, False, False), layout=layout, device=device,
        )  # fmt: skip
        runs.append(gi if layout == "NCHW" else np.moveaxis(gi, -1, 1))
    assert_close(runs[0], ri, tol, f"grad_input {case}")
    assert runs[0].tobytes() == runs[1].tobytes(), "grad_input differs between runs"


@pytest.mark.parametrize("k, stride", [((4, 4), 2), ((3, 5), 3)])
def test_depthwise_backward_data_window_and_clip(device: Any, rng, k, stride) -> None:
    """MPS gradient API, depthwise: fp16 dY and dX, a window that leaves source pixels without
    any dY (written as 0) and a clip rectangle (dY read from an offset region only)."""
    w = rng.uniform(-0.5, 0.5, (5, *k, 1)).astype(np.float32)  # OHWI: 5 groups of 1 x 1
    check_windowed_fp16_dx(device, rng, w, 5, stride)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "cin, cout, groups",
    # dense, depthwise, and (on the CPU) the few-output dW (whose sums with a NaN are summed
    # again tap by tap) and the row loops of few inputs and outputs
    [(4, 4, 1), (4, 4, 4), (9, 2, 1), (9, 3, 1), (4, 2, 1)],
)
def test_weight_gradient_nonfinite(device: Any, rng, dw_kernel, mode, cin, cout, groups) -> None:
    """An Inf in X reaches only the weights whose taps meet real dY pixels (a corner pixel's taps
    that fall outside the output add nothing, not 0 * Inf), a NaN in dY every weight and the
    bias that read it."""
    import convt

    dw_kernel(mode)
    x = rng.uniform(-1, 1, (2, cin, 9, 11)).astype(np.float32)
    w = rng.uniform(-1, 1, (cin, cout // groups, 4, 4)).astype(np.float32)
    x[0, 1, 0, 0] = np.inf
    x[1, cin - 1, 8, 10] = -np.inf
    gy = rng.uniform(-1, 1, R.conv_transpose_torch_ref(x, w, None, 2, 1, 0, groups).shape)
    gy = gy.astype(np.float32)
    gy[1, cout - 1, 7, 9] = np.nan
    with np.errstate(invalid="ignore"):
        _, rw, rb = R.conv_transpose_torch_backward(gy, x, w, 2, 1, 0, groups)
    _, gw, gb = convt.conv_transpose2d_backward(
        gy, x, w, 2, 1, 0, groups, output_mask=(False, True, True), device=device
    )
    for got, ref, what in ((gw, rw, "dW"), (gb, rb, "dB")):
        for name, test in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
            assert np.array_equal(test(got), test(ref)), f"{what}: {name} positions differ"
        fin = np.isfinite(ref)
        assert_close(got[fin], ref[fin], FP32_TOL, f"finite {what}")
    assert np.isfinite(rw).any() and not np.isfinite(rw).all()


@pytest.mark.parametrize("splits", [None, 5])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels, groups", [(6, 6), (6, 2)])
def test_weight_gradient_batches_accumulate(
    device: Any, rng, dw_kernel, channels, groups, mode, splits
) -> None:
    """MPS batch gradients: three images summed into one state (the reduction adds to what is
    there), with a manual window (T = (0, -1)) and a clip-free destination larger than needed."""
    import convt

    dw_kernel(mode, splits)
    ig = channels // groups
    w = rng.uniform(-0.5, 0.5, (channels, 3, 5, ig)).astype(np.float32)  # OHWI
    b = rng.uniform(-0.5, 0.5, channels).astype(np.float32)
    fwd, grad = build_transpose_pair(
        device, w, b, stride=2, dilation=(1, 2), groups=groups, kernel_weights_dtype="float32"
    )
    set_total_offset(fwd, (0, -1))
    dst_hw = (9, 14)
    xs = [rng.uniform(-1, 1, (1, channels, 4, 7)).astype(np.float32) for _ in range(3)]
    dys = [rng.uniform(-1, 1, (1, channels, *dst_hw)).astype(np.float32) for _ in xs]
    x_imgs = [convt.Image(x) for x in xs]
    dsts = [convt.Image(np.zeros((1, channels, *dst_hw), np.float32)) for _ in xs]

    def encode(cb: Any) -> Any:
        _, states = fwd.encode_batch(cb, x_imgs, destination_images=dsts, destination_states=True)
        dy_imgs = [convt.Image(dy) for dy in dys]
        grad.gradient_option = convt.GradientOption.weights_and_bias
        grad.encode_batch(cb, dy_imgs, x_imgs, states, destination_gradients=[None] * 3)
        return states[0]

    state = run_encoded(device, encode)
    dw_sum, db_sum = np.zeros(w.shape), np.zeros(channels)
    for x, dy in zip(xs, dys):
        _, dw_ref, db_ref = R.conv_transpose_mps_backward(
            dy, x, w, 2, (1, 2), groups, (0, -1), (4, 7)
        )
        dw_sum += dw_ref
        db_sum += db_ref
    assert_close(state.gradient_for_weights, dw_sum, FP32_TOL, "batch dW is the sum")
    assert_close(state.gradient_for_biases, db_sum, FP32_TOL, "batch dB is the sum")


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("CONVT_GPU_DW", "fast", "CONVT_GPU_DW must be 'auto', 'gemm', 'direct' or 'taps'"),
        ("CONVT_GPU_DW_SPLITS", "0", r"CONVT_GPU_DW_SPLITS must be an integer in \[1, 4096\]"),
        ("CONVT_GPU_DW_SPLITS", "2x", r"CONVT_GPU_DW_SPLITS must be an integer in \[1, 4096\]"),
    ],
)
def test_weight_gradient_selection_rejects_bad_values(
    device: Any, monkeypatch: pytest.MonkeyPatch, name, value, message
) -> None:
    import convt

    if device.kind == "cpu":
        pytest.skip("the variables select GPU kernels")
    monkeypatch.setenv(name, value)
    x = np.ones((1, 2, 3, 3), np.float32)
    w = np.ones((2, 1, 2, 2), np.float32)
    gy = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=message):
        convt.conv_transpose2d_backward(gy, x, w, output_mask=(False, True, True), device=device)
