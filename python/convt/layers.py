"""Layer objects in PyTorch conventions: weights are prepared once, calls reuse them."""

from __future__ import annotations

import math

import numpy as np

from . import _args
from ._core import Device, _ConvTransposeLayer


class _ConvTransposeNd:
    """Shared body of ConvTranspose1d/2d; ``_spatial`` is 1 or 2."""

    _spatial = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups: int = 1,
        bias: bool = True,
        dilation=1,
        *,
        dtype=np.float32,
        layout: str | None = None,
        device: Device | None = None,
        seed: int | None = None,
    ) -> None:
        self.in_channels = _args.integer(in_channels, "in_channels")
        self.out_channels = _args.integer(out_channels, "out_channels")
        self.groups = _args.integer(groups, "groups")
        norm = self._norm
        self.kernel_size = norm(kernel_size, "kernel_size")
        self.stride = norm(stride, "stride")
        self.padding = norm(padding, "padding")
        self.output_padding = norm(output_padding, "output_padding")
        self.dilation = norm(dilation, "dilation")
        self.device = _args.device(device)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float16, got {dtype!r}") from None
        if self.dtype not in (np.float32, np.float16):
            raise TypeError(f"dtype must be float32 or float16, got {self.dtype}")
        self.layout = self._default_layout if layout is None else layout
        self._layout4 = self._layout_4d(self.layout)
        for name in ("in_channels", "out_channels", "groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.out_channels % self.groups:
            raise ValueError(
                f"out_channels must be divisible by groups, got out_channels={self.out_channels}, "
                f"groups={self.groups}"
            )
        if any(k < 1 for k in self.kernel_size):
            raise ValueError(f"kernel_size must be >= 1, got {self.kernel_size}")
        # Checked before the weights are allocated (the core rejects the same sizes later).
        for name in ("in_channels", "out_channels", "kernel_size"):
            if any(v > 2**31 - 1 for v in np.atleast_1d(getattr(self, name))):
                raise ValueError(f"{name} must be <= 2^31-1, got {getattr(self, name)}")
        # PyTorch's default initialisation: U(-b, b), b = 1/sqrt(fan_in), fan_in = Cout/g * prod(k).
        rng = np.random.default_rng(seed)
        shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        bound = 1.0 / math.sqrt(shape[1] * math.prod(self.kernel_size))
        weight = rng.uniform(-bound, bound, shape).astype(self.dtype)
        b = rng.uniform(-bound, bound, self.out_channels).astype(self.dtype) if bias else None
        self.load_weights(weight, b)

    @property
    def weight(self) -> np.ndarray:
        """PyTorch layout (Cin, Cout/groups, *kernel_size); read-only, use load_weights()."""
        return self._weight

    @property
    def bias(self) -> np.ndarray | None:
        return self._bias

    def load_weights(self, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
        """Replaces the weights (and bias) and prepares them once for every later call."""
        if not isinstance(weight, np.ndarray):
            raise TypeError(f"weight must be a numpy.ndarray, got {type(weight).__name__}")
        want = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        if weight.shape != want:
            raise ValueError(f"weight shape must be {want}, got {weight.shape}")
        if weight.dtype != self.dtype:
            raise TypeError(f"weight dtype must be {self.dtype}, got {weight.dtype}")
        weight4 = weight if self._spatial == 2 else weight[:, :, None, :]
        s, p, op, d = (
            v if self._spatial == 2 else (fill, v[0])
            for v, fill in (
                (self.stride, 1),
                (self.padding, 0),
                (self.output_padding, 0),
                (self.dilation, 1),
            )
        )
        self._layer = _ConvTransposeLayer(self.device, weight4, bias, s, p, op, d, self.groups)
        self._weight = weight.copy()
        self._weight.flags.writeable = False
        self._bias = None if bias is None else np.array(bias, copy=True)
        if self._bias is not None:
            self._bias.flags.writeable = False

    def __call__(
        self, x: np.ndarray, out: np.ndarray | None = None, output_size=None, *, copy: bool = True
    ) -> np.ndarray:
        """Runs the layer; ``out`` is written in place and returned when given.

        ``output_size`` picks the output's spatial size, as in PyTorch (trailing dims are used).
        ``copy=False`` forbids staging copies (see ``convt.conv_transpose2d``).
        """
        size = None
        if output_size is not None:
            try:
                size = tuple(_args.integer(v, "output_size") for v in output_size)
            except TypeError:
                raise TypeError(
                    f"output_size must be a sequence of ints, got {output_size!r}"
                ) from None
            size = size[-self._spatial :]
            if len(size) != self._spatial:
                raise ValueError(
                    f"output_size must give {self._spatial} spatial sizes, got {output_size!r}"
                )
            size = size if self._spatial == 2 else (1, size[0])
        x4 = self._view(x, "x")
        if out is None:
            shape = self._layer.output_shape(x4, self._layout4, size)
            if self._spatial == 1:
                shape = (
                    (shape[0], shape[1], shape[3])
                    if self.layout == "NCL"
                    else (shape[0], shape[2], shape[3])
                )
            out = _args.empty_like_input(x, shape, "x", aligned=not copy)
        self._layer.forward(x4, self._view(out, "out"), self._layout4, size, copy)
        return out

    def backward(self, x, grad_output, output_mask=(True, True, True), *, out=None):
        """Gradients ``(grad_input, grad_weight, grad_bias)`` of this layer's forward, with the
        weights prepared once (unlike ``conv_transpose2d_backward``). grad_input is allocated like
        x (on x's device); grad_weight (PyTorch layout) and grad_bias too when x is GPU memory,
        else they are numpy arrays. Entries whose ``output_mask`` flag is False are None;
        grad_bias is None for a layer without bias. ``out``, if given, is
        ``(grad_input, grad_weight, grad_bias)``: arrays overwritten in place and returned, or
        None to allocate (None where a gradient is not computed).
        """
        from .functional import _backward

        mask = tuple(output_mask)
        if len(mask) == 3 and self._bias is None:
            mask = (mask[0], mask[1], False)
        return _backward(
            self._layer,
            x,
            grad_output,
            self._layout4,
            mask,
            self._weight.shape,
            self._view,
            out,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"output_padding={self.output_padding}, groups={self.groups}, "
            f"dilation={self.dilation}, dtype={self.dtype}, layout={self.layout!r})"
        )


class ConvTranspose2d(_ConvTransposeNd):
    """Drop-in for ``torch.nn.ConvTranspose2d`` on numpy arrays (layout "NCHW" or "NHWC")."""

    _spatial = 2
    _default_layout = "NCHW"

    @staticmethod
    def _norm(v, name):
        return _args.pair(v, name)

    @staticmethod
    def _layout_4d(layout):
        return _args.layout_2d(layout)

    def _view(self, a, name):
        return a


class ConvTranspose1d(_ConvTransposeNd):
    """Drop-in for ``torch.nn.ConvTranspose1d`` on numpy arrays (layout "NCL" or "NLC")."""

    _spatial = 1
    _default_layout = "NCL"

    @staticmethod
    def _norm(v, name):
        return (_args.single(v, name),)

    @staticmethod
    def _layout_4d(layout):
        return _args.layout_1d(layout)

    def _view(self, a, name):
        return _args.as_2d_view(a, self.layout, name)
