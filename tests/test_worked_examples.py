"""Spec §1.4 / §1.5 worked examples as exact-value tests through the MPS-style API.

1-D examples are H = 1 images (axis "x") or W = 1 images (axis "y"); kernel weights are kept in
float32 so every value is exact.
"""

from __future__ import annotations

from typing import Any

import convt
import numpy as np
import pytest
import reference as R
from _helpers import (
    AUTOENCODER_DEFAULT,
    AUTOENCODER_TF_SAME,
    FP32_TOL,
    SAME_NUMERIC,
    SRC_1D,
    TABLE_1D,
    W3,
    assert_close,
    build_transpose,
    poison,
    run_encoded,
)

PM = convt.PaddingMethod
TABLE_PARAMS = [row[1:] for row in TABLE_1D]
TABLE_IDS = [row[0] for row in TABLE_1D]


def along(axis: str, values: np.ndarray) -> np.ndarray:
    """A 1-D vector as an NCHW image (1, 1, 1, n) for axis x, (1, 1, n, 1) for axis y."""
    v = np.asarray(values, dtype=np.float32)
    return v.reshape(1, 1, 1, -1) if axis == "x" else v.reshape(1, 1, -1, 1)


def transpose_1d(device: Any, w: np.ndarray, axis: str, stride: int = 2) -> Any:
    """A 1-channel transpose whose kernel lies along ``axis`` (fp32 kernel weights)."""
    weights = (w.reshape(1, 1, -1, 1) if axis == "x" else w.reshape(1, -1, 1, 1)).astype(np.float32)
    strides = (1, stride) if axis == "x" else (stride, 1)
    return build_transpose(device, weights, stride=strides, kernel_weights_dtype="float32")


def offsets_along(conv: Any, axis: str) -> tuple[int, int, int, int]:
    """(offset, kernelOffset) on ``axis``, then on the other axis."""
    if axis == "x":
        return conv.offset[0], conv.kernel_offset_x, conv.offset[1], conv.kernel_offset_y
    return conv.offset[1], conv.kernel_offset_y, conv.offset[0], conv.kernel_offset_x


def line(image: Any) -> np.ndarray:
    """The values of a one-row or one-column NCHW image."""
    return np.asarray(image.array, dtype=np.float64).ravel()


def test_defaults(device: Any) -> None:
    conv = transpose_1d(device, W3, "x")
    assert conv.offset == (0, 0, 0)
    assert (conv.kernel_offset_x, conv.kernel_offset_y) == (0, 0)
    assert conv.padding.padding_method == PM.SIZE_SAME
    assert conv.accumulator_precision == convt.AccumulatorPrecision.float
    assert conv.edge_mode == convt.EdgeMode.zero
    assert (conv.source_feature_channel_offset, conv.destination_feature_channel_offset) == (0, 0)
    assert (conv.input_feature_channels, conv.output_feature_channels, conv.groups) == (1, 1, 1)
    assert (conv.kernel_width, conv.kernel_height) == (3, 1)
    assert (conv.stride_in_pixels_x, conv.stride_in_pixels_y) == (2, 1)


@pytest.mark.parametrize("axis", ["x", "y"])
def test_default_policy_same_numeric_example(device: Any, axis: str) -> None:
    conv = transpose_1d(device, W3, axis)
    out = run_encoded(device, lambda cb: conv.encode(cb, convt.Image(along(axis, SRC_1D))))
    assert out.array.shape == along(axis, SAME_NUMERIC).shape  # 7 wide, not 8
    np.testing.assert_array_equal(line(out), SAME_NUMERIC)


@pytest.mark.parametrize("axis", ["x", "y"])
@pytest.mark.parametrize("w, method, dst, T, off, ko, values", TABLE_PARAMS, ids=TABLE_IDS)
def test_policy_table(
    device: Any,
    axis: str,
    w: np.ndarray,
    method: int,
    dst: int,
    T: int,
    off: int,
    ko: int,
    values: list,
) -> None:
    conv = transpose_1d(device, w, axis)
    conv.padding = convt.Padding(method)
    src = convt.Image(along(axis, SRC_1D))
    out = run_encoded(device, lambda cb: conv.encode(cb, src))
    assert isinstance(out.array, np.ndarray)
    assert out.array.shape == along(axis, values).shape
    assert (out.width, out.height) == ((dst, 1) if axis == "x" else (1, dst))
    assert (out.feature_channels, out.number_of_images) == (1, 1)
    np.testing.assert_array_equal(line(out), values)
    assert offsets_along(conv, axis) == (off, ko, 0, 0)


