"""float16 behaviour, as documented in README.md ("float16"):

* every path accumulates fp16 data in fp32 and rounds once, when storing: partial sums beyond
  the fp16 range (65504) are harmless, a final value that rounds past 65504 becomes +-Inf;
* the rounding at the edge is IEEE round-to-nearest-even: |v| < 65520 gives 65504, >= 65520 Inf;
* accumulator_precision=half (MPS-style API) rounds the running sum to fp16 after every
  multiply-add, starting from fp16(bias), so an intermediate overflow is Inf for good;
* MPS-style kernels store weights as fp16 by default: a weight beyond the fp16 range becomes Inf.
"""

from __future__ import annotations

from typing import Any

import convt
import numpy as np
import pytest
import reference as R
from _helpers import build_transpose, poison, run_encoded

F16_MAX = float(np.finfo(np.float16).max)  # 65504

# Overflowing to Inf is what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def _encode(device: Any, conv: Any, src: np.ndarray, dst_shape: tuple) -> np.ndarray:
    dst = poison(np.empty(dst_shape, np.float16))
    run_encoded(
        device, lambda cb: conv.encode(cb, convt.Image(src), destination_image=convt.Image(dst))
    )
    return dst


def test_functional_accumulates_in_fp32(device: Any, rng: np.random.Generator) -> None:
    # Per output: 40000 + 40000 - 40000 (+ a small random term). An fp16 running sum would be
    # Inf after the second term; fp32 accumulation gives the exact sum, rounded once.
    small = rng.uniform(0.5, 1.0, 7).astype(np.float16)
    x = np.zeros((7, 4, 1, 1), np.float16)
    x[:, :3, 0, 0] = [40000, 40000, -40000]
    x[:, 3, 0, 0] = small
    w = np.ones((4, 1, 1, 1), np.float16)
    got = convt.conv_transpose2d(x, w, device=device)
    expect = (40000.0 + small.astype(np.float64)).astype(np.float16)
    np.testing.assert_array_equal(got.reshape(-1), expect)


def fp16_terms(value: int) -> np.ndarray:
    """Powers of two (each exact in fp16, at most 2^15) that sum to the integer ``value``."""
    sign, rest, terms = (1 if value >= 0 else -1), abs(value), []
    while rest:
        p = min(1 << (rest.bit_length() - 1), 1 << 15)
        terms.append(sign * p)
        rest -= p
    return np.array(terms, np.float16)


@pytest.mark.parametrize(
    "value, expect",
    [
        (65504, F16_MAX),
        (65519, F16_MAX),  # below the midpoint to the next (absent) step: rounds down
        (65520, np.inf),  # the midpoint rounds to even, i.e. overflows
        (70000, np.inf),
        (-65519, -F16_MAX),
        (-65520, -np.inf),
        (4 * 32768 + 7, np.inf),
    ],
)
def test_functional_overflow_at_store(device: Any, value: int, expect: float) -> None:
    # fp16 terms whose fp32 sum is exactly ``value``: only the final rounding decides.
    terms = fp16_terms(value)
    assert terms.astype(np.float64).sum() == value
    x = terms.reshape(1, -1, 1, 1)
    w = np.ones((terms.size, 1, 1, 1), np.float16)
    got = convt.conv_transpose2d(x, w, device=device)
    assert got.dtype == np.float16
    assert got.reshape(-1)[0] == expect


def test_backward_accumulates_in_fp32(device: Any, rng: np.random.Generator) -> None:
    """grad_weight and grad_bias sum over the batch and pixels in fp32, then round once."""
    g = np.array([40000, 40000, -40000, 3], np.float16).reshape(1, 1, 1, 4)
    x = np.ones((1, 1, 1, 4), np.float16)
    w = np.full((1, 1, 1, 1), 0.5, np.float16)
    gi, gw, gb = convt.conv_transpose2d_backward(g, x, w, device=device)
    assert gw.dtype == gb.dtype == gi.dtype == np.float16
    assert gb[0] == 40003 and gw.reshape(-1)[0] == 40003
    np.testing.assert_array_equal(gi.reshape(-1), (g.astype(np.float32) * 0.5).reshape(-1))
    # And a sum that really leaves the fp16 range becomes +Inf.
    g2 = np.full((3, 1, 5, 5), 3000, np.float16)
    _, gw2, gb2 = convt.conv_transpose2d_backward(g2, np.ones_like(g2), w, device=device)
    assert gb2[0] == np.inf and gw2.reshape(-1)[0] == np.inf


