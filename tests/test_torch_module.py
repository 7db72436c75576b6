"""convt.torch: autograd Function, nn modules that are drop-in torch.nn.ConvTranspose2d/1d
subclasses, training with Adam, and DistributedDataParallel (gloo, 2 processes)."""

from __future__ import annotations

import copy
import socket
import time
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import convt.torch as ctorch  # noqa: E402  (needs torch)
from _helpers import FP32_TOL, assert_close  # noqa: E402

F = torch.nn.functional


def to_np(t: Any) -> np.ndarray:
    return t.detach().numpy()


# ---------------------------------------------------------------------------------------------
# gradcheck of the autograd Function (float64)
# ---------------------------------------------------------------------------------------------

# (N, Cin, Cout, k, stride, padding, output_padding, groups, dilation, hw, bias)
GRADCHECK_CASES = [
    (2, 2, 3, (3, 2), 2, 1, 1, 1, 1, (3, 2), True),
    (1, 4, 2, 3, (1, 2), (0, 1), (0, 1), 2, (2, 1), (2, 3), True),
    (1, 3, 3, (2, 2), 3, 0, 2, 3, 2, (2, 2), False),
    (2, 2, 4, 1, 2, 0, 1, 2, 1, (2, 2), True),
]


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("case", range(len(GRADCHECK_CASES)))
def test_gradcheck_function(case: int) -> None:
    n, cin, cout, k, s, p, op, g, d, hw, use_bias = GRADCHECK_CASES[case]
    gen = torch.Generator().manual_seed(case)
    x = torch.randn(n, cin, *hw, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(cin, cout // g, *_pair(k), dtype=torch.float64, generator=gen)
    w.requires_grad_(True)
    b = torch.randn(cout, dtype=torch.float64, generator=gen, requires_grad=True)
    bias = b if use_bias else None
    geo = (_pair(s), _pair(p), _pair(op), g, _pair(d))

    def fn(x: Any, w: Any, *rest: Any) -> Any:
        return ctorch.ConvTransposeFunction.apply(x, w, rest[0] if rest else None, *geo)

    inputs = (x, w, b) if use_bias else (x, w)
    out = fn(*inputs)
    assert out.dtype == torch.float64
    want = F.conv_transpose2d(x, w, bias, *geo)
    np.testing.assert_allclose(to_np(out), to_np(want), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_gradcheck_1d() -> None:
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(2, 4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)

    def fn(x: Any, w: Any, b: Any) -> Any:
        return ctorch.conv_transpose1d(x, w, b, stride=2, padding=1, output_padding=1, groups=2)

    np.testing.assert_allclose(
        to_np(fn(x, w, b)),
        to_np(F.conv_transpose1d(x, w, b, 2, 1, 1, 2)),
        rtol=1e-12,
        atol=1e-12,
    )
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_functional_conv_transpose2d_defaults() -> None:
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(1, 3, 4, 4, generator=gen)
    w = torch.randn(3, 2, 3, 3, generator=gen)
    got = ctorch.conv_transpose2d(x, w)
    want = F.conv_transpose2d(x.double(), w.double())
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert_close(to_np(got), to_np(want), FP32_TOL, "defaults")


# ---------------------------------------------------------------------------------------------
# Modules against torch.nn (fp32, compared with float64 torch on the same weights)
# ---------------------------------------------------------------------------------------------

MODULE_CASES_2D = [
    dict(in_channels=3, out_channels=5, kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=(2, 3), stride=(1, 2), groups=2, bias=False),
    dict(in_channels=6, out_channels=6, kernel_size=4, stride=3, dilation=2, groups=6),
    dict(in_channels=7, out_channels=2, kernel_size=(1, 5), padding=(0, 2), dilation=(1, 3)),
]
MODULE_CASES_1D = [
    dict(in_channels=3, out_channels=4, kernel_size=5, stride=3, padding=2, output_padding=2),
    dict(in_channels=4, out_channels=2, kernel_size=2, groups=2, dilation=3, bias=False),
]


def check_module(ours: Any, ref: Any, x_shape: tuple[int, ...], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    ours.load_state_dict(ref.state_dict())
    ref64 = copy.deepcopy(ref).double()
    x = torch.randn(*x_shape, generator=gen)
    x1 = x.clone().requires_grad_(True)
    x2 = x.double().requires_grad_(True)
    y1, y2 = ours(x1), ref64(x2)
    assert y1.dtype == torch.float32 and y1.shape == y2.shape
    assert_close(to_np(y1), to_np(y2), FP32_TOL, "forward")
    g = torch.randn(*y1.shape, generator=gen)
    y1.backward(g)
    y2.backward(g.double())
    assert_close(to_np(x1.grad), to_np(x2.grad), FP32_TOL, "grad input")
    assert_close(to_np(ours.weight.grad), to_np(ref64.weight.grad), FP32_TOL, "grad weight")
    if ref.bias is not None:
        assert_close(to_np(ours.bias.grad), to_np(ref64.bias.grad), FP32_TOL, "grad bias")
    else:
        assert ours.bias is None


@pytest.mark.parametrize("case", range(len(MODULE_CASES_2D)))
def test_module_2d_matches_torch(case: int) -> None:
    kw = MODULE_CASES_2D[case]
    torch.manual_seed(case)
    ref = torch.nn.ConvTranspose2d(**kw)
    ours = ctorch.ConvTranspose2d(**kw)
    assert isinstance(ours, torch.nn.ConvTranspose2d)
    check_module(ours, ref, (2, kw["in_channels"], 5, 4), seed=100 + case)


@pytest.mark.parametrize("case", range(len(MODULE_CASES_1D)))
def test_module_1d_matches_torch(case: int) -> None:
    kw = MODULE_CASES_1D[case]
    torch.manual_seed(case)
    ref = torch.nn.ConvTranspose1d(**kw)
    ours = ctorch.ConvTranspose1d(**kw)
    assert isinstance(ours, torch.nn.ConvTranspose1d)
    check_module(ours, ref, (3, kw["in_channels"], 7), seed=200 + case)


def test_state_dict_round_trips() -> None:
    kw = dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, groups=2)
    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose2d(**kw)
    ours = ctorch.ConvTranspose2d(**kw)
    assert set(ours.state_dict()) == set(ref.state_dict()) == {"weight", "bias"}
    assert [n for n, _ in ours.named_parameters()] == ["weight", "bias"]
    # torch -> convt
    ours.load_state_dict(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    # convt -> torch
    with torch.no_grad():
        ours.weight.mul_(-2.0)
        ours.bias.add_(1.0)
    fresh = torch.nn.ConvTranspose2d(**kw)
    fresh.load_state_dict(ours.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    # and the edited weights are what convt computes with
    x = torch.randn(1, 4, 3, 3)
    assert_close(to_np(ours(x)), to_np(fresh.double()(x.double())), FP32_TOL, "after edits")
    # 1-d
    ref1 = torch.nn.ConvTranspose1d(3, 2, 4, bias=False)
    ours1 = ctorch.ConvTranspose1d(3, 2, 4, bias=False)
    ours1.load_state_dict(ref1.state_dict())
    ref1b = torch.nn.ConvTranspose1d(3, 2, 4, bias=False)
    ref1b.load_state_dict(ours1.state_dict())
    assert torch.equal(ref1b.weight, ref1.weight)


@pytest.mark.parametrize("one_d", [False, True], ids=["2d", "1d"])
def test_output_size(one_d: bool) -> None:
    torch.manual_seed(3)
    if one_d:
        ref = torch.nn.ConvTranspose1d(2, 3, 3, stride=3, padding=1)
        ours = ctorch.ConvTranspose1d(2, 3, 3, stride=3, padding=1)
        x = torch.randn(2, 2, 4)
        sizes = [[10], [11], [12]]
    else:
        ref = torch.nn.ConvTranspose2d(2, 3, 3, stride=(2, 3), padding=1)
        ours = ctorch.ConvTranspose2d(2, 3, 3, stride=(2, 3), padding=1)
        x = torch.randn(2, 2, 4, 5)
        sizes = [[7, 13], [8, 15], (8, 14)]
    ours.load_state_dict(ref.state_dict())
    ref64 = copy.deepcopy(ref).double()
    for size in sizes:
        x1 = x.clone().requires_grad_(True)
        x2 = x.double().requires_grad_(True)
        y1 = ours(x1, output_size=size)
        y2 = ref64(x2, output_size=list(size))
        assert list(y1.shape[2:]) == list(size)
        assert_close(to_np(y1), to_np(y2), FP32_TOL, f"output_size={size}")
        y1.sum().backward()
        y2.sum().backward()
        assert_close(to_np(x1.grad), to_np(x2.grad), FP32_TOL, f"grad, output_size={size}")
    with pytest.raises((ValueError, RuntimeError)):
        ours(x, output_size=[100, 100] if not one_d else [100])


# ---------------------------------------------------------------------------------------------
# Devices, dtypes, zero copy
# ---------------------------------------------------------------------------------------------

REJECT = (TypeError, ValueError, RuntimeError)


def test_non_cpu_tensors_raise() -> None:
    x = torch.empty(1, 2, 3, 3, device="meta")
    w = torch.empty(2, 3, 3, 3, device="meta")
    with pytest.raises(REJECT):
        ctorch.conv_transpose2d(x, w)
    layer = ctorch.ConvTranspose2d(2, 3, 3).to("meta")
    with pytest.raises(REJECT):
        layer(x)
    with pytest.raises(REJECT):  # mixed: CPU weights, meta input
        ctorch.ConvTranspose2d(2, 3, 3)(x)


@pytest.mark.parametrize("dtype", ["int64", "bfloat16", "complex64"])
def test_wrong_dtype_raises(dtype: str) -> None:
    dt = getattr(torch, dtype)
    x = torch.ones(1, 2, 3, 3, dtype=dt)
    w = torch.ones(2, 3, 3, 3, dtype=dt)
    with pytest.raises(REJECT):
        ctorch.conv_transpose2d(x, w)
    layer = ctorch.ConvTranspose2d(2, 3, 3)
    with pytest.raises(REJECT):
        layer(x)


def test_forward_output_is_zero_copy_numpy() -> None:
    torch.manual_seed(4)
    layer = ctorch.ConvTranspose2d(3, 4, 3, stride=2)
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        out = layer(x)
    assert out.device.type == "cpu" and out.is_contiguous() and out.dtype == torch.float32
    arr = out.numpy()  # no grad: a plain CPU tensor, viewable without a copy
    assert isinstance(arr, np.ndarray)
    assert arr.__array_interface__["data"][0] == out.data_ptr()
    back = torch.from_numpy(arr)
    assert back.data_ptr() == out.data_ptr()
    # its storage holds exactly the output (not a view into a larger staging buffer)
    assert out.untyped_storage().nbytes() == out.numel() * out.element_size()
    assert out.untyped_storage().data_ptr() == out.data_ptr()
    arr[...] = 7.0
    assert bool((out == 7.0).all())
    # with autograd on, the detached output shares memory with the graph's output
    y = layer(x)
    assert y.requires_grad and y.grad_fn is not None
    assert y.detach().numpy().__array_interface__["data"][0] == y.data_ptr()


# ---------------------------------------------------------------------------------------------
# Training: a tiny autoencoder with Adam
# ---------------------------------------------------------------------------------------------


def _train_autoencoder(decoder_cls: type, steps: int = 30) -> list[float]:
    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16)
    encoder = torch.nn.Conv2d(3, 8, 4, stride=2, padding=1)
    decoder = decoder_cls(8, 3, 4, stride=2, padding=1)
    model = torch.nn.Sequential(encoder, torch.nn.ReLU(), decoder)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(model(x), x)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_autoencoder_trains() -> None:
    start = time.perf_counter()
    ours = _train_autoencoder(ctorch.ConvTranspose2d)
    ref = _train_autoencoder(torch.nn.ConvTranspose2d)  # same seeds: same init and data
    assert np.isfinite(ours).all()
    assert ours[-1] < 0.5 * ours[0], ours
    assert abs(ours[0] - ref[0]) <= 1e-5 * ref[0], (ours[0], ref[0])  # same initial model
    assert abs(ours[-1] - ref[-1]) <= 0.05 * ref[-1], (ours[-1], ref[-1])
    assert time.perf_counter() - start < 20


# ---------------------------------------------------------------------------------------------
# DistributedDataParallel, gloo, 2 processes
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_data_parallel(tmp_path: Any) -> None:
    import _ddp_worker as worker

    mp = pytest.importorskip("torch.multiprocessing")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed not available")
    torch.manual_seed(5)
    ref = torch.nn.ConvTranspose2d(**worker.LAYER_ARGS)
    x = torch.randn(4, 4, 5, 6)
    target = torch.randn(4, 6, 10, 12)
    data = {"state": ref.state_dict(), "x": x, "target": target}

    ctx = mp.spawn(worker.run, args=(2, _free_port(), str(tmp_path), data), nprocs=2, join=False)
    deadline = time.monotonic() + 90
    try:
        while not ctx.join(timeout=1):
            assert time.monotonic() < deadline, "DDP workers did not finish"
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()

    # single process, whole batch, float64 torch: DDP averages the ranks' gradients of their
    # half-batch means, which is the gradient of the whole-batch mean
    ref64 = copy.deepcopy(ref).double()
    loss = ((ref64(x.double()) - target.double()) ** 2).mean()
    loss.backward()
    want = {name: p.grad for name, p in ref64.named_parameters()}
    single = ctorch.ConvTranspose2d(**worker.LAYER_ARGS)
    single.load_state_dict(ref.state_dict())
    ((single(x) - target) ** 2).mean().backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        for name, grad in want.items():
            assert_close(to_np(result["grads"][name]), to_np(grad), FP32_TOL, f"{name} r{rank}")
            assert_close(
                to_np(result["grads"][name]),
                to_np(dict(single.named_parameters())[name].grad),
                FP32_TOL,
                f"{name} rank {rank} vs single-process convt",
            )
            stepped = ref.state_dict()[name].double() - worker.LEARNING_RATE * grad
            assert_close(to_np(result["params"][name]), to_np(stepped), FP32_TOL, f"{name} step")
