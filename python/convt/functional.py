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
    if not _args.is_array(weight):
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


def run_layer(layer, x, out, layout: str, output_size=None, copy: bool = True):
    """Runs a core layer on 4-D views; allocates ``out`` when None. Returns ``out``."""
    if out is None:
        shape = layer.output_shape(x, layout, output_size)
        out = _args.empty_like_input(x, shape, "x", aligned=not copy)
    layer.forward(x, out, layout, output_size, copy)
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
    copy: bool = True,
) -> np.ndarray:
    """``torch.nn.functional.conv_transpose2d`` on numpy arrays.

    x: (N, Cin, H, W) for layout "NCHW" or (N, H, W, Cin) for "NHWC", float32 or float16, any
    strides (read in place): a numpy array, or any DLPack tensor (PyTorch, CuPy), used without a
    copy; on device "cuda" CUDA tensors stay on the GPU and numpy arrays are copied to it and back.
    The result (when ``out`` is None) comes from x's library, on x's device.
    weight: (Cin, Cout/groups, kH, kW), same dtype, host memory. bias: (Cout,) or None.
    Returns (N, Cout, Ho, Wo) (or NHWC) with Ho = (H-1)*stride - 2*padding + dilation*(kH-1) +
    output_padding + 1. ``out``, if given, is written in place and returned.
    ``copy=False`` forbids staging copies: on a device that needs page-aligned memory (Metal) an
    array that is not (see ``convt.empty_aligned``) raises ValueError instead of being copied.
    """
    layout = _args.layout_2d(layout)
    layer = _layer_2d(weight, bias, stride, padding, output_padding, groups, dilation, device)
    return run_layer(layer, x, out, layout, None, copy)


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
    copy: bool = True,
) -> np.ndarray:
    """``torch.nn.functional.conv_transpose1d`` on numpy arrays.

    x: (N, Cin, L) for layout "NCL" or (N, L, Cin) for "NLC". weight: (Cin, Cout/groups, k).
    Returns (N, Cout, Lo) (or NLC); ``out``, if given, is written in place and returned.
    ``copy`` as in ``conv_transpose2d``.
    """
    layout2 = _args.layout_1d(layout)
    layer = _layer_1d(weight, bias, stride, padding, output_padding, groups, dilation, device)
    x4 = _args.as_2d_view(x, layout, "x")
    if out is None:
        shape = layer.output_shape(x4, layout2)
        shape = (
            (shape[0], shape[1], shape[3]) if layout == "NCL" else (shape[0], shape[2], shape[3])
        )
        out = _args.empty_like_input(x, shape, "x", aligned=not copy)
    layer.forward(x4, _args.as_2d_view(out, layout, "out"), layout2, None, copy)
    return out


_GRADIENT_NAMES = ("grad_input", "grad_weight", "grad_bias")


def _gradient_outputs(out, mask: tuple[bool, bool, bool]) -> tuple:
    """``out`` checked: None, or 3 entries, each None (allocate) or the array to write."""
    if out is None:
        return (None, None, None)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        got = f"{len(out)} entries" if isinstance(out, (tuple, list)) else type(out).__name__
        raise TypeError(
            "out must be None or 3 entries (grad_input, grad_weight, grad_bias), each an array "
            f"or None; got {got}"
        )
    for i, (a, name) in enumerate(zip(out, _GRADIENT_NAMES)):
        if a is None:
            continue
        if not _args.is_array(a):
            raise TypeError(
                f"out[{i}] ({name}) must be a numpy.ndarray, a DLPack tensor or None, got "
                f"{type(a).__name__}"
            )
        if not mask[i]:
            why = f"output_mask[{i}] is False" + (" or the layer has no bias" if i == 2 else "")
            raise ValueError(
                f"out[{i}] ({name}) must be None: {why}, so that gradient is not computed"
            )
    return tuple(out)


