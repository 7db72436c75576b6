"""8 Python threads at once on one layer and on different layers, forward and backward,
functional and MPS-style. convt releases the GIL while computing, so the calls really overlap;
every result must be bitwise equal to the same call made alone (the kernels are deterministic).
A fresh device per test makes the threads race to fill its pipeline cache too."""

from __future__ import annotations

import threading
from typing import Any, Callable

import convt
import numpy as np
import pytest
import reference as R
from _helpers import FP32_TOL, assert_close, build_transpose_pair, poison

THREADS = 8
ROUNDS = 3


def run_threads(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Runs every job ROUNDS times on its own thread, all released at once by a barrier;
    returns each job's results (a list per job). Exceptions are re-raised here."""
    barrier = threading.Barrier(len(jobs))
    results: list[list[Any]] = [[] for _ in jobs]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(ROUNDS):
                results[i].append(jobs[i]())
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


def assert_bitwise(got: Any, want: Any, what: str) -> None:
    if isinstance(want, tuple):
        for g, w in zip(got, want):
            assert_bitwise(g, w, what)
        return
    assert got.dtype == want.dtype and got.shape == want.shape, what
    assert np.array_equal(got, want, equal_nan=True), f"{what}: differs from the lone call"


@pytest.fixture
def fresh(device: Any) -> Any:
    """A new device of the fixture's kind, with an empty pipeline cache."""
    return convt.Device(device.kind)


def test_one_layer_many_threads(fresh: Any, rng: np.random.Generator) -> None:
    layer = convt.ConvTranspose2d(7, 23, 3, stride=2, padding=1, device=fresh, seed=3)
    xs = [rng.standard_normal((2, 7, 5, 6)).astype(np.float32) for _ in range(THREADS)]
    alone = [layer(x) for x in xs]
    results = run_threads([lambda x=x: layer(x) for x in xs])
    for i, (res, want) in enumerate(zip(results, alone)):
        for r in res:
            assert_bitwise(r, want, f"thread {i}")
    ref = R.conv_transpose_torch_ref(xs[0], layer.weight, layer.bias, 2, 1)
    assert_close(alone[0], ref, FP32_TOL, "lone call vs reference")


def test_different_layers_and_dtypes(fresh: Any, rng: np.random.Generator) -> None:
    """Each thread its own geometry, dtype and layout (distinct pipelines)."""
    jobs, alone = [], []
    for i in range(THREADS):
        dtype = np.float16 if i % 2 else np.float32
        layout = "NHWC" if i % 4 >= 2 else "NCHW"
        layer = convt.ConvTranspose2d(
            7, 5 + i, 1 + i % 4, stride=1 + i % 3, dilation=1 + i % 2, groups=1,
            dtype=dtype, layout=layout, device=fresh, seed=i,
        )  # fmt: skip
        shape = (1, 7, 4, 3 + i) if layout == "NCHW" else (1, 4, 3 + i, 7)
        x = rng.standard_normal(shape).astype(dtype)
        alone.append(layer(x))
        jobs.append(lambda layer=layer, x=x: layer(x))
    for i, (res, want) in enumerate(zip(run_threads(jobs), alone)):
        for r in res:
            assert_bitwise(r, want, f"layer {i}")


def test_functional_forward_and_backward_mixed(fresh: Any, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 6, 4, 5)).astype(np.float32)
    w = rng.standard_normal((6, 3, 3, 2)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    kw = dict(stride=2, padding=1, groups=2, device=fresh)
    y = convt.conv_transpose2d(x, w, b, **kw)
    g = rng.standard_normal(y.shape).astype(np.float32)
    grads = convt.conv_transpose2d_backward(g, x, w, **kw)

    def fwd() -> Any:
        out = poison(np.empty_like(y))
        return convt.conv_transpose2d(x, w, b, out=out, **kw)

    def bwd() -> Any:
        return convt.conv_transpose2d_backward(g, x, w, **kw)

    results = run_threads([fwd if i % 2 else bwd for i in range(THREADS)])
    for i, res in enumerate(results):
        for r in res:
            assert_bitwise(r, y if i % 2 else grads, f"thread {i}")
    ref = R.conv_transpose_torch_backward(g, x, w, 2, 1, 0, 2)
    for got, want in zip(grads, ref):
        assert_close(got, want, FP32_TOL, "lone backward vs reference")


def test_mps_encode_and_gradient_many_threads(fresh: Any, rng: np.random.Generator) -> None:
    """One ConvolutionTranspose and one gradient kernel shared by 8 threads, each with its own
    command buffers, images and gradient states."""
    w = rng.uniform(-1, 1, (23, 3, 3, 7)).astype(np.float32)
    bias = rng.uniform(-1, 1, 23).astype(np.float32)
    fwd, grad = build_transpose_pair(
        fresh, w, bias, stride=2, neuron=R.Neuron("relu", a=0.1), kernel_weights_dtype="float32"
    )
    srcs = [rng.uniform(-1, 1, (1, 7, 4, 5)).astype(np.float32) for _ in range(THREADS)]

    def step(src: np.ndarray) -> tuple:
        cb = convt.CommandBuffer(fresh)
        image, state = fwd.encode(cb, convt.Image(src), destination_state=True)
        dy = np.ones(image.array.shape, np.float32)
        dx = grad.encode(cb, convt.Image(dy), convt.Image(src), state)
        cb.commit()
        cb.wait_until_completed()
        assert cb.error is None
        return (
            image.array,
            dx.array,
            np.array(state.gradient_for_weights),
            np.array(state.gradient_for_biases),
        )

    alone = [step(s) for s in srcs]
    for i, (res, want) in enumerate(zip(run_threads([lambda s=s: step(s) for s in srcs]), alone)):
        for r in res:
            assert_bitwise(r, want, f"thread {i}")
    ref = R.conv_transpose_mps(
        srcs[0],
        w,
        bias,
        stride=2,
        T=0,
        dst_hw=alone[0][0].shape[2:],
        neuron=R.Neuron("relu", a=0.1),
    )
    assert_close(alone[0][0], ref, FP32_TOL, "lone encode vs reference")


def test_pipeline_cache_first_use_race(device: Any, rng: np.random.Generator) -> None:
    """Threads whose first calls need different pipelines (neuron, dtype, layout), on a device
    nobody has used yet, all at the same moment."""
    kinds = ["relu", "sigmoid", "tanh", "gelu", "elu", "softplus", "abs", "none"]
    for attempt in range(2):
        dev = convt.Device(device.kind)
        jobs, refs = [], []
        for i, kind in enumerate(kinds):
            w = rng.uniform(-1, 1, (3, 1 + i % 3, 2, 5)).astype(np.float32)
            fwd, _ = build_transpose_pair(
                dev, w, neuron=R.Neuron(kind), kernel_weights_dtype="float32"
            )
            dtype = np.float16 if i % 2 else np.float32
            layout = "NHWC" if i % 4 >= 2 else "NCHW"
            src = rng.uniform(-1, 1, (1, 5, 3, 4)).astype(dtype)
            src_arr = src if layout == "NCHW" else np.ascontiguousarray(src.transpose(0, 2, 3, 1))

            def job(fwd=fwd, src_arr=src_arr, layout=layout, dev=dev) -> np.ndarray:
                cb = convt.CommandBuffer(dev)
                out = fwd.encode(cb, convt.Image(src_arr, layout=layout))
                cb.commit()
                cb.wait_until_completed()
                return out.array if layout == "NCHW" else out.array.transpose(0, 3, 1, 2)

            jobs.append(job)
            refs.append((src, w, kind, dtype))
        results = run_threads(jobs)
        for res, (src, w, kind, dtype) in zip(results, refs):
            first = res[0]
            for r in res[1:]:
                assert_bitwise(r, first, f"{kind} (attempt {attempt})")
            (hd, ty), (wd, tx) = (
                R.transpose_offset(R.DEFAULT_PADDING, n, 1, k, axis)
                for n, k, axis in ((3, w.shape[1], "y"), (4, w.shape[2], "x"))
            )
            assert first.shape[2:] == (hd, wd)
            ref = R.conv_transpose_mps(
                src, w, T=(ty, tx), dst_hw=(hd, wd), neuron=R.Neuron(kind), dst_dtype=dtype
            )
            tol = 2e-3 if dtype == np.float16 else FP32_TOL
            assert_close(first, ref, tol, f"{kind}")
