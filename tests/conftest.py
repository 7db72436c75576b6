"""Shared fixtures. convt is imported lazily so that the oracle tests run without a build."""

from __future__ import annotations

import os
import sys
import zlib
from typing import Any

import numpy as np
import pytest

# Make tests/reference.py and tests/_helpers.py importable under any pytest import mode.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _helpers import (  # noqa: E402  (re-exported for convenience)
    BACKENDS,
    FP16_TOL,
    FP32_TOL,
    poison,
    rel_err,
)

__all__ = ["FP16_TOL", "FP32_TOL", "poison", "rel_err"]

# The CPU backend's dW scratch starts as NaN in every test (convt reads this per call), so a dW
# path that leaves a weight unwritten fails whichever test reaches it.
os.environ.setdefault("CONVT_POISON_SCRATCH", "1")


@pytest.fixture(params=BACKENDS)
def device(request: pytest.FixtureRequest) -> Any:
    """A convt.Device for each backend this build offers; the others are skipped."""
    import convt

    for dev in convt.devices():
        if dev.kind == request.param:
            return dev
    pytest.skip(f"backend {request.param!r} not available in this build")


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test id (minus the backend): reproducible, different per
    test, and the same data on every backend."""
    key = request.node.nodeid.split("[")[0]
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None:
        key += repr(sorted((k, repr(v)) for k, v in callspec.params.items() if k != "device"))
    return np.random.default_rng(zlib.crc32(key.encode()))


@pytest.fixture
def dw_kernel(monkeypatch: pytest.MonkeyPatch):
    """select(mode, splits=None): the GPU dW kernel (CONVT_GPU_DW: auto, direct, taps, gemm) and
    a forced slice count (CONVT_GPU_DW_SPLITS) for the rest of the test (GPU backends read them)."""

    def select(mode: str, splits: int | None = None) -> None:
        monkeypatch.setenv("CONVT_GPU_DW", mode)
        if splits is None:
            monkeypatch.delenv("CONVT_GPU_DW_SPLITS", raising=False)
        else:
            monkeypatch.setenv("CONVT_GPU_DW_SPLITS", str(splits))

    return select
