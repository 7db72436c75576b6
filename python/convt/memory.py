"""Arrays that every device can use in place."""

from __future__ import annotations

import numpy as np

#: Alignment of ``empty_aligned`` arrays: the largest page size of the supported systems
#: (16 KiB on Apple silicon; a multiple of 4 KiB pages elsewhere).
ALIGNMENT = 16384


def empty_aligned(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose memory starts on a page boundary and spans
    whole pages, so the Metal device wraps it without a copy (``copy=False`` accepts it)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    padded = -(-max(nbytes, 1) // ALIGNMENT) * ALIGNMENT
    raw = np.empty(padded + ALIGNMENT, np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)
