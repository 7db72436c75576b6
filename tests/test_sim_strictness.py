"""The MSL simulation runs barriers and SIMD-group operations like a GPU and reports misuse."""

from __future__ import annotations

import numpy as np
import pytest

convt = pytest.importorskip("convt")
dispatch = getattr(convt._core, "_sim_dispatch", None)
pytestmark = pytest.mark.skipif(dispatch is None, reason="built without the MSL simulation")


def test_barrier_and_simd_operations_compute_what_a_gpu_would() -> None:
    out = np.full(2 * 64, np.nan, np.float32)
    dispatch("convt_test_simd_and_barrier", (2, 1, 1), (64, 1, 1), [out])
    tid = np.arange(64)
    neighbour = (tid + 1) % 64
    first = np.where(tid < 32, 1, 33)  # lane 0's neighbour in each SIMD-group
    want = neighbour + 496 * 1000.0 + first * 1e6
    np.testing.assert_array_equal(out, np.tile(want, 2).astype(np.float32))


@pytest.mark.parametrize(
    "kernel, message",
    [
        ("convt_test_barrier_after_return", r"reached by 7 of 8 threads.*returned"),
        ("convt_test_divergent_barrier", r"divergent threadgroup_barrier"),
    ],
)
def test_barrier_misuse_is_an_error(kernel: str, message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        dispatch(kernel, (1, 1, 1), (8, 1, 1), [np.zeros(8, np.float32)])


def test_partial_simd_group_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"reached by 16 of 32 lanes"):
        dispatch("convt_test_partial_simd", (1, 1, 1), (32, 1, 1), [np.zeros(32, np.float32)])


def test_simd_broadcast_out_of_range_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"simd_broadcast.*lane 40"):
        dispatch(
            "convt_test_simd_broadcast_out_of_range",
            (1, 1, 1),
            (32, 1, 1),
            [np.zeros(32, np.float32)],
        )


def test_threadgroup_size_is_checked() -> None:
    with pytest.raises(RuntimeError, match=r"threads per threadgroup"):
        dispatch(
            "convt_test_barrier_after_return", (1, 1, 1), (2048, 1, 1), [np.zeros(8, np.float32)]
        )


def test_unknown_kernel() -> None:
    with pytest.raises(ValueError, match="no simulated kernel"):
        dispatch("nope", (1, 1, 1), (1, 1, 1), [])
