"""Sizes near 2^31, negative strides, thread counts and the GIL."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import reference as R
from _helpers import FP32_TOL, assert_close


def test_sizes_beyond_32_bits_are_rejected(device: Any) -> None:
    import convt

    w = np.ones((1, 1, 1, 1), np.float32)
    base = np.zeros(1, np.float32)
    # A 2^31-wide input that takes no memory (stride 0): rejected by name, nothing is read.
    huge = np.lib.stride_tricks.as_strided(base, shape=(1, 1, 1, 2**31), strides=(0, 0, 0, 0))
    with pytest.raises(ValueError, match="width.*2\\^31"):
        convt.conv_transpose2d(huge, w, device=device)
    # An output that would be 2^31 wide, from a valid input.
    x = np.ones((1, 1, 1, 2), np.float32)
    with pytest.raises(ValueError, match="stride"):
        convt.conv_transpose2d(x, w, stride=(1, 2**31), device=device)


def test_negative_stride_views(device: Any, rng: np.random.Generator) -> None:
    import convt

    x = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)
    w = rng.standard_normal((6, 3, 3, 2)).astype(np.float32)
    view = x[::-1, :, ::-1, ::-2]  # negative strides on three axes
    ref = R.conv_transpose_torch_ref(view.copy(), w, None, 2, 1, 1, 2, 1)
    out = np.full((2, 6, 10, 7), np.nan, np.float32)[:, :, ::-1, ::-1]
    got = convt.conv_transpose2d(view, w, None, 2, 1, 1, 2, 1, out=out, device=device)
    assert got is out
    assert_close(out, ref, FP32_TOL, "negative strides")


def test_forward_is_bitwise_identical_across_thread_counts(
    device: Any, rng: np.random.Generator
) -> None:
    import convt

    x = rng.standard_normal((3, 23, 9, 11)).astype(np.float32)
    w = rng.standard_normal((23, 7, 4, 4)).astype(np.float32)
    before = convt.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            convt.set_num_threads(n)
            results.append(convt.conv_transpose2d(x, w, stride=2, padding=1, device=device))
    finally:
        convt.set_num_threads(before)
    assert all(np.array_equal(results[0], r) for r in results[1:])


def test_num_threads_rejects_zero() -> None:
    import convt

    with pytest.raises(ValueError, match="num_threads"):
        convt.set_num_threads(0)


def test_compute_releases_the_gil(device: Any) -> None:
    import convt

    layer = convt.ConvTranspose2d(256, 256, 4, stride=2, padding=1, device=device, seed=1)
    x = np.ones((4, 256, 16, 16), np.float32)
    ticks = []
    done = threading.Event()

    def ticker() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        start = time.perf_counter()
        layer(x)
        end = time.perf_counter()
    finally:
        done.set()
        t.join()
    during = [s for s in ticks if start < s < end]
    # With the GIL held for the whole call the ticker could not run at all inside it.
    assert len(during) >= 3, f"{len(during)} ticks during a {1e3 * (end - start):.0f} ms call"
