"""NaN and Inf: they propagate exactly where the float64 reference puts them, and no fused
neuron turns a NaN into a number unless the reference's formula does (pow(NaN, 0) is 1)."""

from __future__ import annotations

from typing import Any

import convt
import numpy as np
import pytest
import reference as R
from _helpers import FP16_TOL, FP32_TOL, build_transpose, poison, run_encoded

# The float64 reference itself computes inf - inf and NaN sums here, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def assert_same_nonfinite(got: np.ndarray, ref: np.ndarray, tol: float, what: str) -> None:
    """NaN, +Inf and -Inf at exactly the reference's positions; finite values within tol."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    assert got.shape == ref.shape, what
    for name, test in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
        diff = test(got) != test(ref)
        assert not diff.any(), (
            f"{what}: {name} differs at {int(diff.sum())} element(s), first at "
            f"{np.argwhere(diff)[0].tolist()}: got {got[diff][0]}, reference {ref[diff][0]}"
        )
    fin = np.isfinite(ref)
    if fin.any():
        scale = max(float(np.max(np.abs(ref[fin]))), 1e-12)
        err = float(np.max(np.abs(got[fin] - ref[fin]))) / scale
        assert err <= tol, f"{what}: finite values rel err {err:.3g} > {tol:g}"


def sprinkle(rng: np.random.Generator, a: np.ndarray, values: tuple, count: int) -> np.ndarray:
    """Sets ``count`` random elements of ``a`` (in place) to values drawn from ``values``."""
    flat = a.reshape(-1)
    idx = rng.choice(flat.size, size=min(count, flat.size), replace=False)
    flat[idx] = rng.choice(np.array(values, np.float64), size=idx.size)
    return a


# ---- the functional API ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(
    "values", [(np.nan,), (np.inf, -np.inf), (np.nan, np.inf, -np.inf)], ids=["nan", "inf", "mix"]
)
@pytest.mark.parametrize(
    "stride, padding, dilation, groups", [(1, 0, 1, 1), (2, 1, 2, 1), (3, 2, 1, 1)]
)
def test_forward_propagates_nonfinite_input(
    device: Any,
    rng: np.random.Generator,
    dtype: str,
    values: tuple,
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
) -> None:
    x = rng.uniform(-1, 1, (2, 7, 5, 6)).astype(dtype)
    sprinkle(rng, x, values, 6)
    w = rng.uniform(0.1, 1, (7, 5, 3, 3)) * rng.choice([-1, 1], (7, 5, 3, 3))  # no zero weight
    w = w.astype(dtype)
    b = rng.uniform(-0.5, 0.5, 5 * groups).astype(dtype)
    ref = R.conv_transpose_torch_ref(x, w, b, stride, padding, 0, groups, dilation)
    out = poison(np.empty(ref.shape, dtype))
    got = convt.conv_transpose2d(
        x, w, b, stride, padding, 0, groups, dilation, out=out, device=device
    )
    assert np.isnan(ref).any() or np.isinf(ref).any()  # the case really has non-finite outputs
    assert np.isfinite(ref).any()  # ... and finite ones that must stay finite
    tol = FP16_TOL if dtype == "float16" else FP32_TOL
    assert_same_nonfinite(got, ref.astype(dtype), tol, f"forward {values}")


def test_forward_nonfinite_weight_and_bias(device: Any, rng: np.random.Generator) -> None:
    x = rng.uniform(-1, 1, (1, 3, 4, 5)).astype(np.float32)
    w = rng.uniform(-1, 1, (3, 2, 2, 2)).astype(np.float32)
    w[1, 0, 1, 0] = np.nan
    w[2, 1, 0, 1] = np.inf
    b = np.array([0.25, np.nan], np.float32)
    ref = R.conv_transpose_torch_ref(x, w, b, stride=2)
    got = convt.conv_transpose2d(x, w, b, stride=2, device=device)
    assert_same_nonfinite(got, ref.astype(np.float32), FP32_TOL, "nonfinite weight/bias")


# (cin, cout, groups, (H, W), k, stride, padding, output_padding): layers large enough for each
# fast path of the CPU backend (GEMM forward and dX, indirect dX at stride 3, depthwise, the
# narrow row paths) and of the GPU kernels, whose zero padding times an infinite weight would
# make NaN where the reference adds nothing.
NONFINITE_WEIGHT_LAYERS = {
    "gemm_s2": (8, 8, 1, (3, 20), 3, 2, 1, 1),
    "gemm_s1": (16, 16, 1, (3, 20), 3, 1, 1, 0),
    "tile_major_s2": (23, 5, 1, (3, 16), 4, 2, 1, 0),
    "tile_major_s3": (23, 2, 1, (3, 32), 9, 3, 4, 2),
    "depthwise": (6, 6, 6, (4, 21), 3, 2, 1, 0),
    "narrow": (9, 2, 1, (3, 24), 4, 2, 1, 0),
}


@pytest.mark.parametrize("layer", sorted(NONFINITE_WEIGHT_LAYERS))
def test_nonfinite_weight_reaches_only_its_taps(
    device: Any, rng: np.random.Generator, layer: str
) -> None:
    """An infinite weight makes +-Inf (or NaN, Inf - Inf) only in the outputs and input
    gradients its tap reaches; every other element stays finite, forward and dX."""
    cin, cout, groups, size, k, stride, padding, op = NONFINITE_WEIGHT_LAYERS[layer]
    kw = dict(stride=stride, padding=padding, output_padding=op, groups=groups)
    x = rng.uniform(-1, 1, (2, cin, *size)).astype(np.float32)
    w = rng.uniform(-1, 1, (cin, cout // groups, k, k)).astype(np.float32)
    w[1, 0, 0, 0] = np.inf
    w[cin - 1, cout // groups - 1, k - 1, k // 2] = -np.inf
    ref = R.conv_transpose_torch_ref(x, w, None, **kw)
    got = convt.conv_transpose2d(x, w, None, **kw, device=device)
    assert np.isfinite(ref).any() and not np.isfinite(ref).all()
    assert_same_nonfinite(got, ref.astype(np.float32), FP32_TOL, f"{layer} forward")
    g = rng.uniform(-1, 1, ref.shape).astype(np.float32)
    ref_dx = R.conv_transpose_torch_backward(g, x, w, **kw)[0]
    got_dx = convt.conv_transpose2d_backward(g, x, w, **kw, device=device)[0]
    assert_same_nonfinite(got_dx, ref_dx.astype(np.float32), FP32_TOL, f"{layer} dX")


# (cin, cout, (H, W), k, stride, padding, dilation): layers whose forward and dX the CPU runs
# through Winograd transforms: 3x3 at stride 1 (16 or more channels), and 4x4 (or 3x3) at stride
# 2 (2x2 taps a phase): dX from 64 channels each way, the forward (4x4) from 256 x 256.
WINOGRAD_LAYERS = {
    "s1": (17, 18, (6, 9), 3, 1, 1, 1),
    "s1_dilated": (17, 18, (6, 9), 3, 1, 1, 2),
    # Rows 16 wide at dilation 2: each output row woven whole from its two column phases.
    "s1_dilated_woven": (17, 18, (6, 16), 3, 1, 2, 2),
    "s2_dx": (64, 66, (5, 6), 4, 2, 1, 1),
    "s2_forward": (256, 256, (3, 4), 4, 2, 1, 1),
    # 3x3 at stride 2 (an odd kernel): dX as a 4x4 one whose last taps are zero.
    "s2_odd_dx": (64, 66, (5, 6), 3, 2, 1, 1),
    # One kernel row (1-D layers): one-row tiles, F(2, 2) and F(2, 3) along the row.
    "1d_s8_forward": (512, 256, (1, 7), (1, 16), (1, 8), (0, 4), 1),
    "1d_k3_dilated": (17, 18, (1, 20), (1, 3), 1, (0, 2), (1, 2)),
}


@pytest.mark.parametrize("values", [(np.nan,), (np.inf, -np.inf)], ids=["nan", "inf"])
@pytest.mark.parametrize("layer", sorted(WINOGRAD_LAYERS))
def test_winograd_layer_keeps_nonfinite_pattern(
    device: Any, rng: np.random.Generator, values: tuple, layer: str
) -> None:
    """Layers that go through Winograd transforms on the CPU, whose subtractions would turn an
    Inf into NaN where the contract has Inf, and spread it over a 2x2 tile: forward and dX must
    still match the reference element by element."""
    cin, cout, size, k, stride, padding, dilation = WINOGRAD_LAYERS[layer]
    kw = dict(stride=stride, padding=padding, output_padding=0, groups=1, dilation=dilation)
    x = rng.uniform(-1, 1, (2, cin, *size)).astype(np.float32)
    shape = (cin, cout, *(k if isinstance(k, tuple) else (k, k)))
    w = rng.uniform(0.1, 1, shape) * rng.choice([-1, 1], shape)
    w = w.astype(np.float32)
    sprinkle(rng, x, values, 2)
    ref = R.conv_transpose_torch_ref(x, w, None, **kw)
    got = convt.conv_transpose2d(x, w, None, **kw, device=device)
    assert np.isfinite(ref).any() and not np.isfinite(ref).all()
    assert_same_nonfinite(got, ref.astype(np.float32), FP32_TOL, f"{values} forward")
    g = rng.uniform(-1, 1, ref.shape).astype(np.float32)
    sprinkle(rng, g, values, 2)
    ref_dx = R.conv_transpose_torch_backward(g, x, w, **kw)[0]
    got_dx = convt.conv_transpose2d_backward(g, x, w, **kw, device=device)[0]
    assert not np.isfinite(ref_dx).all()
    assert_same_nonfinite(got_dx, ref_dx.astype(np.float32), FP32_TOL, f"{values} dX")


@pytest.mark.parametrize("values", [(np.nan,), (np.inf, -np.inf)], ids=["nan", "inf"])
@pytest.mark.parametrize("where", ["grad_output", "x"])
def test_winograd_weight_gradient_keeps_nonfinite_pattern(
    device: Any, rng: np.random.Generator, values: tuple, where: str
) -> None:
    """dW of a 3x3 stride-1 layer with 64 or more channels each way goes through the transforms
    on the CPU; a non-finite X or dY must still give the reference's NaN and Inf pattern."""
    kw = dict(stride=1, padding=1, output_padding=0, groups=1, dilation=1)
    x = rng.uniform(-1, 1, (2, 64, 5, 6)).astype(np.float32)
    w = rng.uniform(-1, 1, (64, 65, 3, 3)).astype(np.float32)
    g = rng.uniform(-1, 1, (2, 65, 5, 6)).astype(np.float32)
    sprinkle(rng, x if where == "x" else g, values, 1)
    ref = R.conv_transpose_torch_backward(g, x, w, **kw)[1]
    got = convt.conv_transpose2d_backward(g, x, w, **kw, device=device)[1]
    assert np.isfinite(ref).any() and not np.isfinite(ref).all()
    assert_same_nonfinite(got, ref.astype(np.float32), FP32_TOL, f"{values} in {where}: dW")


