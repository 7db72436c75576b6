"""copy=False and convt.empty_aligned: devices use caller memory in place or refuse loudly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference as R
from _helpers import FP32_TOL, assert_close


def test_empty_aligned_is_page_aligned() -> None:
    import convt

    for shape, dtype in (((3, 5, 7, 2), np.float32), (10, np.float16), ((0, 4), np.float32)):
        a = convt.empty_aligned(shape, dtype)
        assert a.dtype == dtype and a.flags.c_contiguous
        assert a.shape == ((shape,) if isinstance(shape, int) else shape)
        if a.size:  # an empty array has no memory to wrap
            assert a.ctypes.data % convt.memory.ALIGNMENT == 0


def _problem(rng: np.random.Generator, aligned: bool) -> tuple[np.ndarray, np.ndarray]:
    import convt

    x = rng.standard_normal((2, 6, 5, 4)).astype(np.float32)
    if aligned:
        buf = convt.empty_aligned(x.shape, np.float32)
        buf[...] = x
        x = buf
    else:
        x = np.empty(x.size + 1, np.float32)[1:].reshape(x.shape)  # 4 bytes past any page start
        x[...] = rng.standard_normal(x.shape)
    return x, rng.standard_normal((6, 3, 3, 3)).astype(np.float32)


def test_copy_false_with_aligned_memory(device: Any, rng: np.random.Generator) -> None:
    import convt

    x, w = _problem(rng, aligned=True)
    if device.kind == "cuda":  # host memory, aligned or not, is copied to the GPU: refused
        with pytest.raises(ValueError, match="host memory.*copy=False"):
            convt.conv_transpose2d(x, w, stride=2, padding=1, device=device, copy=False)
        return
    out = convt.conv_transpose2d(x, w, stride=2, padding=1, device=device, copy=False)
    assert out.ctypes.data % convt.memory.ALIGNMENT == 0  # allocated so that it qualifies
    assert_close(out, R.conv_transpose_torch_ref(x, w, None, 2, 1), FP32_TOL, "copy=False")


def test_copy_false_refuses_staging_on_metal(device: Any, rng: np.random.Generator) -> None:
    import convt

    x, w = _problem(rng, aligned=False)
    if device.kind in ("metal", "metal-sim"):
        with pytest.raises(ValueError, match="page-aligned.*copy=False"):
            convt.conv_transpose2d(x, w, stride=2, padding=1, device=device, copy=False)
    elif device.kind == "cuda":
        with pytest.raises(ValueError, match="host memory.*copy=False"):
            convt.conv_transpose2d(x, w, stride=2, padding=1, device=device, copy=False)
    else:  # the CPU reads any memory in place: nothing to refuse
        out = convt.conv_transpose2d(x, w, stride=2, padding=1, device=device, copy=False)
        assert_close(out, R.conv_transpose_torch_ref(x, w, None, 2, 1), FP32_TOL, "cpu")
    # With copies allowed the same unaligned input works everywhere.
    out = convt.conv_transpose2d(x, w, stride=2, padding=1, device=device)
    assert_close(out, R.conv_transpose_torch_ref(x, w, None, 2, 1), FP32_TOL, "staged")


def test_image_copy_flag(device: Any, rng: np.random.Generator) -> None:
    import convt

    x, _ = _problem(rng, aligned=False)
    desc = convt.ConvolutionDescriptor(3, 3, 6, 4)
    kernel = convt.ConvolutionTranspose(
        device, convt.ArrayDataSource(desc, rng.standard_normal((4, 3, 3, 6)).astype(np.float32))
    )
    cb = convt.CommandBuffer(device)
    if device.kind in ("metal", "metal-sim"):
        with pytest.raises(ValueError, match="page-aligned"):
            kernel.encode(cb, convt.Image(x, copy=False))
    aligned = convt.Image.empty(2, 6, 5, 4, copy=False)
    assert aligned.array.ctypes.data % convt.memory.ALIGNMENT == 0
    aligned.array[...] = x
    if device.kind == "cuda":
        with pytest.raises(ValueError, match="host memory.*copy=False"):
            kernel.encode(cb, aligned)
        return
    out = kernel.encode(cb, aligned)
    cb.commit()
    cb.wait_until_completed()
    assert out.copy is False and out.array.ctypes.data % convt.memory.ALIGNMENT == 0