@pytest.mark.parametrize("accumulator", ["float", "half"])
@pytest.mark.parametrize("bias", [65518.0, 65519.0, 65520.0, -65521.0, 1e6])
def test_mps_bias_near_fp16_max(device: Any, accumulator: str, bias: float) -> None:
    """Output = 1 * 1 + bias into an fp16 image. The float accumulator rounds bias + 1 once; the
    half accumulator rounds the bias to fp16 first (65519 -> 65504) and then the sum."""
    w = np.ones((1, 1, 1, 1), np.float32)
    conv = build_transpose(device, w, np.array([bias], np.float32))
    conv.accumulator_precision = getattr(convt.AccumulatorPrecision, accumulator)
    got = _encode(device, conv, np.ones((1, 1, 1, 1), np.float16), (1, 1, 1, 1))[0, 0, 0, 0]
    if accumulator == "float":
        expect = np.float16(np.float32(bias) + 1)
    else:
        expect = np.float16(np.float32(np.float16(np.float32(bias))) + 1)
    assert got == expect or (np.isnan(got) and np.isnan(expect))
    ref = R.conv_transpose_mps(
        np.ones((1, 1, 1, 1)),
        w,
        np.array([bias]),
        dst_hw=1,
        accumulator=accumulator,
        dst_dtype=np.float16,
    )
    assert got == ref[0, 0, 0, 0]


def test_mps_half_accumulator_overflow_is_sticky(device: Any, rng: np.random.Generator) -> None:
    """Taps 40000, 40000, -40000 in (ky, kx, channel) order: the fp16 running sum overflows at
    the second tap and Inf - 40000 stays Inf; the float accumulator returns 40000 (+ small)."""
    src = np.array([40000, 40000, -40000], np.float16).reshape(1, 3, 1, 1)
    small = float(rng.uniform(0.5, 1.0))
    src = np.concatenate([src, np.full((1, 1, 1, 1), small, np.float16)], axis=1)
    w = np.ones((1, 1, 1, 4), np.float32)
    results = {}
    for acc in ("half", "float"):
        conv = build_transpose(device, w)
        conv.accumulator_precision = getattr(convt.AccumulatorPrecision, acc)
        results[acc] = _encode(device, conv, src, (1, 1, 1, 1))[0, 0, 0, 0]
        ref = R.conv_transpose_mps(src, w, dst_hw=1, accumulator=acc, dst_dtype=np.float16)
        assert results[acc] == ref[0, 0, 0, 0], acc
    assert results["half"] == np.inf
    assert results["float"] == np.float16(40000 + float(np.float16(small)))


def test_mps_fp16_weight_storage_overflows(device: Any, rng: np.random.Generator) -> None:
    """Weights beyond 65504 become Inf under the default fp16 kernel weights, not with float32
    kernel weights (and never in the PyTorch-convention API, which keeps fp32 weights)."""
    w = np.array([1e5, 2.0], np.float32).reshape(2, 1, 1, 1)
    src = rng.uniform(0.5, 1.0, (1, 1, 2, 3)).astype(np.float32)
    for kernel_weights, first in (("float16", np.inf), ("float32", None)):
        conv = build_transpose(device, w, kernel_weights_dtype=kernel_weights)
        dst = poison(np.empty((1, 2, 2, 3), np.float32))
        run_encoded(
            device,
            lambda cb, conv=conv, dst=dst: conv.encode(
                cb, convt.Image(src), destination_image=convt.Image(dst)
            ),
        )
        expect0 = np.inf if first == np.inf else src[0, 0] * np.float32(1e5)
        np.testing.assert_allclose(dst[0, 0], expect0, rtol=1e-6)
        np.testing.assert_allclose(dst[0, 1], src[0, 0] * 2, rtol=1e-6)
    x = src.reshape(1, 1, 2, 3)
    got = convt.conv_transpose2d(x, w.reshape(1, 2, 1, 1), device=device)
    np.testing.assert_allclose(got[0, 0], x[0, 0] * np.float32(1e5), rtol=1e-6)


def test_fp16_input_values_are_taken_as_stored(device: Any) -> None:
    """Inf and subnormal fp16 inputs are read as they are (no flush to zero)."""
    sub = np.float16(2.0**-20)  # subnormal in fp16
    x = np.array([sub, np.inf, -np.inf], np.float16).reshape(1, 3, 1, 1)
    w = np.ones((3, 1, 1, 1), np.float16)
    got = convt.conv_transpose2d(x, w, groups=3, device=device).reshape(-1)
    assert got[0] == sub and got[1] == np.inf and got[2] == -np.inf