@pytest.mark.parametrize("where", ["grad_output", "x"])
def test_backward_propagates_nan(device: Any, rng: np.random.Generator, where: str) -> None:
    x = rng.uniform(-1, 1, (2, 6, 4, 5)).astype(np.float32)
    w = rng.uniform(-1, 1, (6, 7, 3, 2)).astype(np.float32)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2 if where == "x" else 1)
    if kw["groups"] == 2:
        w = w[:, :3].copy()
    fwd = R.conv_transpose_torch_ref(x, w, None, **kw)
    g = rng.uniform(-1, 1, fwd.shape).astype(np.float32)
    sprinkle(rng, x if where == "x" else g, (np.nan,), 3)
    ref = R.conv_transpose_torch_backward(g, x, w, **kw)
    got = convt.conv_transpose2d_backward(g, x, w, **kw, device=device)
    for name, a, r in zip(("grad_input", "grad_weight", "grad_bias"), got, ref):
        assert_same_nonfinite(a, r.astype(np.float32), FP32_TOL, f"{name}, NaN in {where}")
    assert np.isnan(ref[1]).any(), "the case must make some of grad_weight NaN"


@pytest.mark.parametrize("together", [False, True], ids=["dW_alone", "with_dX"])
@pytest.mark.parametrize("layer", sorted(NONFINITE_WEIGHT_LAYERS))
def test_weight_gradient_nonfinite_edge_columns(
    device: Any, rng: np.random.Generator, layer: str, together: bool
) -> None:
    """Inf and NaN in X's first and last columns: they reach only the dW taps that meet those
    columns. Padding crops the others there, and a kernel that multiplied the padding's zeros
    by them would make NaN in taps the reference leaves finite (the CPU's depthwise dW sums
    whole rows of eight columns)."""
    cin, cout, groups, size, k, stride, padding, op = NONFINITE_WEIGHT_LAYERS[layer]
    kw = dict(stride=stride, padding=padding, output_padding=op, groups=groups)
    x = rng.uniform(-1, 1, (2, cin, *size)).astype(np.float32)
    x[0, 0, 1, 0] = np.inf
    x[1, cin - 1, 0, -1] = np.nan
    w = rng.uniform(-1, 1, (cin, cout // groups, k, k)).astype(np.float32)
    g = rng.uniform(-1, 1, R.conv_transpose_torch_ref(x, w, None, **kw).shape).astype(np.float32)
    ref = R.conv_transpose_torch_backward(g, x, w, **kw)[1]
    mask = (together, True, False)
    got = convt.conv_transpose2d_backward(g, x, w, **kw, output_mask=mask, device=device)[1]
    assert np.isfinite(ref).any() and not np.isfinite(ref).all()
    assert_same_nonfinite(got, ref.astype(np.float32), FP32_TOL, f"{layer} dW")


# ---- the MPS-style API: inserted zeros and neurons -------------------------------------------


def test_mps_nan_does_not_leak_into_inserted_zeros(device: Any, rng: np.random.Generator) -> None:
    """A NaN source pixel reaches only the destination pixels whose taps read it."""
    w = rng.uniform(0.1, 1, (3, 3, 3, 2)).astype(np.float32)
    conv = build_transpose(device, w, stride=3, kernel_weights_dtype="float32")
    src = rng.uniform(-1, 1, (1, 2, 4, 4)).astype(np.float32)
    src[0, 1, 0, 0] = np.nan
    src[0, 0, 2, 3] = np.inf
    dst = run_encoded(device, lambda cb: conv.encode(cb, convt.Image(src)))
    ref = R.conv_transpose_mps(src, w, stride=3, T=(0, 0), dst_hw=dst.array.shape[2:])
    assert np.isnan(ref).sum() < ref.size // 4  # NaN stays local
    assert_same_nonfinite(dst.array, ref.astype(np.float32), FP32_TOL, "MPS stride 3")


# (type, parameters): defaults and parameter sets that map NaN, Inf and large values differently.
NEURONS = [
    ("none", {}),
    ("relu", {}),
    ("relu", {"a": 0.1}),
    ("linear", {"a": 1.5, "b": -0.25}),
    ("sigmoid", {}),
    ("hard_sigmoid", {}),
    ("hard_sigmoid", {"a": 0.3, "b": 0.4}),
    ("tanh", {"a": 0.8, "b": 1.3}),
    ("abs", {}),
    ("softplus", {}),
    ("softsign", {}),
    ("elu", {"a": 0.6}),
    ("prelu", {}),
    ("relun", {}),
    ("relun", {"a": 0.1, "b": 0.5}),
    ("power", {}),
    ("power", {"a": 0.5, "b": 2.0, "c": 2.0}),
    ("power", {"a": 1.0, "b": 0.0, "c": 0.0}),  # pow(NaN, 0) == 1 in C and in numpy
    ("exponential", {}),
    ("exponential", {"a": 0.25, "c": 2.0}),
    ("logarithm", {}),
    ("logarithm", {"a": 0.05, "b": 2.0, "c": 10.0}),
    ("gelu", {}),
]
SPECIAL = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, 1.0, -1.0, 3.5, -2.25]


def test_every_neuron_type_is_covered() -> None:
    assert {n for n, _ in NEURONS} == set(R.NEURON_TYPES)
    assert len(R.NEURON_TYPES) == 16


@pytest.mark.parametrize(
    "neuron, params", NEURONS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(NEURONS)]
)
def test_neuron_keeps_nan(device: Any, rng: np.random.Generator, neuron: str, params: dict) -> None:
    """Depthwise 1x1 unit weights, so the neuron sees exactly the special values (a dense
    identity would multiply each NaN by the zero weights of the other channels)."""
    channels = 3
    if neuron == "prelu":
        params = {"data": rng.uniform(-0.5, 0.5, channels).astype(np.float32)}
    n = R.Neuron(neuron, **params)
    w = np.ones((channels, 1, 1, 1), np.float32)
    conv = build_transpose(device, w, groups=channels, neuron=n, kernel_weights_dtype="float32")
    values = np.concatenate([SPECIAL, rng.uniform(-4, 4, 3 * 7 * 5 - len(SPECIAL))])
    src = rng.permutation(values).reshape(1, channels, 7, 5).astype(np.float32)
    dst = poison(np.empty_like(src))
    run_encoded(
        device,
        lambda cb: conv.encode(cb, convt.Image(src), destination_image=convt.Image(dst)),
    )
    with np.errstate(all="ignore"):
        ref = R.apply_neuron(src, n.type, n.a, n.b, n.c, n.data).astype(np.float32)
    assert_same_nonfinite(dst, ref, FP32_TOL, f"neuron {neuron} {params}")
    # The point of the test: NaN in, NaN out, unless the formula's own maths says otherwise.
    keeps_nan = not (neuron == "power" and params.get("c") == 0.0)
    assert np.isnan(dst[np.isnan(src)]).all() == keeps_nan