@pytest.mark.parametrize("w, method, dst, T, off, ko, values", TABLE_PARAMS, ids=TABLE_IDS)
def test_auto_offsets_persist_into_manual_encode(
    device: Any, w: np.ndarray, method: int, dst: int, T: int, off: int, ko: int, values: list
) -> None:
    conv = transpose_1d(device, w, "x")
    conv.kernel_offset_x = 17  # clobbered by the auto-sizing encode (§8.3)
    conv.padding = convt.Padding(method)
    src = convt.Image(along("x", SRC_1D))
    run_encoded(device, lambda cb: conv.encode(cb, src))
    assert (conv.offset[0], conv.kernel_offset_x) == (off, ko)
    # The manual path runs no policy: switching the policy back changes nothing.
    conv.padding = convt.Padding(PM.SIZE_SAME)
    dst_arr = poison(np.empty((1, 1, 1, dst), np.float32))
    dst_img = convt.Image(dst_arr)
    res = run_encoded(device, lambda cb: conv.encode(cb, src, destination_image=dst_img))
    assert res is dst_img
    np.testing.assert_array_equal(dst_arr.ravel(), values)
    assert (conv.offset[0], conv.kernel_offset_x) == (off, ko)


@pytest.mark.parametrize("w, method, dst, T, off, ko, values", TABLE_PARAMS, ids=TABLE_IDS)
def test_destination_image_descriptor_writes_offsets(
    device: Any, w: np.ndarray, method: int, dst: int, T: int, off: int, ko: int, values: list
) -> None:
    conv = transpose_1d(device, w, "x")
    conv.offset = (5, 5, 0)
    conv.padding = convt.Padding(method)
    desc = conv.destination_image_descriptor(convt.Image(along("x", SRC_1D)))
    assert (desc.width, desc.height, desc.feature_channels, desc.number_of_images) == (dst, 1, 1, 1)
    assert (desc.offset_x, desc.kernel_offset_x) == (off, ko)
    assert (conv.offset[0], conv.offset[1], conv.kernel_offset_x) == (off, 0, ko)


@pytest.mark.parametrize(
    "pad, policy", [(2, PM.SIZE_VALID_ONLY), (1, PM.SIZE_SAME), (0, PM.SIZE_FULL)]
)
def test_table_pytorch_equivalents(device: Any, pad: int, policy: int) -> None:
    """§1.4: Valid ≡ padding 2, Same ≡ 1, Full ≡ 0 with flipped weights (functional API)."""
    conv = transpose_1d(device, W3, "x")
    conv.padding = convt.Padding(policy)
    mps = run_encoded(device, lambda cb: conv.encode(cb, convt.Image(along("x", SRC_1D))))
    x = SRC_1D.astype(np.float32).reshape(1, 1, 4)
    w = W3[::-1].astype(np.float32).reshape(1, 1, 3)
    got = convt.conv_transpose1d(x, w, stride=2, padding=pad, device=device)
    np.testing.assert_array_equal(got.ravel(), line(mps))


@pytest.mark.parametrize("axis", ["x", "y"])
@pytest.mark.parametrize("tf_same", [False, True], ids=["default", "tf-same"])
def test_autoencoder_examples(device: Any, axis: str, tf_same: bool) -> None:
    method = PM.SIZE_SAME | (PM.ADD_REMAINDER_TO_BOTTOM_RIGHT if tf_same else 0)
    fwd = dict(
        source_width=8, source_height=1, kernel_width=3, kernel_height=1, stride_x=2, stride_y=1
    )
    if axis == "y":
        fwd = dict(
            source_width=1, source_height=8, kernel_width=1, kernel_height=3, stride_x=1, stride_y=2
        )
    state = convt.ConvolutionGradientState.for_forward(**fwd, padding_method=method)
    fwd_offset = state.offset_x if axis == "x" else state.offset_y
    fwd_dst = state.destination_width if axis == "x" else state.destination_height
    assert (fwd_dst, fwd_offset) == (4, 1 if tf_same else 0)

    conv = transpose_1d(device, W3, axis)
    conv.padding = convt.Padding(PM.SIZE_FULL)  # the state overrides the policy
    src = convt.Image(along(axis, SRC_1D))
    out = run_encoded(device, lambda cb: conv.encode(cb, src, convolution_gradient_state=state))
    expected = AUTOENCODER_TF_SAME if tf_same else AUTOENCODER_DEFAULT
    assert out.array.shape == along(axis, expected).shape
    np.testing.assert_array_equal(line(out), expected)
    assert offsets_along(conv, axis) == ((-1, 1, 0, 0) if tf_same else (0, 0, 0, 0))


def test_autoencoder_default_without_state_drops_last_column(device: Any) -> None:
    conv = transpose_1d(device, W3, "x")
    out = run_encoded(device, lambda cb: conv.encode(cb, convt.Image(along("x", SRC_1D))))
    np.testing.assert_array_equal(line(out), AUTOENCODER_DEFAULT[:7])


class TFSamePadding(convt.Padding):
    """Custom hook: TensorFlow SAME for a stride-2 3-tap transpose along x (dst = n*s, T = -1)."""

    def destination_image_descriptor(self, descriptor: Any) -> None:
        descriptor.width = 8
        descriptor.offset_x = -1
        descriptor.kernel_offset_x = 1


