"""Saving and loading kernels: bytes, files and pickle (the NSCoding analogue)."""

from __future__ import annotations

import os
from typing import TypeVar

from . import _args
from ._core import Device

K = TypeVar("K", bound="Serializable")


class Serializable:
    """Mixed into the kernel classes. ``_core_class`` is the C++ base: it provides
    ``to_bytes()`` and an ``__init__(device, data)`` that loads bytes (ValueError on bad data)."""

    _core_class: type

    def save(self, path: str | os.PathLike) -> None:
        """Writes ``to_bytes()`` to ``path``."""
        with open(path, "wb") as f:
            f.write(self.to_bytes())

    @classmethod
    def from_bytes(cls: type[K], data: bytes, device: Device | None = None) -> K:
        """A kernel loaded from ``to_bytes()`` output, on ``device`` (default device if None)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        obj = cls.__new__(cls)
        cls.__mro__[cls.__mro__.index(Serializable) + 1].__init__(
            obj, _args.device(device), bytes(data)
        )
        obj._data_source = obj._core_data_source
        obj._after_load()
        return obj

    @classmethod
    def load(cls: type[K], path: str | os.PathLike, device: Device | None = None) -> K:
        """A kernel loaded from a file written by ``save``."""
        with open(path, "rb") as f:
            return cls.from_bytes(f.read(), device)

    def _after_load(self) -> None:
        """Restores Python-side state after loading."""

    def __reduce__(self):
        # Unpickling loads onto a device of the same kind (an error if there is none).
        return (_restore, (type(self), self.to_bytes(), self.device.kind, self._pickled_extras()))

    def _pickled_extras(self) -> dict:
        return {}


def _restore(cls, data: bytes, device_kind: str, extras: dict):
    obj = cls.from_bytes(data, Device(device_kind))
    for name, value in extras.items():
        setattr(obj, name, value)
    return obj
