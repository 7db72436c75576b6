"""Wide layers (32 or more output channels per group), where GPU backends run the GEMM-tiled
forward kernel (metal/convt_forward_gemm.metal: 64 pixels x 64 channels, 8 input channels a
stage): channel tails on both tile axes, pixel tails, every stride phase, dilation, groups, 1-D
images, both layouts, strided views, fp16, fused bias and neurons."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference as R
from _helpers import FP16_TOL, FP32_TOL, assert_close, from_nchw, poison


@pytest.mark.parametrize("cout, cin, groups", [(32, 3, 1), (70, 9, 1), (130, 7, 1), (74, 10, 2)])
@pytest.mark.parametrize(
    "stride, k, pad, dilation", [(1, 3, 1, 1), (2, 4, 1, 1), (3, 5, 2, 1), (2, 3, 2, 2)]
)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_wide_forward(
    device: Any, rng: np.random.Generator, cout, cin, groups, stride, k, pad, dilation, layout
) -> None:
    import convt

    x = rng.standard_normal((2, cin, 5, 9)).astype(np.float32)
    w = rng.standard_normal((cin, cout // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    op = stride - 1 if stride > 1 else 0
    ref = R.conv_transpose_torch_ref(x, w, b, stride, pad, op, groups, dilation)
    out = poison(np.empty(from_nchw(ref, layout).shape, np.float32))
    convt.conv_transpose2d(
        from_nchw(x, layout), w, b, stride, pad, op, groups, dilation,
        out=out, layout=layout, device=device,
    )  # fmt: skip
    got = out if layout == "NCHW" else np.moveaxis(out, -1, 1)
    assert_close(got, ref, FP32_TOL, f"{layout} s{stride} k{k} d{dilation} g{groups}")


def test_wide_forward_strided_views_fp16_and_1d(device: Any, rng: np.random.Generator) -> None:
    import convt

    # A strided (sliced) input and output: the kernel indexes by element strides.
    x = rng.standard_normal((2, 23, 7, 6)).astype(np.float32)
    w = rng.standard_normal((23, 40, 3, 3)).astype(np.float32)
    big_x = np.full((2, 50, 7, 11), np.nan, np.float32)
    big_x[:, ::2][:, :23, :, ::2] = x
    ref = R.conv_transpose_torch_ref(x, w, None, 2, 1, 1)
    big_out = np.full((2, 81, 14, 12), np.nan, np.float32)
    out = big_out[:, 1::2]
    convt.conv_transpose2d(big_x[:, ::2][:, :23, :, ::2], w, None, 2, 1, 1, out=out, device=device)
    assert_close(out, ref, FP32_TOL, "strided views")
    assert np.isnan(big_out[:, 0::2]).all(), "wrote outside the output view"
    # fp16 in and out (fp16 weights; float accumulation).
    y16 = convt.conv_transpose2d(x.astype(np.float16), w.astype(np.float16), None, 2, 1, 1,
                                 device=device)  # fmt: skip
    ref16 = R.conv_transpose_torch_ref(x.astype(np.float16), w.astype(np.float16), None, 2, 1, 1)
    assert_close(y16, ref16, FP16_TOL, "fp16")
    # 1-D: one-row images, a pixel count that is not a multiple of the tile.
    x1 = rng.standard_normal((3, 17, 101)).astype(np.float32)
    w1 = rng.standard_normal((17, 48, 16)).astype(np.float32)
    b1 = rng.standard_normal(48).astype(np.float32)
    y1 = convt.conv_transpose1d(x1, w1, b1, stride=8, padding=4, device=device)
    assert_close(y1, R.conv_transpose1d_torch_ref(x1, w1, b1, 8, 4), FP32_TOL, "1-D")


@pytest.mark.parametrize("kind", ["relu", "sigmoid", "prelu"])
def test_wide_mps_fused_neuron(device: Any, rng: np.random.Generator, kind: str) -> None:
    import convt
    from _helpers import build_transpose, run_encoded

    slopes = rng.uniform(-0.5, 0.5, 36).astype(np.float32)
    neuron = {
        "relu": R.Neuron("relu", a=0.1),
        "sigmoid": R.Neuron("sigmoid"),
        "prelu": R.Neuron("prelu", data=slopes),
    }[kind]
    w = rng.standard_normal((36, 3, 3, 11)).astype(np.float32)  # OHWI, 36 outputs
    b = rng.standard_normal(36).astype(np.float32)
    kernel = build_transpose(device, w, b, stride=2, neuron=neuron, kernel_weights_dtype="float32")
    x = rng.standard_normal((1, 11, 6, 7)).astype(np.float32)
    dst = run_encoded(device, lambda cb: kernel.encode(cb, convt.Image(x)))
    t = (
        kernel.offset[1] * 2 + kernel.kernel_offset_y,
        kernel.offset[0] * 2 + kernel.kernel_offset_x,
    )
    ref = R.conv_transpose_mps(x, w, b, stride=2, T=t, dst_hw=dst.array.shape[2:], neuron=neuron)
    assert_close(dst.array, ref, FP32_TOL, kind)


@pytest.mark.parametrize(
    "cin, cout, groups, size, stride, k, dilation",
    [
        (30, 40, 1, (9, 11), 2, 3, 1),  # one slice of K
        (33, 70, 1, (31, 33), 2, 4, 1),  # several slices, channel tails on both tile axes
        (64, 72, 2, (17, 19), 1, 3, 2),  # groups, dilation
        (40, 36, 1, (1, 301), 4, 8, 1),  # 1-D
    ],
)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_wide_backward(
    device: Any, rng: np.random.Generator, cin, cout, groups, size, stride, k, dilation, layout
) -> None:
    """dX, dW and dB of wide layers (the GEMM dW kernel with K split into slices) against the
    float64 reference; dW/dB bitwise equal across two runs."""
    import convt

    x = rng.standard_normal((2, cin, *size)).astype(np.float32)
    w = rng.standard_normal((cin, cout // groups, k, k if size[0] > 1 else k)).astype(np.float32)
    if size[0] == 1:
        w = w[:, :, :1, :]
    pad = (0, 1) if size[0] == 1 else 1
    ref_y = R.conv_transpose_torch_ref(x, w, None, stride, pad, 0, groups, dilation)
    gy = rng.standard_normal(ref_y.shape).astype(np.float32)
    ri, rw, rb = R.conv_transpose_torch_backward(gy, x, w, stride, pad, 0, groups, dilation)
    args = (stride, pad, 0, groups, dilation)
    got = convt.conv_transpose2d_backward(
        from_nchw(gy, layout), from_nchw(x, layout), w, *args, layout=layout, device=device
    )
    gi = got[0] if layout == "NCHW" else np.moveaxis(got[0], -1, 1)
    assert_close(gi, ri, FP32_TOL, "grad_input")
    assert_close(got[1], rw, FP32_TOL, "grad_weight")
    assert_close(got[2], rb, FP32_TOL, "grad_bias")
    again = convt.conv_transpose2d_backward(
        from_nchw(gy, layout), from_nchw(x, layout), w, *args, layout=layout, device=device
    )
    assert np.array_equal(again[1], got[1]) and np.array_equal(again[2], got[2])


def test_wide_backward_weights_only_and_accumulated(device: Any, rng: np.random.Generator):
    """dW without dB, dB without dW, and MPS batch gradients summed into one state (the
    accumulate path of the slice reduction)."""
    import convt

    x = rng.standard_normal((3, 36, 12, 10)).astype(np.float32)
    w = rng.standard_normal((36, 40, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((3, 40, 23, 19)).astype(np.float32)
    ri, rw, rb = R.conv_transpose_torch_backward(gy, x, w, 2, 1, 0, 1, 1)
    _, gw, gb = convt.conv_transpose2d_backward(
        gy, x, w, 2, 1, output_mask=(False, True, False), device=device
    )
    assert gb is None
    assert_close(gw, rw, FP32_TOL, "grad_weight alone")
    _, gw, gb = convt.conv_transpose2d_backward(
        gy, x, w, 2, 1, output_mask=(False, False, True), device=device
    )
    assert gw is None
    assert_close(gb, rb, FP32_TOL, "grad_bias alone")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_wide_backward_data_many_tiles(device: Any, rng: np.random.Generator, layout) -> None:
    """Enough source pixels x input channels for GPU backends' GEMM dX kernel (128 tiles of
    64 pixels x 64 channels or more), with pixel and channel tails."""
    import convt

    x = rng.standard_normal((2, 45, 63, 67)).astype(np.float32)
    w = rng.standard_normal((45, 6, 3, 3)).astype(np.float32)
    ref_y = R.conv_transpose_torch_ref(x, w, None, 2, 1, 1)
    gy = rng.standard_normal(ref_y.shape).astype(np.float32)
    ri, _, _ = R.conv_transpose_torch_backward(gy, x, w, 2, 1, 1)
    gi, _, _ = convt.conv_transpose2d_backward(
        from_nchw(gy, layout), from_nchw(x, layout), w, 2, 1, 1,
        output_mask=(True, False, False), layout=layout, device=device,
    )  # fmt: skip
    assert_close(gi if layout == "NCHW" else np.moveaxis(gi, -1, 1), ri, FP32_TOL, "grad_input")
