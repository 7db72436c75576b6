"""Arrays that every device can use in place."""

from __future__ import annotations

import math

import numpy as np

#: Alignment of ``empty_aligned`` arrays: the largest page size of the supported systems
#: (16 KiB on Apple silicon; a multiple of 4 KiB pages elsewhere).
ALIGNMENT = 16384


def empty_aligned(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose memory starts on a page boundary and spans
    whole pages, so the Metal device wraps it without a copy (``copy=False`` accepts it)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not have negative sizes, got {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > 2**62:
        raise ValueError(f"shape must describe fewer than 2^62 bytes, got {shape} of {dtype}")
    padded = -(-max(nbytes, 1) // ALIGNMENT) * ALIGNMENT
    raw = np.empty(padded + ALIGNMENT, np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)
