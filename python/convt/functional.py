"""Transposed convolution in PyTorch conventions (weights [Cin, Cout/groups, kH, kW])."""

from __future__ import annotations

import numpy as np

from . import _args
from ._core import Device, _ConvTransposeLayer


def _layer_2d(weight, bias, stride, padding, output_padding, groups, dilation, device):
    return _ConvTransposeLayer(
        _args.device(device),
        weight,
        bias,
        _args.pair(stride, "stride"),
        _args.pair(padding, "padding"),
        _args.pair(output_padding, "output_padding"),
        _args.pair(dilation, "dilation"),
        _args.integer(groups, "groups"),
    )


def _layer_1d(weight, bias, stride, padding, output_padding, groups, dilation, device):
    if not isinstance(weight, np.ndarray):
        raise TypeError(f"weight must be a numpy.ndarray, got {type(weight).__name__}")
    if weight.ndim != 3:
        raise ValueError(
            f"weight must be 3-D (in_channels, out_channels/groups, k), got {weight.ndim}-D"
        )
    return _ConvTransposeLayer(
        _args.device(device),
        weight[:, :, None, :],
        bias,
        (1, _args.single(stride, "stride")),
        (0, _args.single(padding, "padding")),
        (0, _args.single(output_padding, "output_padding")),
        (1, _args.single(dilation, "dilation")),
        _args.integer(groups, "groups"),
    )


def run_layer(layer, x, out, layout: str, output_size=None):
    """Runs a core layer on 4-D views; allocates ``out`` when None. Returns ``out``."""
    if out is None:
        shape = layer.output_shape(x, layout, output_size)
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy.ndarray, got {type(x).__name__}")
        out = np.empty(shape, dtype=x.dtype)
    layer.forward(x, out, layout, output_size)
    return out


def conv_transpose2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
    *,
    out: np.ndarray | None = None,
    layout: str = "NCHW",
    device: Device | None = None,
) -> np.ndarray:
    """``torch.nn.functional.conv_transpose2d`` on numpy arrays.

    x: (N, Cin, H, W) for layout "NCHW" or (N, H, W, Cin) for "NHWC", float32 or float16, any
    strides (read in place). weight: (Cin, Cout/groups, kH, kW), same dtype. bias: (Cout,) or None.
    Returns (N, Cout, Ho, Wo) (or NHWC) with Ho = (H-1)*stride - 2*padding + dilation*(kH-1) +
    output_padding + 1. ``out``, if given, is written in place and returned.
    """
    layout = _args.layout_2d(layout)
    layer = _layer_2d(weight, bias, stride, padding, output_padding, groups, dilation, device)
    return run_layer(layer, x, out, layout)


def conv_transpose1d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
    *,
    out: np.ndarray | None = None,
    layout: str = "NCL",
    device: Device | None = None,
) -> np.ndarray:
    """``torch.nn.functional.conv_transpose1d`` on numpy arrays.

    x: (N, Cin, L) for layout "NCL" or (N, L, Cin) for "NLC". weight: (Cin, Cout/groups, k).
    Returns (N, Cout, Lo) (or NLC); ``out``, if given, is written in place and returned.
    """
    layout2 = _args.layout_1d(layout)
    layer = _layer_1d(weight, bias, stride, padding, output_padding, groups, dilation, device)
    x4 = _args.as_2d_view(x, layout, "x")
    if out is None:
        shape = layer.output_shape(x4, layout2)
        out = np.empty(
            (shape[0], shape[1], shape[3]) if layout == "NCL" else (shape[0], shape[2], shape[3]),
            dtype=x.dtype,
        )
    layer.forward(x4, _args.as_2d_view(out, layout, "out"), layout2)
    return out
