"""Many encodes in one command buffer: later work sees what earlier work wrote."""

from __future__ import annotations

from typing import Any

import numpy as np
import reference as R
from _helpers import FP32_TOL, assert_close


def _kernel(convt: Any, device: Any, w: np.ndarray) -> Any:
    cout, k, _, cin = w.shape
    desc = convt.ConvolutionDescriptor(k, k, cin, cout)
    desc.stride_in_pixels_x = desc.stride_in_pixels_y = 2
    source = convt.ArrayDataSource(desc, w, kernel_weights_data_type=convt.DataType.float32)
    return convt.ConvolutionTranspose(device, source)


def test_chained_encodes_in_one_command_buffer(device: Any, rng: np.random.Generator) -> None:
    """Two layers in one command buffer; the second reads the first's output either as the same
    array or through a view that overlaps it (channels 1..), which a device that stages memory
    must hand over correctly."""
    import convt

    x = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    w1 = rng.standard_normal((6, 3, 3, 5)).astype(np.float32)
    for sliced in (False, True):
        w2 = rng.standard_normal((3, 3, 3, 5 if sliced else 6)).astype(np.float32)
        k1, k2 = _kernel(convt, device, w1), _kernel(convt, device, w2)
        cb = convt.CommandBuffer(device)
        y = k1.encode(cb, convt.Image(x))
        z = k2.encode(cb, convt.Image(y.array[:, 1:]) if sliced else y)
        cb.commit()
        cb.wait_until_completed()
        t1 = (k1.offset[1] * 2 + k1.kernel_offset_y, k1.offset[0] * 2 + k1.kernel_offset_x)
        y_ref = R.conv_transpose_mps(x, w1, None, stride=2, T=t1, dst_hw=y.array.shape[2:])
        assert_close(y.array, y_ref, FP32_TOL, "first layer")
        t2 = (k2.offset[1] * 2 + k2.kernel_offset_y, k2.offset[0] * 2 + k2.kernel_offset_x)
        src = y_ref[:, 1:] if sliced else y_ref
        z_ref = R.conv_transpose_mps(src, w2, None, stride=2, T=t2, dst_hw=z.array.shape[2:])
        assert_close(z.array, z_ref, FP32_TOL, f"second layer (sliced={sliced})")
