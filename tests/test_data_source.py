"""DataSource subclassed in Python: lifecycle, validation of what it returns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference as R
from _helpers import FP32_TOL, assert_close


def _desc(convt: Any, k: int = 3, cin: int = 7, cout: int = 5) -> Any:
    d = convt.ConvolutionDescriptor(k, k, cin, cout)
    d.stride_in_pixels_x = d.stride_in_pixels_y = 2
    return d


def _source_class(convt: Any) -> type:
    class Recording(convt.DataSource):
        """Weights live here; records the calls MPS makes."""

        def __init__(self, desc: Any, w: np.ndarray, b: np.ndarray | None) -> None:
            super().__init__()
            self.desc, self.w, self.b, self.calls = desc, w, b, []

        def descriptor(self) -> Any:
            return self.desc

        def data_type(self) -> Any:
            return convt.DataType.float32

        def weights(self) -> np.ndarray:
            self.calls.append("weights")
            return self.w

        def bias_terms(self) -> np.ndarray | None:
            return self.b

        def load(self) -> bool:
            self.calls.append("load")
            return True

        def purge(self) -> None:
            self.calls.append("purge")

        def label(self) -> str:
            return "decoder.up1"

        def kernel_weights_data_type(self) -> Any:
            return convt.DataType.float32

    return Recording


def test_python_subclass_drives_the_kernel(device: Any, rng: np.random.Generator) -> None:
    import convt

    desc = _desc(convt)
    w = rng.standard_normal((5, 3, 3, 7)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    ds = _source_class(convt)(desc, w, b)
    kernel = convt.ConvolutionTranspose(device, ds)
    assert ds.calls == ["load", "weights", "purge"]
    assert kernel.label == "decoder.up1"
    assert kernel.data_source is ds
    x = rng.standard_normal((2, 7, 4, 5)).astype(np.float32)
    cb = convt.CommandBuffer(device)
    out = kernel.encode(cb, convt.Image(x))
    cb.commit()
    cb.wait_until_completed()
    assert cb.status == "completed" and cb.error is None
    ref = R.conv_transpose_mps(
        x,
        w,
        b,
        stride=(2, 2),
        dilation=(1, 1),
        groups=1,
        T=(
            kernel.offset[1] * 2 + kernel.kernel_offset_y,
            kernel.offset[0] * 2 + kernel.kernel_offset_x,
        ),
        dst_hw=out.array.shape[2:],
    )
    assert_close(out.array, ref, FP32_TOL, "python data source")


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (lambda w: w.astype(np.float64), TypeError, "weights.*dtype"),
        (lambda w: w[:-1], ValueError, "weights.*size"),
        (lambda w: w.tolist(), TypeError, "weights.*ndarray"),
    ],
)
def test_python_subclass_bad_weights(
    device: Any, rng: np.random.Generator, bad, error, match
) -> None:
    import convt

    w = rng.standard_normal((5, 3, 3, 7)).astype(np.float32)
    ds = _source_class(convt)(_desc(convt), bad(w), None)
    with pytest.raises(error, match=match):
        convt.ConvolutionTranspose(device, ds)
    assert ds.calls[-1] == "purge"  # purge runs however preparation ends


def test_python_subclass_load_false(device: Any, rng: np.random.Generator) -> None:
    import convt

    cls = _source_class(convt)
    ds = cls(_desc(convt), rng.standard_normal((5, 3, 3, 7)).astype(np.float32), None)
    ds.load = lambda: False
    with pytest.raises(RuntimeError, match="load"):
        convt.ConvolutionTranspose(device, ds)


def test_missing_methods_are_named(device: Any) -> None:
    import convt

    class Empty(convt.DataSource):
        pass

    with pytest.raises((TypeError, RuntimeError), match="descriptor|data_type|weights"):
        convt.ConvolutionTranspose(device, Empty())
