"""Zero-copy contract: out= and destination images are written in place, Image wraps the caller's
array, results are numpy arrays, strided views and float16 work without staging copies."""

from __future__ import annotations

from typing import Any

import convt
import numpy as np
import pytest
import reference as R
from _helpers import (
    FP16_TOL,
    FP32_TOL,
    assert_close,
    assert_written,
    build_transpose,
    poison,
    run_encoded,
)


def small_problem(rng: np.random.Generator, dtype: Any = np.float32):
    x = rng.uniform(-1, 1, (2, 3, 4, 5)).astype(dtype)
    w = rng.uniform(-0.5, 0.5, (3, 4, 3, 3)).astype(dtype)
    b = rng.uniform(-0.5, 0.5, 4).astype(dtype)
    return x, w, b


def test_out_is_the_buffer_written(device: Any, rng: np.random.Generator) -> None:
    x, w, b = small_problem(rng)
    out = poison(np.empty((2, 4, 8, 10), np.float32))
    address = out.__array_interface__["data"][0]
    got = convt.conv_transpose2d(
        x, w, b, stride=2, padding=1, output_padding=1, out=out, device=device
    )
    assert got is out
    assert out.__array_interface__["data"][0] == address
    ref = R.conv_transpose_torch_ref(x, w, b, stride=2, padding=1, output_padding=1)
    assert_close(out, ref, FP32_TOL, "out=")


def test_out_nhwc(device: Any, rng: np.random.Generator) -> None:
    x, w, b = small_problem(rng)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = poison(np.empty((2, 8, 10, 4), np.float32))
    got = convt.conv_transpose2d(
        x_nhwc, w, b, stride=2, padding=1, output_padding=1, out=out, layout="NHWC", device=device
    )
    assert got is out
    ref = R.conv_transpose_torch_ref(x, w, b, stride=2, padding=1, output_padding=1)
    assert_close(out.transpose(0, 3, 1, 2), ref, FP32_TOL, "out= NHWC")


def test_layer_out(device: Any, rng: np.random.Generator) -> None:
    x, w, b = small_problem(rng)
    layer = convt.ConvTranspose2d(3, 4, 3, stride=2, device=device)
    layer.load_weights(w, b)
    out = poison(np.empty((2, 4, 9, 11), np.float32))
    assert layer(x, out=out) is out
    assert_close(out, R.conv_transpose_torch_ref(x, w, b, stride=2), FP32_TOL, "layer out=")


def test_functional_result_is_fresh_numpy(device: Any, rng: np.random.Generator) -> None:
    x, w, b = small_problem(rng)
    got = convt.conv_transpose2d(x, w, b, device=device)
    assert type(got) is np.ndarray
    assert not np.shares_memory(got, x) and not np.shares_memory(got, w)
    assert got.flags.writeable


def test_image_wraps_the_array() -> None:
    arr = np.zeros((2, 3, 4, 5), np.float32)
    img = convt.Image(arr)
    assert img.array is arr
    assert (img.number_of_images, img.feature_channels, img.height, img.width) == (2, 3, 4, 5)
    assert img.layout == "NCHW" and np.dtype(img.dtype) == np.float32
    nhwc = np.zeros((2, 4, 5, 3), np.float16)
    img = convt.Image(nhwc, layout="NHWC")
    assert img.array is nhwc
    assert (img.number_of_images, img.feature_channels, img.height, img.width) == (2, 3, 4, 5)
    view = np.zeros((2, 8, 8, 12), np.float32)[:, 1::2, ::2, 2:7]
    assert convt.Image(view).array is view


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_image_empty(layout: str) -> None:
    img = convt.Image.empty(2, 3, 4, 5, dtype=np.float16, layout=layout)
    assert isinstance(img.array, np.ndarray) and img.array.dtype == np.float16
    assert img.array.shape == ((2, 3, 4, 5) if layout == "NCHW" else (2, 4, 5, 3))


def test_manual_encode_writes_the_destination_array(device: Any, rng: np.random.Generator) -> None:
    w = rng.uniform(-0.5, 0.5, (4, 3, 3, 3)).astype(np.float32)
    conv = build_transpose(device, w, stride=2, kernel_weights_dtype="float32")
    src = rng.uniform(-1, 1, (1, 3, 4, 5)).astype(np.float32)
    dst = poison(np.empty((1, 4, 7, 9), np.float32))
    dst_img = convt.Image(dst)
    src_img = convt.Image(src)
    res = run_encoded(device, lambda cb: conv.encode(cb, src_img, destination_image=dst_img))
    assert res is dst_img and res.array is dst
    assert_close(dst, R.conv_transpose_mps(src, w, stride=2, T=0, dst_hw=(7, 9)), FP32_TOL, "dst")


