"""Property-based tests (hypothesis) of the functional and MPS-style APIs against the float64
oracle in tests/reference.py, over shapes, strides, padding, output padding, dilation, groups,
dtypes, layouts, strided / transposed / negative-stride views, and (MPS-style) padding policies,
gradient-state sizing, offsets, clip rectangles, channel offsets and image offsets.

Profiles: "ci" (default; bounded, derandomized so CI is reproducible) and "long" (many more
examples, random): ``CONVT_HYPOTHESIS_PROFILE=long`` or tools/run_long_checks.sh. Each test counts
its examples; the counts are printed at the end of the module (pytest -s) and written as JSON to
``$CONVT_HYPOTHESIS_REPORT`` when that is set.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any

import convt
import numpy as np
import pytest
import reference as R
from _helpers import (
    FP16_TOL,
    FP32_TOL,
    assert_close,
    assert_written,
    case_gradient_state,
    mps_case_kwargs,
    poison,
    run_encoded,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

_COMMON = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("ci", max_examples=150, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=1500, **_COMMON)
PROFILE = os.environ.get("CONVT_HYPOTHESIS_PROFILE", "ci")
SETTINGS = settings.get_profile(PROFILE)
COUNTS: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Any:
    yield
    print(f"\nhypothesis examples ({PROFILE} profile): {dict(sorted(COUNTS.items()))}")
    path = os.environ.get("CONVT_HYPOTHESIS_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"profile": PROFILE, "examples": COUNTS}, f, indent=1)


def count(test: str, device: Any) -> None:
    COUNTS[f"{test}[{device.kind}]"] += 1


# ---- storage: the same NCHW values in different memory layouts --------------------------------

STORAGE = ("NCHW", "NHWC", "strided", "nhwc-view", "negative", "negative-nhwc")


def store(nchw: np.ndarray, kind: str, dtype: Any) -> tuple[np.ndarray, str, np.ndarray]:
    """(array to pass, layout, base array whose every element outside the view is NaN)."""
    n, c, h, w = nchw.shape
    if kind == "NCHW":
        a = np.ascontiguousarray(nchw, dtype=dtype)
        return a, "NCHW", a
    if kind == "NHWC":
        a = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1), dtype=dtype)
        return a, "NHWC", a
    if kind == "strided":  # gaps in C, H and W, odd offsets
        base = np.full((n, 2 * c + 1, 2 * h, w + 3), np.nan, dtype)
        view = base[:, 1::2, ::2, 2 : w + 2]
        view[...] = nchw
        return view, "NCHW", base
    if kind == "nhwc-view":  # NHWC order over NCHW memory
        base = np.ascontiguousarray(nchw, dtype=dtype)
        return base.transpose(0, 2, 3, 1), "NHWC", base
    if kind == "negative":  # every stride negative
        base = np.full((n, c, h, w), np.nan, dtype)
        view = base[::-1, ::-1, ::-1, ::-1]
        view[...] = nchw
        return view, "NCHW", base
    # NHWC with negative H and W strides and a gap in C
    base = np.full((n, h, w, c + 2), np.nan, dtype)
    view = base[:, ::-1, ::-1, 1 : c + 1]
    view[...] = nchw.transpose(0, 2, 3, 1)
    return view, "NHWC", base


def as_nchw(a: np.ndarray, layout: str) -> np.ndarray:
    return a if layout == "NCHW" else a.transpose(0, 3, 1, 2)


# ---- PyTorch-convention geometry ---------------------------------------------------------------


@st.composite
def torch_geometry(draw: Any, one_d: bool = False) -> dict:
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    g = {
        "groups": groups,
        "cin": groups * draw(st.integers(1, 3)),
        "cout": groups * draw(st.integers(1, 3)),
        "n": draw(st.integers(1, 2)),
        "dtype": draw(st.sampled_from(["float32", "float32", "float16"])),
        "storage": draw(st.sampled_from(STORAGE)),
        "bias": draw(st.booleans()),
    }
    if draw(st.booleans()):  # the odd channel counts of real layers
        g["cin"], g["cout"] = draw(st.sampled_from([(7, 23), (23, 7), (7, 7)]))
        g["groups"] = 1
    for key in ("k", "s", "d", "p", "op", "hw"):
        g[key] = [1, 1] if key not in ("p", "op") else [0, 0]
    for ax in (1,) if one_d else (0, 1):
        k, s, d = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        keff = R.effective_kernel(k, d)
        p = draw(st.integers(0, keff - 1))
        op = draw(st.integers(0, max(s, d) - 1))
        hw = draw(st.integers(1, 6))
        assume((hw - 1) * s - 2 * p + keff + op >= 1)
        g["k"][ax], g["s"][ax], g["d"][ax], g["p"][ax], g["op"][ax], g["hw"][ax] = (
            k, s, d, p, op, hw,
        )  # fmt: skip
    return g


def torch_kwargs(g: dict, one_d: bool) -> dict:
    pick = (lambda v: v[1]) if one_d else tuple
    return dict(
        stride=pick(g["s"]),
        padding=pick(g["p"]),
        output_padding=pick(g["op"]),
        groups=g["groups"],
        dilation=pick(g["d"]),
    )


def torch_data(g: dict, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(g["dtype"])
    x = rng.uniform(-1, 1, (g["n"], g["cin"], *g["hw"])).astype(dtype)
    fan_in = g["cin"] // g["groups"] * g["k"][0] * g["k"][1]
    shape = (g["cin"], g["cout"] // g["groups"], *g["k"])
    w = (rng.uniform(-1, 1, shape) / np.sqrt(fan_in)).astype(dtype)
    b = rng.uniform(-0.5, 0.5, g["cout"]).astype(dtype) if g["bias"] else None
    return x, w, b


def squeeze_1d(a: np.ndarray, layout: str) -> tuple[np.ndarray, str]:
    """(N, C, 1, L) / (N, 1, L, C) views as (N, C, L) / (N, L, C)."""
    return (a[:, :, 0], "NCL") if layout == "NCHW" else (a[:, 0], "NLC")


@SETTINGS
@given(g=torch_geometry(), seed=st.integers(0, 2**32 - 1), with_out=st.booleans())
def test_conv_transpose2d_matches_reference(device: Any, g: dict, seed: int, with_out: bool):
    x, w, b = torch_data(g, seed)
    kw = torch_kwargs(g, False)
    ref = R.conv_transpose_torch_ref(x, w, b, **kw)
    x_arr, layout, _ = store(x, g["storage"], x.dtype)
    out = base = None
    if with_out:
        out, _, base = store(np.full(ref.shape, np.nan), g["storage"], x.dtype)
        poison(base)
    got = convt.conv_transpose2d(x_arr, w, b, **kw, out=out, layout=layout, device=device)
    if with_out:
        assert got is out
        assert np.isnan(base).sum() == base.size - got.size, "wrote outside the out view"
    tol = FP16_TOL if x.dtype == np.float16 else FP32_TOL
    assert_close(as_nchw(got, layout), ref.astype(x.dtype), tol, f"{g}")
    np.testing.assert_array_equal(as_nchw(x_arr, layout), x)  # the input is untouched
    count("conv_transpose2d", device)


@SETTINGS
@given(g=torch_geometry(one_d=True), seed=st.integers(0, 2**32 - 1))
def test_conv_transpose1d_matches_reference(device: Any, g: dict, seed: int):
    x, w, b = torch_data(g, seed)
    kw = torch_kwargs(g, True)
    ref = R.conv_transpose1d_torch_ref(x[:, :, 0], w[:, :, 0], b, **kw)
    x_arr, layout, _ = store(x, g["storage"], x.dtype)
    x1, layout1 = squeeze_1d(x_arr, layout)
    got = convt.conv_transpose1d(x1, w[:, :, 0], b, **kw, layout=layout1, device=device)
    got_ncl = got if layout1 == "NCL" else got.transpose(0, 2, 1)
    tol = FP16_TOL if x.dtype == np.float16 else FP32_TOL
    assert_close(got_ncl, ref.astype(x.dtype), tol, f"{g}")
    count("conv_transpose1d", device)


@SETTINGS
@given(
    g=torch_geometry(),
    seed=st.integers(0, 2**32 - 1),
    mask=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_conv_transpose2d_backward_matches_reference(device: Any, g: dict, seed: int, mask):
    x, w, _ = torch_data(g, seed)
    kw = torch_kwargs(g, False)
    shape = (g["n"], g["cout"])
    out_hw = [
        (n - 1) * s - 2 * p + R.effective_kernel(k, d) + op
        for n, s, p, k, d, op in zip(g["hw"], g["s"], g["p"], g["k"], g["d"], g["op"])
    ]
    rng = np.random.default_rng(seed + 1)
    gy = rng.uniform(-1, 1, (*shape, *out_hw)).astype(x.dtype)
    ref = R.conv_transpose_torch_backward(gy, x, w, **kw)
    x_arr, layout, _ = store(x, g["storage"], x.dtype)
    gy_arr, _, _ = store(gy, g["storage"], x.dtype)
    got = convt.conv_transpose2d_backward(
        gy_arr, x_arr, w, **kw, output_mask=mask, layout=layout, device=device
    )
    # fp16 gradients are summed in fp32 and rounded once; grad_weight sums over N*H*W products.
    tol = FP16_TOL if x.dtype == np.float16 else FP32_TOL
    for name, want, a, r in zip(("grad_input", "grad_weight", "grad_bias"), mask, got, ref):
        if not want:
            assert a is None, name
            continue
        if name == "grad_input":
            assert a.shape == x_arr.shape
            a = as_nchw(a, layout)
        assert_close(a, r.astype(x.dtype), tol, f"{name} {g}")
    count("conv_transpose2d_backward", device)


# ---- MPS-style geometry ------------------------------------------------------------------------

NEURONS = [None, ("relu", {"a": 0.1}), ("sigmoid", {}), ("hard_sigmoid", {}), ("tanh", {})]


@st.composite
def mps_case(draw: Any, paths: tuple = ("auto", "manual")) -> dict:
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c = {
        "groups": groups,
        "ig": draw(st.integers(1, 3)),
        "og": draw(st.integers(1, 3)),
        "dtype": draw(st.sampled_from(["float32", "float32", "float16"])),
        "kernel_weights": draw(st.sampled_from(["float16", "float32"])),
        "bias": draw(st.booleans()),
        "neuron": draw(st.sampled_from(NEURONS)),
        "src_storage": draw(st.sampled_from(STORAGE)),
        "dst_storage": draw(st.sampled_from(STORAGE)),
        "sfo": draw(st.integers(0, 2)),
        "src_extra": draw(st.integers(0, 2)),
        "k": [draw(st.integers(1, 4)) for _ in range(2)],
        "s": [draw(st.integers(1, 3)) for _ in range(2)],
        "d": [draw(st.integers(1, 3)) for _ in range(2)],
        "hw": [draw(st.integers(1, 5)) for _ in range(2)],
    }
    if draw(st.booleans()):
        c["groups"], c["ig"], c["og"] = 1, 7, draw(st.sampled_from([7, 23]))
    fan_in = c["k"][0] * c["k"][1] * c["ig"]
    half_ok = c["kernel_weights"] == "float16" and fan_in <= 16
    c["accumulator"] = draw(st.sampled_from(["float", "half"])) if half_ok else "float"
    c["max_count"] = draw(st.one_of(st.none(), st.integers(0, 2)))
    c["path"] = draw(st.sampled_from(paths))
    if c["path"] == "auto":
        c["n_src"] = draw(st.integers(1, 2))
        size = draw(st.sampled_from([R.SIZE_VALID_ONLY, R.SIZE_SAME, R.SIZE_FULL]))
        align = draw(st.integers(0, 3))
        c["policy"] = size | align | draw(st.sampled_from([0, 4, 8, 12]))
        c["state"] = None
        if draw(st.booleans()):  # a forward convolution's gradient state decides the sizing
            method = draw(st.sampled_from([R.SIZE_VALID_ONLY, R.SIZE_SAME, R.SIZE_FULL]))
            method |= draw(st.integers(0, 2)) | draw(st.sampled_from([0, 4, 8, 12]))
            n_fwd, fwd = [], []
            for a in range(2):
                keff = R.effective_kernel(c["k"][a], c["d"][a])
                n_fwd.append(draw(st.integers(1, c["hw"][a] * c["s"][a] + keff)))
                fwd.append(R.forward_size_and_offset(method, n_fwd[a], c["s"][a], keff, "yx"[a]))
            assume(all(1 <= f[0] <= 6 for f in fwd))
            c["state"] = {"method": method, "n_fwd": n_fwd, "fwd": fwd}
            c["hw"] = [f[0] for f in fwd]
    else:
        c["n_src"], c["n_dst"] = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        c["offset_z"] = draw(st.integers(0, c["n_src"] - 1))
        c["T"], c["offset"], c["dst_hw"] = [], [], []
        for a in range(2):
            keff = R.effective_kernel(c["k"][a], c["d"][a])
            c["T"].append(draw(st.integers(-keff - 1, keff + 1)))
            c["offset"].append(draw(st.integers(-2, 2)))
            c["dst_hw"].append(draw(st.integers(1, (c["hw"][a] - 1) * c["s"][a] + keff + 2)))
        c["dfo"] = draw(st.integers(0, 2))
        c["dst_extra"] = draw(st.integers(0, 2))
        c["clip"] = None
        if draw(st.booleans()):
            hd, wd = c["dst_hw"]
            x0, y0 = draw(st.integers(0, wd - 1)), draw(st.integers(0, hd - 1))
            c["clip"] = (
                x0,
                y0,
                draw(st.integers(0, c["n_dst"] - 1)),
                draw(st.integers(1, wd - x0 + 2)),
                draw(st.integers(1, hd - y0 + 2)),
                draw(st.integers(1, 3)),
            )
    return c


def mps_tolerance(c: dict) -> float:
    return FP16_TOL if c["dtype"] == "float16" or c["accumulator"] == "half" else FP32_TOL


@SETTINGS
@given(c=mps_case(), seed=st.integers(0, 2**32 - 1))
def test_mps_encode_matches_reference(device: Any, c: dict, seed: int):
    run_mps(device, c, seed, gradient=False)


@SETTINGS
@given(c=mps_case(paths=("manual",)), seed=st.integers(0, 2**32 - 1))
def test_mps_gradient_matches_reference(device: Any, c: dict, seed: int):
    """The forward encode's state, then ConvolutionTransposeGradient: dX (into a poisoned
    destination_gradient in any storage), dW and dB against the reference."""
    run_mps(device, c, seed, gradient=True)


def run_mps(device: Any, c: dict, seed: int, gradient: bool) -> None:
    rng = np.random.default_rng(seed)
    groups, ig, og = c["groups"], c["ig"], c["og"]
    in_ch, out_ch = groups * ig, groups * og
    dtype = np.dtype(c["dtype"])
    w = rng.uniform(-1, 1, (out_ch, *c["k"], ig)) / np.sqrt(ig * c["k"][0] * c["k"][1])
    w = w.astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, out_ch).astype(np.float32) if c["bias"] else None
    neuron = None if c["neuron"] is None else R.Neuron(c["neuron"][0], **c["neuron"][1])
    desc = convt.ConvolutionDescriptor(c["k"][1], c["k"][0], in_ch, out_ch)
    desc.stride_in_pixels_y, desc.stride_in_pixels_x = c["s"]
    desc.dilation_rate_y, desc.dilation_rate_x = c["d"]
    desc.groups = groups
    if neuron is not None:
        desc.fused_neuron_descriptor = convt.NeuronDescriptor(
            getattr(convt.NeuronType, neuron.type), **c["neuron"][1]
        )
    source = convt.ArrayDataSource(
        desc, w, bias, kernel_weights_data_type=getattr(convt.DataType, c["kernel_weights"])
    )
    kernel = convt.ConvolutionTranspose(device, source)
    kernel.accumulator_precision = getattr(convt.AccumulatorPrecision, c["accumulator"])
    kernel.source_feature_channel_offset = c["sfo"]
    if c["max_count"] is not None:
        kernel.source_feature_channel_max_count = in_ch + c["max_count"]
    w_ref, b_ref = R.prepare_weights(w, bias, None, c["kernel_weights"])

    src = rng.uniform(-1, 1, (c["n_src"], c["sfo"] + in_ch + c["src_extra"], *c["hw"]))
    src = src.astype(dtype)
    src_arr, src_layout, _ = store(src, c["src_storage"], dtype)
    common = mps_case_kwargs(c, groups, neuron, dtype)
    if c["path"] == "auto":
        kernel.padding = convt.Padding(c["policy"])
        state = case_gradient_state(c)
        if state is not None:
            nf = c["state"]["n_fwd"]
            expect = [
                R.autoencoder_override(nf[a], c["k"][a], c["state"]["fwd"][a][1]) for a in range(2)
            ]
        else:
            expect = [
                R.transpose_offset(
                    c["policy"],
                    c["hw"][a],
                    c["s"][a],
                    R.effective_kernel(c["k"][a], c["d"][a]),
                    "yx"[a],
                )  # fmt: skip
                for a in range(2)
            ]
        (hd, ty), (wd, tx) = expect
        assume(hd >= 1 and wd >= 1)  # ValidOnly can size a destination to nothing
        img = convt.Image(src_arr, layout=src_layout)
        out = run_encoded(device, lambda cb: kernel.encode(cb, img, state))
        assert (out.number_of_images, out.feature_channels, out.height, out.width) == (
            c["n_src"], out_ch, hd, wd,
        )  # fmt: skip
        assert (kernel.offset[0], kernel.kernel_offset_x) == R.split(tx, c["s"][1])
        assert (kernel.offset[1], kernel.kernel_offset_y) == R.split(ty, c["s"][0])
        ref = R.conv_transpose_mps(src, w_ref, b_ref, T=(ty, tx), dst_hw=(hd, wd), **common)
        assert_close(as_nchw(out.array, out.layout), ref, mps_tolerance(c), f"{c}")
    else:
        kernel.offset = (c["offset"][1], c["offset"][0], c["offset_z"])
        kernel.kernel_offset_y = c["T"][0] - c["offset"][0] * c["s"][0]
        kernel.kernel_offset_x = c["T"][1] - c["offset"][1] * c["s"][1]
        kernel.destination_feature_channel_offset = c["dfo"]
        if c["clip"] is not None:
            kernel.clip_rect = convt.Region(*c["clip"])
        dst_shape = (c["n_dst"], c["dfo"] + out_ch + c["dst_extra"], *c["dst_hw"])
        dst_arr, dst_layout, dst_base = store(np.full(dst_shape, np.nan), c["dst_storage"], dtype)
        poison(dst_base)
        dst_img = convt.Image(dst_arr, layout=dst_layout)
        src_img = convt.Image(src_arr, layout=src_layout)
        if gradient:
            check_gradient(device, c, kernel, source, src, src_img, dst_img, w_ref, rng)
            return
        run_encoded(device, lambda cb: kernel.encode(cb, src_img, destination_image=dst_img))
        ref = R.conv_transpose_mps(
            src, w_ref, b_ref, T=tuple(c["T"]), dst=np.full(dst_shape, np.nan), clip=c["clip"],
            offset_z=c["offset_z"], dst_c_offset=c["dfo"], **common,
        )  # fmt: skip
        mask = R.written_mask(dst_shape, out_ch, c["clip"], c["n_src"], c["offset_z"], c["dfo"])
        got = as_nchw(dst_arr, dst_layout)
        assert_written(got, ref, mask, mps_tolerance(c), f"{c}")
        written = int(mask.sum())
        assert int(np.sum(~np.isnan(dst_base))) <= written, "wrote outside the destination view"
    np.testing.assert_array_equal(as_nchw(src_arr, src_layout), src)
    count(f"ConvolutionTranspose.encode-{c['path']}", device)


def check_gradient(device, c, kernel, source, src, src_img, dst_img, w_ref, rng) -> None:
    grad = convt.ConvolutionTransposeGradient(device, source)
    dtype = src.dtype
    _, state = run_encoded(
        device,
        lambda cb: kernel.encode(cb, src_img, destination_image=dst_img, destination_state=True),
    )
    dst_shape = as_nchw(dst_img.array, dst_img.layout).shape
    dy = rng.uniform(-1, 1, dst_shape).astype(dtype)
    dy_arr, dy_layout, _ = store(dy, c["dst_storage"], dtype)
    dx_arr, dx_layout, dx_base = store(np.full(src.shape, np.nan), c["src_storage"], dtype)
    poison(dx_base)
    dx_img = convt.Image(dx_arr, layout=dx_layout)
    run_encoded(
        device,
        lambda cb: grad.encode(cb, convt.Image(dy_arr, layout=dy_layout), src_img, state, dx_img),
    )
    in_ch = c["groups"] * c["ig"]
    dx_ref, dw_ref, db_ref = R.conv_transpose_mps_backward(
        dy, src, w_ref, tuple(c["s"]), tuple(c["d"]), c["groups"], tuple(c["T"]),
        clip=c["clip"], src_c_offset=c["sfo"], dst_c_offset=c["dfo"], offset_z=c["offset_z"],
        dx=np.full(src.shape, np.nan),
    )  # fmt: skip
    mask = R.gradient_written_mask(src.shape, in_ch, c["clip"], c["n_dst"], c["offset_z"], c["sfo"])
    tol = FP16_TOL if dtype == np.float16 else FP32_TOL
    assert_written(as_nchw(dx_arr, dx_layout), dx_ref, mask, tol, f"dX {c}")
    assert int(np.sum(~np.isnan(dx_base))) <= int(mask.sum()), "dX written outside its view"
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, f"dW {c}")
    assert_close(state.gradient_for_biases, db_ref, FP32_TOL, f"dB {c}")
    count("ConvolutionTransposeGradient.encode", device)