def test_custom_padding_hook(device: Any) -> None:
    conv = transpose_1d(device, W3, "x")
    conv.padding = TFSamePadding(PM.SIZE_SAME | PM.CUSTOM)
    out = run_encoded(device, lambda cb: conv.encode(cb, convt.Image(along("x", SRC_1D))))
    np.testing.assert_array_equal(line(out), AUTOENCODER_TF_SAME)
    assert (conv.offset[0], conv.kernel_offset_x) == (-1, 1)


def test_custom_hook_needs_custom_bit(device: Any) -> None:
    conv = transpose_1d(device, W3, "x")
    conv.padding = TFSamePadding(PM.SIZE_SAME)  # hook not run without CUSTOM
    out = run_encoded(device, lambda cb: conv.encode(cb, convt.Image(along("x", SRC_1D))))
    np.testing.assert_array_equal(line(out), SAME_NUMERIC)


def forward_axes(method: int, n_fwd: list, s: list, k: list, d: list) -> list:
    """Forward (dst, offset) per axis, (y, x) order."""
    return [
        R.forward_size_and_offset(method, n_fwd[a], s[a], R.effective_kernel(k[a], d[a]), "yx"[a])
        for a in range(2)
    ]


@pytest.mark.parametrize("case", range(40))
def test_autoencoder_rule_random(device: Any, case: int) -> None:
    """dst = forward source size, T = (k even) - o_forward per axis, on random 2-D geometry."""
    rng = np.random.default_rng([21, case])
    k, s, d, n_fwd = ([int(v) for v in rng.integers(1, hi, 2)] for hi in (6, 4, 3, 11))
    method = (
        [PM.SIZE_VALID_ONLY, PM.SIZE_SAME, PM.SIZE_FULL][int(rng.integers(3))]
        | [0, PM.ALIGN_TOP_LEFT, PM.ALIGN_BOTTOM_RIGHT][int(rng.integers(3))]
        | [0, 4, 8, 12][int(rng.integers(4))]
    )
    fwd = forward_axes(method, n_fwd, s, k, d)
    if min(f[0] for f in fwd) < 1:
        method = PM.SIZE_SAME
        fwd = forward_axes(method, n_fwd, s, k, d)
    state = convt.ConvolutionGradientState.for_forward(
        n_fwd[1],
        n_fwd[0],
        k[1],
        k[0],
        stride_x=s[1],
        stride_y=s[0],
        dilation_x=d[1],
        dilation_y=d[0],
        padding_method=method,
    )
    assert (state.destination_height, state.destination_width) == (fwd[0][0], fwd[1][0])
    assert (state.offset_y, state.offset_x) == (fwd[0][1], fwd[1][1])

    T = tuple(R.autoencoder_override(n_fwd[a], k[a], fwd[a][1])[1] for a in range(2))
    w = rng.uniform(-1, 1, (2, k[0], k[1], 3)).astype(np.float32)
    conv = build_transpose(device, w, stride=s, dilation=d, kernel_weights_dtype="float32")
    src_img = convt.Image(rng.uniform(-1, 1, (1, 3, fwd[0][0], fwd[1][0])).astype(np.float32))
    out = run_encoded(device, lambda cb: conv.encode(cb, src_img, convolution_gradient_state=state))
    assert out.array.shape == (1, 2, n_fwd[0], n_fwd[1])
    assert (conv.offset[0], conv.kernel_offset_x) == R.split(T[1], s[1])
    assert (conv.offset[1], conv.kernel_offset_y) == R.split(T[0], s[0])
    ref = R.conv_transpose_mps(src_img.array, w, stride=s, dilation=d, T=T, dst_hw=n_fwd)
    assert_close(out.array, ref, FP32_TOL, f"case {case}")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_half_accumulator_running_sum(device: Any, dtype: Any) -> None:
    """Adding 3000 ones: a running fp16 sum sticks at 2048 (2049 rounds to even) in any order;
    the float accumulator gives 3000 (representable in fp16 too)."""
    w = np.ones((1, 1, 1, 3000), np.float32)
    src = np.ones((1, 3000, 1, 1), dtype)
    src_img = convt.Image(src)
    results = {}
    for precision in ("half", "float"):
        conv = build_transpose(device, w)
        conv.accumulator_precision = getattr(convt.AccumulatorPrecision, precision)
        results[precision] = run_encoded(device, lambda cb, conv=conv: conv.encode(cb, src_img))
    assert results["half"].array.ravel()[0] == 2048.0
    assert results["float"].array.ravel()[0] == 3000.0
    ref = R.conv_transpose_mps(src, w, T=0, dst_hw=1, accumulator="half")
    assert ref.ravel()[0] == 2048.0
