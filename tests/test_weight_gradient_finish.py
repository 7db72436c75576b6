"""The last step of the PyTorch-convention weight and bias gradients: on the GPU backends (cuda,
and metal / metal-sim through the same gpu::backward_weights sequence) the slice-ordered sum is
written on the device straight into the caller's grad_weight view ([Cin][Cout/groups][kH][kW],
taps flipped, its own strides and dtype) and grad_bias view; the CPU converts on the host. Odd
channel counts, groups, strides, dilation, 1-D kernels, every dW kernel with split reductions,
fp32 and fp16, and views that are dense, strided with gaps, channels-last and negatively strided,
all NaN-poisoned: every element of a view is written, nothing around it is, and the bits do not
depend on the view (the same as the dense result, run to run). On cuda also views of device
memory (torch CUDA tensors, zero-copy) and host views staged for device inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference as R
from _helpers import FP16_TOL, FP32_TOL, assert_close

# (images, cin, cout, groups, (h, w), stride, (kh, kw), padding, output_padding, dilation)
CASES = [
    (2, 7, 23, 1, (5, 6), 2, (4, 4), 1, 0, 1),  # odd channels, k4 s2
    (2, 23, 7, 1, (4, 9), (2, 3), (3, 5), (1, 2), (1, 0), (1, 2)),  # rectangular, dilation
    (2, 14, 46, 2, (5, 5), 2, (3, 3), 1, 1, 1),  # groups: 7 input x 23 output channels each
    (2, 7, 9, 1, (1, 30), (1, 8), (1, 16), (0, 4), 0, 1),  # 1-D, k16 s8 (HiFi-GAN-like)
    (1, 40, 33, 1, (4, 4), 2, (4, 4), 1, 0, 1),  # the GEMM kernel's size (>= 32 x 32)
]
WEIGHT_VIEWS = ["dense", "strided", "channels_last", "flipped"]
BIAS_VIEWS = dict(dense="dense", strided="strided", channels_last="dense", flipped="flipped")


def _weight_view(kind: str, shape: tuple[int, ...], dtype) -> tuple[np.ndarray, np.ndarray]:
    """(view, the NaN-filled buffer it lives in)."""
    s0, s1, s2, s3 = shape
    if kind == "dense":
        base = np.full(shape, np.nan, dtype)
        return base, base
    if kind == "strided":  # gaps between channels, rows and around columns
        base = np.full((s0, s1 + 2, 2 * s2, s3 + 3), np.nan, dtype)
        return base[:, 1 : s1 + 1, ::2, 1 : s3 + 1], base
    if kind == "channels_last":  # every element used, in another order
        base = np.full((s2, s3, s0, s1), np.nan, dtype)
        return base.transpose(2, 3, 0, 1), base
    assert kind == "flipped"
    base = np.full(shape, np.nan, dtype)
    return base[::-1, :, ::-1, ::-1], base


def _bias_view(kind: str, c: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    if kind == "dense":
        base = np.full(c, np.nan, dtype)
        return base, base
    if kind == "strided":
        base = np.full(3 * c + 1, np.nan, dtype)
        return base[1::3], base
    base = np.full(c, np.nan, dtype)
    return base[::-1], base


def _written_exactly(view: np.ndarray, base: np.ndarray, what: str) -> None:
    assert np.isfinite(view).all(), f"{what}: elements of the view left unwritten (NaN)"
    assert np.isnan(base).sum() == base.size - view.size, f"{what}: wrote outside the view"


def _problem(rng, case, dtype):
    n, cin, cout, groups, size, stride, k, pad, op, dil = case
    x = rng.standard_normal((n, cin, *size)).astype(dtype)
    w = rng.standard_normal((cin, cout // groups, *k)).astype(dtype)
    gy = rng.standard_normal(
        R.conv_transpose_torch_ref(x, w, None, stride, pad, op, groups, dil).shape
    ).astype(dtype)
    return x, w, gy


def _layer(device, w, case):
    from convt.functional import _layer_2d

    _, _, _, groups, _, stride, _, pad, op, dil = case
    return _layer_2d(w, None, stride, pad, op, groups, dil, device)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("kind", WEIGHT_VIEWS)
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_gradients_into_views(device: Any, rng, case, kind, dtype) -> None:
    import convt

    x, w, gy = _problem(rng, case, dtype)
    _, _, cout, groups, _, stride, _, pad, op, dil = case
    _, rw, rb = R.conv_transpose_torch_backward(gy, x, w, stride, pad, op, groups, dil)
    tol = FP32_TOL if dtype == np.float32 else FP16_TOL
    layer = _layer(device, w, case)
    gw, gw_base = _weight_view(kind, w.shape, dtype)
    gb, gb_base = _bias_view(BIAS_VIEWS[kind], cout, dtype)
    layer.backward(x, gy, "NCHW", None, gw, gb)
    _written_exactly(gw, gw_base, "grad_weight")
    _written_exactly(gb, gb_base, "grad_bias")
    assert_close(gw, rw, tol, f"grad_weight {kind}")
    assert_close(gb, rb, tol, f"grad_bias {kind}")
    # The same bits as the dense result of the functional API, and run to run.
    _, dw, db = convt.conv_transpose2d_backward(
        gy, x, w, stride, pad, op, groups, dil, output_mask=(False, True, True), device=device
    )
    assert np.ascontiguousarray(gw).tobytes() == dw.tobytes(), "grad_weight bits depend on view"
    assert np.ascontiguousarray(gb).tobytes() == db.tobytes(), "grad_bias bits depend on view"


@pytest.mark.parametrize(
    "mode, splits", [("direct", 3), ("taps", 3), ("gemm", 3), ("direct", 64), ("auto", 1)]
)
@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=["case0", "case2"])
def test_gradients_into_views_every_kernel(device: Any, rng, dw_kernel, case, mode, splits):
    """Every dW kernel, with its reduction split into slices, finished into a strided fp16 view
    and a flipped fp32 one (the simulated GPU runs these; on the CPU the variables do nothing)."""
    dw_kernel(mode, splits)
    _, _, cout, groups, _, stride, _, pad, op, dil = case
    for dtype, kind in ((np.float16, "strided"), (np.float32, "flipped")):
        x, w, gy = _problem(rng, case, dtype)
        _, rw, rb = R.conv_transpose_torch_backward(gy, x, w, stride, pad, op, groups, dil)
        tol = FP32_TOL if dtype == np.float32 else FP16_TOL
        layer = _layer(device, w, case)
        runs = []
        for _ in range(2):
            gw, gw_base = _weight_view(kind, w.shape, dtype)
            gb, gb_base = _bias_view(kind, cout, dtype)
            layer.backward(x, gy, "NCHW", None, gw, gb)
            _written_exactly(gw, gw_base, f"grad_weight {mode}")
            _written_exactly(gb, gb_base, f"grad_bias {mode}")
            assert_close(gw, rw, tol, f"grad_weight {mode} s{splits} {dtype.__name__}")
            assert_close(gb, rb, tol, f"grad_bias {mode} s{splits} {dtype.__name__}")
            runs.append((gw.tobytes(), gb.tobytes()))
        assert runs[0] == runs[1], "gradients differ between runs"


@pytest.mark.parametrize("which", ["weight", "bias"])
def test_one_gradient_alone(device: Any, rng, which) -> None:
    """Only grad_weight or only grad_bias asked for (the other's scratch rows unused), with
    grad_input too, into strided views."""
    case = CASES[2]
    x, w, gy = _problem(rng, case, np.float32)
    _, _, cout, groups, _, stride, _, pad, op, dil = case
    ri, rw, rb = R.conv_transpose_torch_backward(gy, x, w, stride, pad, op, groups, dil)
    layer = _layer(device, w, case)
    gi = np.full(x.shape, np.nan, np.float32)
    gw, gw_base = _weight_view("strided", w.shape, np.float32)
    gb, gb_base = _bias_view("strided", cout, np.float32)
    if which == "weight":
        layer.backward(x, gy, "NCHW", gi, gw, None)
        _written_exactly(gw, gw_base, "grad_weight")
        assert_close(gw, rw, FP32_TOL, "grad_weight")
        assert np.isnan(gb_base).all()
    else:
        layer.backward(x, gy, "NCHW", gi, None, gb)
        _written_exactly(gb, gb_base, "grad_bias")
        assert_close(gb, rb, FP32_TOL, "grad_bias")
        assert np.isnan(gw_base).all()
    assert_close(gi, ri, FP32_TOL, "grad_input")


def test_gradient_views_must_not_overlap(device: Any, rng) -> None:
    case = CASES[0]
    x, w, gy = _problem(rng, case, np.float32)
    layer = _layer(device, w, case)
    cout = case[2]
    buf = np.zeros(w.size + cout, np.float32)
    gw = buf[: w.size].reshape(w.shape)
    with pytest.raises(ValueError, match="grad_weight must not share memory with grad_bias"):
        layer.backward(x, gy, "NCHW", None, gw, buf[w.size - 1 : w.size - 1 + cout])
    with pytest.raises(ValueError, match="grad_bias must not share memory with x, grad_output"):
        layer.backward(x, gy, "NCHW", None, gw, gy.reshape(-1)[:cout])


def _cuda(device: Any):
    """torch, where `device` is cuda and torch sees a GPU."""
    if device.kind != "cuda":
        pytest.skip("device memory is the cuda device's")
    th = pytest.importorskip("torch")
    if not th.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    return th


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
def test_device_memory_views(device: Any, rng, dtype) -> None:
    """CUDA tensors as grad_weight / grad_bias (strided views of NaN-filled device buffers) are
    written in place on the GPU, from device inputs; host views are staged for device inputs."""
    th = _cuda(device)
    case = CASES[2]
    x, w, gy = _problem(rng, case, dtype)
    _, _, cout, groups, _, stride, _, pad, op, dil = case
    _, rw, rb = R.conv_transpose_torch_backward(gy, x, w, stride, pad, op, groups, dil)
    tol = FP32_TOL if dtype == np.float32 else FP16_TOL
    layer = _layer(device, w, case)
    tdtype = th.float32 if dtype == np.float32 else th.float16
    s0, s1, s2, s3 = w.shape
    gw_base = th.full((s0, s1 + 2, 2 * s2, s3 + 3), float("nan"), dtype=tdtype, device="cuda")
    gb_base = th.full((3 * cout + 1,), float("nan"), dtype=tdtype, device="cuda")
    gw, gb = gw_base[:, 1 : s1 + 1, ::2, 1 : s3 + 1], gb_base[1::3]
    xd, gyd = th.from_numpy(x).cuda(), th.from_numpy(gy).cuda()
    ptrs = (gw_base.data_ptr(), gb_base.data_ptr())
    layer.backward(xd, gyd, "NCHW", None, gw, gb)
    assert (gw_base.data_ptr(), gb_base.data_ptr()) == ptrs
    got_w, got_b = gw.cpu().numpy(), gb.cpu().numpy()
    _written_exactly(got_w, gw_base.cpu().numpy(), "device grad_weight")
    _written_exactly(got_b, gb_base.cpu().numpy(), "device grad_bias")
    assert_close(got_w, rw, tol, "device grad_weight")
    assert_close(got_b, rb, tol, "device grad_bias")
    # Host views for device inputs: staged, with the same bits.
    hw, hw_base = _weight_view("strided", w.shape, dtype)
    hb, hb_base = _bias_view("strided", cout, dtype)
    layer.backward(xd, gyd, "NCHW", None, hw, hb)
    _written_exactly(hw, hw_base, "host grad_weight")
    assert hw.tobytes() == got_w.tobytes() and hb.tobytes() == got_b.tobytes()


def test_functional_returns_device_gradients(device: Any, rng) -> None:
    """conv_transpose1d_backward on CUDA tensors gives CUDA grad_weight / grad_bias."""
    th = _cuda(device)
    n, cin, cout, groups, size, stride, k, pad, op, dil = CASES[3]
    x = rng.standard_normal((n, cin, size[1])).astype(np.float32)
    w = rng.standard_normal((cin, cout, k[1])).astype(np.float32)
    y = R.conv_transpose_torch_ref(x[:, :, None], w[:, :, None], None, stride, pad)
    gy = rng.standard_normal((n, cout, y.shape[-1])).astype(np.float32)
    _, rw, rb = R.conv_transpose_torch_backward(
        gy[:, :, None], x[:, :, None], w[:, :, None], stride, pad
    )
    import convt

    _, gw, gb = convt.conv_transpose1d_backward(
        th.from_numpy(gy).cuda(), th.from_numpy(x).cuda(), w, stride[1], pad[1],
        output_mask=(False, True, True), device=device,
    )  # fmt: skip
    assert gw.is_cuda and gb.is_cuda and tuple(gw.shape) == w.shape
    assert_close(gw.cpu().numpy(), rw[:, :, 0], FP32_TOL, "grad_weight")
    assert_close(gb.cpu().numpy(), rb, FP32_TOL, "grad_bias")


def test_cpu_refuses_device_memory_gradients(rng) -> None:
    """The CPU device writes host memory only: a CUDA grad_weight is refused by name."""
    import convt

    th = pytest.importorskip("torch")
    if not th.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    case = CASES[0]
    x, w, gy = _problem(rng, case, np.float32)
    layer = _layer(convt.Device("cpu"), w, case)
    gw = th.empty(w.shape, device="cuda")
    with pytest.raises(ValueError, match="grad_weight is CUDA device memory.*cpu"):
        layer.backward(x, gy, "NCHW", None, gw, None)