def test_destination_view_writes_through(device: Any, rng: np.random.Generator) -> None:
    w = rng.uniform(-0.5, 0.5, (4, 3, 3, 3)).astype(np.float32)
    conv = build_transpose(device, w, stride=2, kernel_weights_dtype="float32")
    src = rng.uniform(-1, 1, (1, 3, 4, 5)).astype(np.float32)
    big = poison(np.empty((1, 9, 14, 12), np.float32))
    view = big[:, 1:9:2, ::2, 3:]  # (1, 4, 7, 9)
    run_encoded(
        device, lambda cb: conv.encode(cb, convt.Image(src), destination_image=convt.Image(view))
    )
    ref = R.conv_transpose_mps(src, w, stride=2, T=0, dst_hw=(7, 9))
    inside = np.zeros(big.shape, bool)
    inside[:, 1:9:2, ::2, 3:] = True
    expected = np.full(big.shape, np.nan)
    expected[inside] = ref.ravel()
    assert_written(big, expected, inside, FP32_TOL, "destination view")


def test_auto_result_is_numpy(device: Any, rng: np.random.Generator) -> None:
    w = rng.uniform(-0.5, 0.5, (4, 3, 3, 3)).astype(np.float32)
    conv = build_transpose(device, w, stride=2)
    src = rng.uniform(-1, 1, (2, 3, 4, 5)).astype(np.float32)
    src_img = convt.Image(src)
    out = run_encoded(device, lambda cb: conv.encode(cb, src_img))
    assert type(out.array) is np.ndarray and out.array.dtype == np.float32
    assert out.array.shape == (2, 4, 7, 9)
    assert not np.shares_memory(out.array, src)


@pytest.mark.parametrize("view", ["channels", "rows", "cols", "transposed", "everything"])
def test_strided_input_views(device: Any, rng: np.random.Generator, view: str) -> None:
    base = rng.uniform(-1, 1, (3, 8, 10, 12)).astype(np.float32)
    before = base.copy()
    x = {
        "channels": base[:2, ::2, :5, :6],  # (2, 4, 5, 6)
        "rows": base[:2, :4, ::2, :6],
        "cols": base[:2, :4, :5, ::2],
        "transposed": base[:2, :5, :6, :4].transpose(0, 3, 1, 2),  # channel-last strides
        "everything": base[::2, 1::2, 1::2, ::2][:, :, :5, :6],
    }[view]
    w = rng.uniform(-0.5, 0.5, (x.shape[1], 3, 2, 3)).astype(np.float32)
    got = convt.conv_transpose2d(x, w, None, stride=(2, 3), padding=(1, 0), device=device)
    assert_close(
        got, R.conv_transpose_torch_ref(x, w, None, stride=(2, 3), padding=(1, 0)), FP32_TOL, view
    )
    np.testing.assert_array_equal(base, before)


def test_nhwc_view_of_nchw_input(device: Any, rng: np.random.Generator) -> None:
    x = rng.uniform(-1, 1, (2, 3, 4, 5)).astype(np.float32)
    w = rng.uniform(-0.5, 0.5, (3, 2, 3, 3)).astype(np.float32)
    got = convt.conv_transpose2d(x.transpose(0, 2, 3, 1), w, stride=2, layout="NHWC", device=device)
    assert got.shape == (2, 9, 11, 2)
    assert_close(
        got.transpose(0, 3, 1, 2), R.conv_transpose_torch_ref(x, w, stride=2), FP32_TOL, "NHWC view"
    )


def test_float16_functional(device: Any, rng: np.random.Generator) -> None:
    x, w, b = small_problem(rng, np.float16)
    got = convt.conv_transpose2d(x, w, b, stride=2, device=device)
    assert got.dtype == np.float16
    ref = R.conv_transpose_torch_ref(x, w, b, stride=2).astype(np.float16)
    assert_close(got, ref, FP16_TOL, "fp16 functional")
    out = poison(np.empty_like(got))
    assert convt.conv_transpose2d(x, w, b, stride=2, out=out, device=device) is out
    assert_close(out, ref, FP16_TOL, "fp16 out=")


def test_float16_images(device: Any, rng: np.random.Generator) -> None:
    w = rng.uniform(-0.5, 0.5, (4, 3, 3, 3)).astype(np.float32)
    conv = build_transpose(device, w, stride=2)
    src = rng.uniform(-1, 1, (1, 3, 4, 5)).astype(np.float16)
    out = run_encoded(device, lambda cb: conv.encode(cb, convt.Image(src)))
    assert out.array.dtype == np.float16
    w16, _ = R.prepare_weights(w)
    ref = R.conv_transpose_mps(src, w16, stride=2, T=0, dst_hw=(7, 9), dst_dtype=np.float16)
    assert_close(out.array, ref, FP16_TOL, "fp16 image")
