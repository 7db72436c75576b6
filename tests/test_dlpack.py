"""DLPack in and out: PyTorch (CPU and CUDA) tensors and CuPy arrays pass without copies, results
come back from the caller's library on the caller's device, and memory a device cannot read is
refused by name."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference as R
from _helpers import FP32_TOL, assert_close

torch = pytest.importorskip("torch")


def _problem(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.standard_normal((2, 7, 5, 6)).astype(np.float32)
    w = rng.standard_normal((7, 3, 3, 4)).astype(np.float32)  # (Cin, Cout, kH, kW)
    b = rng.standard_normal(3).astype(np.float32)
    return x, w, b


def _cuda_device() -> Any:
    import convt

    if not torch.cuda.is_available() or "cuda" not in [d.kind for d in convt.devices()]:
        pytest.skip("no CUDA device")
    return convt.Device("cuda")


def test_torch_cpu_tensors_in_and_out(rng: np.random.Generator) -> None:
    import convt

    x, w, b = _problem(rng)
    xt = torch.from_numpy(x)
    y = convt.conv_transpose2d(xt, w, b, stride=2, padding=1, device="cpu")
    assert isinstance(y, torch.Tensor) and y.device.type == "cpu"
    assert_close(y.numpy(), R.conv_transpose_torch_ref(x, w, b, 2, 1), FP32_TOL, "torch cpu")
    out = torch.full(tuple(y.shape), float("nan"))
    ptr = out.data_ptr()
    convt.conv_transpose2d(xt, w, b, stride=2, padding=1, out=out, device="cpu")
    assert out.data_ptr() == ptr  # written in place
    assert_close(out.numpy(), y.numpy(), 0.0, "out=")


def test_cuda_tensors_zero_copy(rng: np.random.Generator) -> None:
    import convt

    dev = _cuda_device()
    torch.backends.cudnn.allow_tf32 = False
    x, w, b = _problem(rng)
    xt = torch.from_numpy(x).cuda()
    y = convt.conv_transpose2d(xt, w, b, stride=2, padding=1, device=dev)
    assert isinstance(y, torch.Tensor) and y.is_cuda
    ref = R.conv_transpose_torch_ref(x, w, b, 2, 1)
    assert_close(y.cpu().numpy(), ref, FP32_TOL, "cuda out=None")
    out = torch.full(tuple(y.shape), float("nan"), device="cuda")
    ptr = out.data_ptr()
    convt.conv_transpose2d(xt, w, b, stride=2, padding=1, out=out, device=dev, copy=False)
    assert out.data_ptr() == ptr
    assert_close(out.cpu().numpy(), ref, FP32_TOL, "cuda out=")
    # A strided (channels-last) CUDA view is read in place too.
    xs = xt.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert not xs.is_contiguous()
    ys = convt.conv_transpose2d(xs, w, b, stride=2, padding=1, device=dev, copy=False)
    assert_close(ys.cpu().numpy(), ref, FP32_TOL, "channels-last view")


def test_cuda_side_stream_is_ordered(rng: np.random.Generator) -> None:
    """Data produced on a non-default torch stream is complete before convt reads it (convt asks
    the producer to order it through DLPack's stream handshake)."""
    import convt

    dev = _cuda_device()
    x, w, b = _problem(rng)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        big = torch.from_numpy(x).cuda().repeat(1, 1, 64, 64)  # work queued on the side stream
        xt = big[:, :, :5, :6].clone() * 1.0
        y = convt.conv_transpose2d(xt, w, b, stride=2, padding=1, device=dev)
    torch.cuda.synchronize()
    assert_close(y.cpu().numpy(), R.conv_transpose_torch_ref(x, w, b, 2, 1), FP32_TOL, "side")


def test_cuda_backward_through_dlpack(rng: np.random.Generator) -> None:
    import convt

    dev = _cuda_device()
    x, w, _ = _problem(rng)
    gy = rng.standard_normal((2, 3, 9, 12)).astype(np.float32)
    gi, gw, gb = convt.conv_transpose2d_backward(
        torch.from_numpy(gy).cuda(), torch.from_numpy(x).cuda(), w, stride=2, padding=1, device=dev
    )
    ri, rw, rb = convt.conv_transpose2d_backward(gy, x, w, stride=2, padding=1, device="cpu")
    assert gi.is_cuda and gw.is_cuda and gb.is_cuda  # all three finished on the GPU
    assert_close(gi.cpu().numpy(), ri, FP32_TOL, "grad_input")
    assert_close(gw.cpu().numpy(), rw, FP32_TOL, "grad_weight")
    assert_close(gb.cpu().numpy(), rb, FP32_TOL, "grad_bias")


def test_cupy_arrays(rng: np.random.Generator) -> None:
    import convt

    dev = _cuda_device()
    cp = pytest.importorskip("cupy")
    x, w, b = _problem(rng)
    y = convt.conv_transpose2d(cp.asarray(x), w, b, stride=2, padding=1, device=dev)
    assert isinstance(y, cp.ndarray)
    assert_close(cp.asnumpy(y), R.conv_transpose_torch_ref(x, w, b, 2, 1), FP32_TOL, "cupy")


def test_device_memory_refused_where_unreadable(rng: np.random.Generator) -> None:
    import convt

    dev = _cuda_device()
    x, w, b = _problem(rng)
    xt = torch.from_numpy(x).cuda()
    with pytest.raises(ValueError, match="x is CUDA device memory.*cpu"):
        convt.conv_transpose2d(xt, w, b, stride=2, padding=1, device="cpu")
    with pytest.raises(ValueError, match="weight must be host memory"):
        convt.conv_transpose2d(xt, torch.from_numpy(w).cuda(), b, stride=2, device=dev)


def test_torch_module_on_cuda(rng: np.random.Generator) -> None:
    import convt.torch as ct

    _cuda_device()
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(int(rng.integers(1 << 30)))
    mine = ct.ConvTranspose2d(7, 5, 3, stride=2, padding=1, output_padding=1).cuda()
    ref = torch.nn.ConvTranspose2d(7, 5, 3, stride=2, padding=1, output_padding=1).cuda()
    ref.load_state_dict(mine.state_dict())
    x = torch.from_numpy(rng.standard_normal((2, 7, 6, 5)).astype(np.float32)).cuda()
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = mine(x1), ref(x2)
    assert y1.is_cuda
    assert_close(y1.detach().cpu().numpy(), y2.detach().cpu().numpy(), FP32_TOL, "forward")
    g = torch.from_numpy(rng.standard_normal(tuple(y1.shape)).astype(np.float32)).cuda()
    y1.backward(g)
    y2.backward(g)
    for a, r, what in [
        (x1.grad, x2.grad, "grad x"),
        (mine.weight.grad, ref.weight.grad, "grad w"),
        (mine.bias.grad, ref.bias.grad, "grad b"),
    ]:
        assert a.is_cuda
        assert_close(a.cpu().numpy(), r.cpu().numpy(), FP32_TOL, what)