def _backward(layer, x, grad_output, layout, output_mask, weight_shape, view, out):
    """Runs the core backward on 4-D views, into ``out``'s arrays or newly allocated ones."""
    try:
        mask = tuple(bool(m) for m in output_mask)
    except TypeError:
        raise TypeError(f"output_mask must be 3 booleans, got {output_mask!r}") from None
    if len(mask) != 3:
        raise ValueError(f"output_mask must have 3 entries, got {output_mask!r}")
    if not _args.is_array(x):
        raise TypeError(f"x must be a numpy.ndarray or a DLPack tensor, got {type(x).__name__}")
    given = _gradient_outputs(out, mask)
    if given[1] is not None and tuple(given[1].shape) != tuple(weight_shape):
        raise ValueError(
            f"grad_weight must have the weight's shape {tuple(weight_shape)}, got "
            f"{tuple(given[1].shape)}"
        )
    layer.output_shape(view(x, "x"), layout)  # validates x before grad_input is allocated
    # grad_input lives where x does; so do the weight and bias gradients of GPU-resident x (the
    # GPU backends finish them on the device), else they are numpy arrays.
    gpu = _args.on_gpu(x)
    dtype = None if gpu else np.dtype(str(x.dtype).replace("torch.", ""))

    def alloc(shape):
        return _args.empty_like_input(x, shape, "x") if gpu else np.empty(shape, dtype=dtype)

    grad_input, grad_weight, grad_bias = given
    if mask[0] and grad_input is None:
        grad_input = _args.empty_like_input(x, tuple(x.shape), "x")
    if mask[1] and grad_weight is None:
        grad_weight = alloc(tuple(weight_shape))
    if mask[2] and grad_bias is None:
        grad_bias = alloc((layer.out_channels,))
    # 1-D layers: (Cin, Cout/groups, k) seen as (Cin, Cout/groups, 1, k), never a copy.
    weight4 = None
    if grad_weight is not None:
        weight4 = grad_weight if len(weight_shape) == 4 else grad_weight[:, :, None, :]
    layer.backward(
        view(x, "x"),
        view(grad_output, "grad_output"),
        layout,
        None if grad_input is None else view(grad_input, "grad_input"),
        weight4,
        grad_bias,
    )
    return grad_input, grad_weight, grad_bias


def conv_transpose2d_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
    *,
    output_mask=(True, True, True),
    layout: str = "NCHW",
    device: Device | None = None,
    out: tuple | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of ``conv_transpose2d``: ``(grad_input, grad_weight, grad_bias)``.

    grad_output has the forward output's shape; grad_input x's shape, grad_weight the weight's
    (Cin, Cout/groups, kH, kW) and grad_bias (Cout,), all in x's dtype. grad_input is allocated
    like x; grad_weight and grad_bias too when x is in GPU memory (a CUDA tensor stays on the
    GPU, no host copy), else they are numpy arrays. Entries whose ``output_mask`` flag is False
    are None. Weight and bias gradients are summed over the batch in a fixed order (bitwise
    reproducible).

    ``out``, if given, is ``(grad_input, grad_weight, grad_bias)``: each entry an array of that
    shape and x's dtype, overwritten in place and returned (no allocation), or None to allocate
    it; entries whose ``output_mask`` flag is False must be None. Reusing them across steps
    saves a large gradient's page faults on every call.
    """
    layout = _args.layout_2d(layout)
    layer = _layer_2d(weight, None, stride, padding, output_padding, groups, dilation, device)
    return _backward(
        layer,
        x,
        grad_output,
        layout,
        output_mask,
        weight.shape,
        lambda a, name: a,
        out,
    )


def conv_transpose1d_backward(
    grad_output: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
    *,
    output_mask=(True, True, True),
    layout: str = "NCL",
    device: Device | None = None,
    out: tuple | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of ``conv_transpose1d``: ``(grad_input, grad_weight, grad_bias)``.

    Shapes follow the forward: grad_input like x (N, Cin, L) / (N, L, Cin), grad_weight like the
    weight (Cin, Cout/groups, k), grad_bias (Cout,). ``out`` as in ``conv_transpose2d_backward``.
    """
    layout2 = _args.layout_1d(layout)
    layer = _layer_1d(weight, None, stride, padding, output_padding, groups, dilation, device)
    return _backward(
        layer,
        x,
        grad_output,
        layout2,
        output_mask,
        weight.shape,
        lambda a, name: _args.as_2d_view(a, layout, name),
        out,
    )
