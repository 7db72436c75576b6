"""PyTorch integration: an autograd Function and drop-in ConvTranspose1d/2d modules.

CPU tensors run on convt's CPU kernels and cross to numpy and back without copies
(``Tensor.numpy()`` / ``torch.from_numpy`` share memory). CUDA tensors run on convt's ``cuda``
device and pass through DLPack without copies; their weights and bias are prepared on the host
(a weight-sized copy each call), while the weight/bias gradients are finished on the GPU into
CUDA tensors. Inputs never move between host and GPU behind the caller's back.
"""

from __future__ import annotations

import numpy as np
import torch

from . import functional as _F

_DTYPES = (torch.float32, torch.float16, torch.float64)


def _host_weights(t: torch.Tensor | None, name: str) -> np.ndarray | None:
    """Weights and bias as numpy: convt prepares them on the host, so CUDA ones are copied
    (weight-sized, once per call; documented in the README)."""
    if t is None:
        return None
    return _array(t.detach().cpu() if t.is_cuda else t, name)


def _cuda_operand(t: torch.Tensor, name: str) -> torch.Tensor:
    """A CUDA tensor passed to convt through DLPack, without a copy."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_cuda:
        raise ValueError(f"{name} must be on the same CUDA device as x, got {t.device}")
    return t.detach()


def _array(t: torch.Tensor, name: str) -> np.ndarray:
    """A numpy view of a CPU tensor's memory (no copy; any strides)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(
            f"{name} must be a CPU tensor (convt.torch runs on the CPU), got {t.device}"
        )
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name} dtype must be float32, float16 or float64, got {t.dtype}")
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return t.detach().numpy()


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(a)


class ConvTransposeFunction(torch.autograd.Function):
    """``conv_transpose1d``/``conv_transpose2d`` (chosen by ``x.dim()``: 3 or 4) on convt.

    apply(x, weight, bias, stride, padding, output_padding, groups, dilation); the geometry
    arguments are ints or tuples, as in ``torch.nn.functional``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, output_padding, groups, dilation):
        if x.dim() not in (3, 4):
            raise ValueError(f"x must be 3-D (N, C, L) or 4-D (N, C, H, W), got {x.dim()}-D")
        fn = _F.conv_transpose2d if x.dim() == 4 else _F.conv_transpose1d
        cuda = isinstance(x, torch.Tensor) and x.is_cuda
        out = fn(
            _cuda_operand(x, "x") if cuda else _array(x, "x"),
            _host_weights(weight, "weight"),
            _host_weights(bias, "bias"),
            stride,
            padding,
            output_padding,
            groups,
            dilation,
            device="cuda" if cuda else None,
        )
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding, output_padding, groups, dilation)
        ctx.has_bias = bias is not None
        return out if cuda else torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        fn = _F.conv_transpose2d_backward if x.dim() == 4 else _F.conv_transpose1d_backward
        if x.is_cuda:
            gi, gw, gb = fn(
                _cuda_operand(grad_output.contiguous(), "grad_output"),
                _cuda_operand(x, "x"),
                _host_weights(weight, "weight"),
                *ctx.geometry,
                output_mask=(need_x, need_w, need_b and ctx.has_bias),
                device="cuda",
            )
            # Weight and bias gradients come back as CUDA tensors, finished on the device.
            return gi, gw, gb, None, None, None, None, None
        gi, gw, gb = fn(
            _array(grad_output, "grad_output"),
            _array(x, "x"),
            _array(weight, "weight"),
            *ctx.geometry,
            output_mask=(need_x, need_w, need_b and ctx.has_bias),
        )
        return _tensor(gi), _tensor(gw), _tensor(gb), None, None, None, None, None


def conv_transpose2d(
    x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    """``torch.nn.functional.conv_transpose2d`` computed by convt (CPU tensors)."""
    return ConvTransposeFunction.apply(
        x, weight, bias, stride, padding, output_padding, groups, dilation
    )


def conv_transpose1d(
    x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    """``torch.nn.functional.conv_transpose1d`` computed by convt (CPU tensors)."""
    return ConvTransposeFunction.apply(
        x, weight, bias, stride, padding, output_padding, groups, dilation
    )


class _ConvTransposeMixin:
    """forward() of the drop-in modules; the constructor and parameters are torch's own."""

    _spatial: int

    def _check_padding_mode(self) -> None:
        if self.padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' for convt, got {self.padding_mode!r}")

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        self._check_padding_mode()
        batched = input.dim() == self._spatial + 2
        if not batched:
            if input.dim() != self._spatial + 1:
                dims = f"{self._spatial + 1}-D or {self._spatial + 2}-D"
                raise ValueError(f"input must be {dims}, got {input.dim()}-D")
            input = input.unsqueeze(0)
        output_padding = self._output_padding(
            input,
            output_size,
            self.stride,
            self.padding,
            self.kernel_size,
            self._spatial,
            self.dilation,
        )
        out = ConvTransposeFunction.apply(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            tuple(output_padding),
            self.groups,
            self.dilation,
        )
        return out if batched else out.squeeze(0)


class ConvTranspose2d(_ConvTransposeMixin, torch.nn.ConvTranspose2d):
    """Drop-in for ``torch.nn.ConvTranspose2d`` (same arguments, parameters and state_dict keys)
    whose forward and backward run on convt."""

    _spatial = 2


class ConvTranspose1d(_ConvTransposeMixin, torch.nn.ConvTranspose1d):
    """Drop-in for ``torch.nn.ConvTranspose1d`` whose forward and backward run on convt."""

    _spatial = 1
