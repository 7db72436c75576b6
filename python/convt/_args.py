"""Argument normalisation shared by the PyTorch-convention API (no maths here)."""

from __future__ import annotations

import sys
from typing import Union

import numpy as np

from ._core import Device, default_device

IntOrPair = Union[int, tuple[int, int]]


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _int64(value: object, name: str) -> int:
    """int(value), refused by name when the core's 64-bit integers cannot hold it."""
    v = int(value)  # type: ignore[call-overload]
    if not INT64_MIN <= v <= INT64_MAX:
        raise ValueError(f"{name} must fit in a signed 64-bit integer, got {v}")
    return v


def pair(value: IntOrPair, name: str) -> tuple[int, int]:
    """An int or a pair of ints as (height, width)."""
    if _is_int(value):
        v = _int64(value, name)
        return v, v
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        return _int64(value[0], name), _int64(value[1], name)
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def single(value: int | tuple[int], name: str) -> int:
    """An int or a 1-tuple of an int (conv_transpose1d's parameters)."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if _is_int(value):
        return _int64(value, name)
    raise TypeError(f"{name} must be an int, got {value!r}")


def integer(value: object, name: str) -> int:
    if _is_int(value):
        return _int64(value, name)
    raise TypeError(f"{name} must be an int, got {value!r}")


def name_setter_errors(cls: type, names: dict[str, str]) -> None:
    """Makes the pybind11 property setters of ``cls`` raise a TypeError that names the property
    (pybind11's own message says only "incompatible function arguments ... arg0").
    ``names`` maps each property to what it accepts, for the message."""
    for name, accepts in names.items():
        owner = next(c for c in cls.__mro__ if name in c.__dict__)
        prop = owner.__dict__[name]

        def fset(self, value, _set=prop.fset, _name=name, _accepts=accepts):
            try:
                _set(self, value)
            except TypeError as e:
                if _name in str(e):
                    raise
                raise TypeError(f"{_name} must be {_accepts}, got {value!r}") from None

        setattr(owner, name, property(prop.fget, fset, doc=prop.__doc__))


def device(value: Device | None) -> Device:
    if value is None:
        return default_device()
    if isinstance(value, str):
        return Device(value)
    if not isinstance(value, Device):
        raise TypeError(f"device must be a convt.Device, a kind string or None, got {value!r}")
    return value


def layout_2d(layout: str) -> str:
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    return layout


def layout_1d(layout: str) -> str:
    """'NCL'/'NLC' as the 2-D layout of the (N, C, 1, L) / (N, 1, L, C) view."""
    table = {"NCL": "NCHW", "NLC": "NHWC"}
    if layout not in table:
        raise ValueError(f"layout must be 'NCL' or 'NLC', got {layout!r}")
    return table[layout]


def as_2d_view(array: object, layout_1d: str, name: str) -> object:
    """A (N, C, L) / (N, L, C) array viewed (never copied) as 4-D with a unit height."""
    if not is_array(array):
        raise TypeError(
            f"{name} must be a numpy.ndarray or a DLPack tensor, got {type(array).__name__}"
        )
    if array.ndim != 3:
        raise ValueError(f"{name} must be 3-D ({layout_1d}), got {array.ndim}-D")
    return array[:, :, None, :] if layout_1d == "NCL" else array[:, None, :, :]


def is_array(value: object) -> bool:
    """A numpy array, or a tensor that speaks DLPack (PyTorch, CuPy, JAX, ...)."""
    return isinstance(value, np.ndarray) or (
        hasattr(value, "__dlpack__") and hasattr(value, "__dlpack_device__")
    )


def on_gpu(x: object) -> bool:
    """Whether x is a DLPack tensor in CUDA device (or managed) memory."""
    if isinstance(x, np.ndarray) or not hasattr(x, "__dlpack_device__"):
        return False
    return x.__dlpack_device__()[0] in (2, 13)  # kDLCUDA, kDLCUDAManaged


def empty_like_input(x: object, shape: tuple[int, ...], name: str, aligned: bool = False) -> object:
    """An uninitialised array of ``shape`` in x's dtype, from x's own library and on x's device
    (a CUDA tensor gives a CUDA tensor): numpy arrays give numpy arrays (page-aligned when
    ``aligned``), PyTorch tensors ``x.new_empty``, array-API arrays ``xp.empty``, and other
    libraries (CuPy) their own top-level ``empty``."""
    from .memory import empty_aligned

    if isinstance(x, np.ndarray):
        return empty_aligned(shape, x.dtype) if aligned else np.empty(shape, dtype=x.dtype)
    if hasattr(x, "new_empty") and hasattr(x, "__dlpack__"):  # torch.Tensor
        return x.new_empty(shape)
    if hasattr(x, "__array_namespace__"):
        xp = x.__array_namespace__()
        return xp.empty(shape, dtype=x.dtype, device=x.device)
    module = sys.modules.get(type(x).__module__.split(".")[0])
    if module is not None and hasattr(module, "empty"):  # CuPy: cupy.empty on x's device
        return module.empty(shape, dtype=x.dtype)
    raise TypeError(
        f"{name} must be a numpy.ndarray, a torch.Tensor or an array-API array to allocate the "
        f"result like it, got {type(x).__name__}; pass out= instead"
    )
