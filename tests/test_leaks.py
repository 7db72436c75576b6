"""10,000 calls of each entry point leave the resident memory where warm-up left it.

Bound: after WARMUP calls, CALLS more calls may grow the resident set by at most
BOUND_KIB = 1024 KiB (1 MiB), i.e. about 100 bytes per call. Every call allocates and frees its
outputs (or command buffers, states, kernels), so a leak of a single output buffer (>= 200
bytes here), a command buffer or a kernel per call would exceed it. The arrays are small so the
whole file runs in seconds on the CPU device. metal-sim runs its kernels on simulated GPU
threads (about 2 ms a call here), so by default it makes SIM_CALLS = 1,000 calls per entry
point under the same bound; CONVT_SLOW_TESTS=1 (tools/run_long_checks.sh) makes it 10,000.
"""

from __future__ import annotations

import ctypes
import gc
import os
from typing import Any, Callable

import convt
import numpy as np
import pytest
from _helpers import build_transpose_pair

CALLS = 10_000
SIM_CALLS = CALLS if os.environ.get("CONVT_SLOW_TESTS") else 1_000
WARMUP = 500
BOUND_KIB = 1024
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux)"
)


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


def _libc_trim() -> Callable[[], Any]:
    """glibc's malloc_trim(0), else nothing: freed heap memory goes back to the system, so
    what earlier tests freed (arrays of tens of MB) cannot hide a leak that reuses it."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


trim_heap = _libc_trim()


def growth_kib(call: Callable[[], Any], calls: int = CALLS) -> int:
    for _ in range(min(WARMUP, calls)):
        call()
    gc.collect()
    trim_heap()
    before = rss_kib()
    for _ in range(calls):
        call()
    gc.collect()
    trim_heap()
    return rss_kib() - before


def entry_points(device: Any, rng: np.random.Generator) -> dict[str, Callable[[], Any]]:
    x = rng.standard_normal((1, 3, 3, 4)).astype(np.float32)
    w = rng.standard_normal((3, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    y = convt.conv_transpose2d(x, w, b, stride=2, device=device)
    g = rng.standard_normal(y.shape).astype(np.float32)
    layer = convt.ConvTranspose2d(3, 5, 3, stride=2, device=device, seed=1)
    w_mps = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    fwd, grad = build_transpose_pair(device, w_mps, b, stride=2)
    src = convt.Image(x)

    def mps_encode() -> Any:
        cb = convt.CommandBuffer(device)
        out = fwd.encode(cb, src)
        cb.commit()
        cb.wait_until_completed()
        return out

    def mps_gradient() -> Any:
        cb = convt.CommandBuffer(device)
        image, state = fwd.encode(cb, src, destination_state=True)
        dx = grad.encode(cb, convt.Image(np.ones_like(image.array)), src, state)
        cb.commit()
        cb.wait_until_completed()
        return dx

    blob = fwd.to_bytes()
    return {
        "conv_transpose2d": lambda: convt.conv_transpose2d(x, w, b, stride=2, device=device),
        "conv_transpose2d_backward": lambda: convt.conv_transpose2d_backward(
            g, x, w, stride=2, device=device
        ),
        "conv_transpose1d": lambda: convt.conv_transpose1d(
            x[:, :, 0], w[:, :, 0], b, stride=2, device=device
        ),
        "ConvTranspose2d.__call__": lambda: layer(x),
        "ConvolutionTranspose.encode+commit": mps_encode,
        "ConvolutionTransposeGradient.encode": mps_gradient,
        "to_bytes": fwd.to_bytes,
        "from_bytes": lambda: convt.ConvolutionTranspose.from_bytes(blob, device=device),
        "rejected call (ValueError)": lambda: _rejected(x, w, device),
    }


def _rejected(x: np.ndarray, w: np.ndarray, device: Any) -> None:
    """Errors must not leak either (exceptions unwinding through the core)."""
    try:
        convt.conv_transpose2d(x, w, stride=(1, 0), device=device)
    except ValueError:
        return
    raise AssertionError("stride 0 was accepted")


NAMES = [
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "conv_transpose1d",
    "ConvTranspose2d.__call__",
    "ConvolutionTranspose.encode+commit",
    "ConvolutionTransposeGradient.encode",
    "to_bytes",
    "from_bytes",
    "rejected call (ValueError)",
]


@pytest.mark.parametrize("name", NAMES)
def test_no_growth_over_10000_calls(device: Any, rng: np.random.Generator, name: str) -> None:
    calls = entry_points(device, rng)
    assert sorted(calls) == sorted(NAMES)
    n = SIM_CALLS if device.kind == "metal-sim" else CALLS
    grew = growth_kib(calls[name], n)
    print(f"\n{device.kind} {name}: RSS growth over {n} calls: {grew} KiB")
    assert grew <= BOUND_KIB, f"{name}: RSS grew {grew} KiB over {n} calls"


def test_the_bound_catches_a_leak() -> None:
    """Control: a deliberate leak of 256 bytes per call is caught by the same measurement."""
    kept = []
    grew = growth_kib(lambda: kept.append(np.ones(64, np.float32)))
    assert grew > BOUND_KIB, f"a 256-byte-per-call leak grew only {grew} KiB"
