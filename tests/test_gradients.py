"""The training path's maths: ConvolutionTransposeGradient (spec §5.3) and the functional
backward (PyTorch conventions) against the float64 oracle, plus gradient options, batches,
finite differences and determinism.

Cases are generated from ``(CONVT_SWEEP_SEED, api, index)``. Tolerances are normwise relative
errors: FP32_TOL with fp32 images (dW/dB are float32 sums, so the bound is normwise, like the
forward); FP16_TOL with fp16 images, or for dX when float32 batch-norm folding precedes the fp16
weight rounding (one fp32 ulp may flip an fp16 rounding, as in test_sweep).
"""

from __future__ import annotations

import os
from typing import Any

import convt
import numpy as np
import pytest
import reference as R
from _helpers import (
    FP16_TOL,
    FP32_TOL,
    OUTPUT_MASKS,
    STORAGE_KINDS,
    assert_close,
    assert_written,
    build_transpose_pair,
    encode_data_gradient,
    fix_padding,
    from_nchw,
    make_data_source,
    make_storage,
    poison,
    random_torch_geometry,
    run_encoded,
    set_total_offset,
    to_nchw,
    torch_kwargs,
)

SEED = int(os.environ.get("CONVT_SWEEP_SEED", "20240611"))
N_MPS_CASES = 220
N_FUNCTIONAL_CASES = 120
CHANNELS = (1, 3, 7, 8, 23)
MAX_MACS = 1_000_000
MAX_REDUCTION = 1_500  # images x destination pixels summed into one dW/dB element


def pick(rng: np.random.Generator, options: Any, p: list | None = None) -> Any:
    return options[int(rng.choice(len(options), p=p))]


def pick_groups(rng: np.random.Generator) -> tuple[int, int, int]:
    """(groups, in channels per group, out channels per group): 1, 2, 4 or depthwise."""
    mode = pick(rng, ["1", "2", "4", "depthwise"], p=[0.45, 0.2, 0.15, 0.2])
    if mode == "1":
        return 1, pick(rng, CHANNELS), pick(rng, CHANNELS)
    if mode == "2":
        return 2, int(rng.integers(1, 5)), int(rng.integers(1, 4))
    if mode == "4":
        return 4, int(rng.integers(1, 3)), int(rng.integers(1, 3))
    return pick(rng, [1, 3, 7, 8]), 1, pick(rng, [1, 1, 2])


def random_bn(rng: np.random.Generator, out_ch: int) -> R.BatchNorm:
    f = np.float32
    return R.BatchNorm(
        mean=rng.uniform(-0.5, 0.5, out_ch).astype(f),
        variance=rng.uniform(0.5, 2.0, out_ch).astype(f),
        gamma=rng.uniform(0.5, 1.5, out_ch).astype(f),
        beta=rng.uniform(-0.5, 0.5, out_ch).astype(f),
        epsilon=1e-3,
    )


def random_policy(rng: np.random.Generator) -> int:
    size = pick(rng, [R.SIZE_VALID_ONLY, R.SIZE_SAME, R.SIZE_FULL])
    align = pick(rng, [R.ALIGN_CENTERED, R.ALIGN_CENTERED, R.ALIGN_TOP_LEFT, R.ALIGN_BOTTOM_RIGHT])
    return size | align | pick(rng, [0, 4, 8, 12])


def span(c: dict[str, Any], a: int) -> int:
    """Largest destination extent considered along axis a."""
    return (c["hw"][a] - 1) * c["s"][a] + R.effective_kernel(c["k"][a], c["d"][a]) + 2


def fit_budget(c: dict[str, Any], macs_per_tap: int, images: int, square: bool = False) -> None:
    """Shrink kernel and source sizes (in place) until the work and the length of the dW/dB
    reductions fit; ``square`` shrinks both axes together."""

    def too_big() -> bool:
        pixels = span(c, 0) * span(c, 1)
        return (
            images * macs_per_tap * c["k"][0] * c["k"][1] * pixels > MAX_MACS
            or images * pixels > MAX_REDUCTION
        )

    while too_big() and max(c["hw"] + c["k"]) > 1:
        a = int(np.argmax([span(c, 0), span(c, 1)]))
        key = "hw" if c["hw"][a] >= c["k"][a] else "k"
        for ax in (0, 1) if square else (a,):
            c[key][ax] = max(1, c[key][ax] - 1)


# ---------------------------------------------------------------------------------------------
# MPS-style gradient kernel sweep
# ---------------------------------------------------------------------------------------------


def grad_case(index: int) -> dict[str, Any]:
    """Geometry and options of one gradient case (no arrays)."""
    rng = np.random.default_rng([SEED, 11, index])
    groups, ig, og = pick_groups(rng)
    c: dict[str, Any] = {"index": index, "groups": groups, "ig": ig, "og": og}
    c["k"] = [int(v) for v in rng.integers(1, 8, 2)]
    if rng.random() < 0.15:
        c["k"][0] = 1
    c["s"] = [int(v) for v in rng.integers(1, 5, 2)]
    c["d"] = [int(v) for v in rng.integers(1, 4, 2)]
    c["hw"] = [int(v) for v in rng.integers(1, 8, 2)]
    c["path"] = pick(rng, ["auto", "manual"], p=[0.35, 0.65])
    images = int(rng.integers(1, 3)) if c["path"] == "auto" else int(rng.integers(1, 4))
    fit_budget(c, groups * og * ig, images)
    c["dtype"] = pick(rng, ["float32", "float16"], p=[0.6, 0.4])
    c["weights"] = pick(rng, ["float32", "float16"], p=[0.7, 0.3])
    fp32_kernel = c["weights"] == "float32" and rng.random() < 0.45
    c["kernel_weights"] = "float32" if fp32_kernel else "float16"
    c["bias"] = bool(rng.random() < 0.6)
    c["bn"] = bool(rng.random() < 0.25)
    c["neuron"] = pick(rng, ["relu", "tanh", "sigmoid"]) if rng.random() < 0.15 else None
    c["x_storage"] = pick(rng, STORAGE_KINDS)
    c["dy_storage"] = pick(rng, STORAGE_KINDS)
    c["dx_storage"] = pick(rng, STORAGE_KINDS)
    c["dx_given"] = bool(rng.random() < 0.6)
    c["option"] = pick(rng, ["all", "data", "weights_and_bias"], p=[0.8, 0.1, 0.1])
    c["sfo"] = int(rng.integers(0, 4)) if rng.random() < 0.4 else 0
    c["src_extra_channels"] = int(rng.integers(0, 3))
    c["max_count"] = None
    if rng.random() < 0.2:
        c["max_count"] = ig * groups + int(rng.integers(0, 3))
    if c["path"] == "auto":
        c["n"] = images
        c["policy"] = random_policy(rng)
        c["state_via"] = "encode"
        c["temporary"] = False
        c["forward_state"] = random_forward_state(rng, c) if rng.random() < 0.35 else None
        resolve_auto_geometry(c)
    else:
        c["n_src"], c["n_dst"] = images, int(rng.integers(1, 4))
        c["offset_z"] = int(rng.integers(0, c["n_src"]))
        c["state_via"] = pick(rng, ["result_state", "encode"])
        c["T"], c["offset"], c["dst_hw"] = [], [], []
        for ax in range(2):
            keff = R.effective_kernel(c["k"][ax], c["d"][ax])
            c["T"].append(int(rng.integers(-keff - 1, keff + 2)))
            c["offset"].append(int(rng.integers(-2, 3)))
            c["dst_hw"].append(int(rng.integers(1, span(c, ax) + 1)))
        c["dfo"] = int(rng.integers(0, 4)) if rng.random() < 0.4 else 0
        c["dst_extra_channels"] = int(rng.integers(0, 3))
        c["clip"] = None
        if rng.random() < 0.45:
            hd, wd = c["dst_hw"]
            x0, y0 = int(rng.integers(0, wd)), int(rng.integers(0, hd))
            c["clip"] = (
                x0,
                y0,
                int(rng.integers(0, c["n_dst"])),
                int(rng.integers(1, wd - x0 + 3)),
                int(rng.integers(1, hd - y0 + 3)),
                int(rng.integers(1, 4)),
            )
    return c


def random_forward_state(rng: np.random.Generator, c: dict[str, Any]) -> dict | None:
    """A paired forward convolution whose output is at most the source size, or None."""
    method = random_policy(rng)
    for _ in range(20):
        n_fwd, fwd = [], []
        for a in range(2):
            keff = R.effective_kernel(c["k"][a], c["d"][a])
            n_fwd.append(int(rng.integers(1, c["hw"][a] * c["s"][a] + 1)))
            fwd.append(R.forward_size_and_offset(method, n_fwd[a], c["s"][a], keff, "yx"[a]))
        if all(1 <= fwd[a][0] <= c["hw"][a] for a in range(2)):
            return {"method": method, "n_fwd": n_fwd, "fwd": fwd}
    return None


def resolve_auto_geometry(c: dict[str, Any]) -> None:
    """Source size and expected (dst, T) per axis for the auto-sizing path (in place)."""
    state = c["forward_state"]
    if state is not None:
        c["hw"] = [f[0] for f in state["fwd"]]
        c["expect"] = [
            R.autoencoder_override(state["n_fwd"][a], c["k"][a], state["fwd"][a][1])
            for a in range(2)
        ]
        return
    keff = [R.effective_kernel(c["k"][a], c["d"][a]) for a in range(2)]
    c["expect"] = [
        R.transpose_offset(c["policy"], c["hw"][a], c["s"][a], keff[a], "yx"[a]) for a in range(2)
    ]
    if min(e[0] for e in c["expect"]) < 1:  # ValidOnly can leave nothing: use Same instead
        c["policy"] = (c["policy"] & ~0x30) | R.SIZE_SAME
        c["expect"] = [
            R.transpose_offset(c["policy"], c["hw"][a], c["s"][a], keff[a], "yx"[a])
            for a in range(2)
        ]


def forward_state_object(c: dict[str, Any]) -> Any:
    if c["forward_state"] is None:
        return None
    nf = c["forward_state"]["n_fwd"]
    return convt.ConvolutionGradientState.for_forward(
        nf[1],
        nf[0],
        c["k"][1],
        c["k"][0],
        stride_x=c["s"][1],
        stride_y=c["s"][0],
        dilation_x=c["d"][1],
        dilation_y=c["d"][0],
        padding_method=c["forward_state"]["method"],
    )


@pytest.mark.parametrize("index", range(N_MPS_CASES))
def test_gradient_sweep(device: Any, index: int) -> None:
    run_gradient_case(device, grad_case(index))


def run_gradient_case(device: Any, c: dict[str, Any]) -> None:
    rng = np.random.default_rng([SEED, 12, c["index"]])
    what = f"gradient case {c}"
    groups, ig, og = c["groups"], c["ig"], c["og"]
    in_ch, out_ch = groups * ig, groups * og
    k_h, k_w = c["k"]
    dtype = np.dtype(c["dtype"])

    scale = 1.0 / np.sqrt(k_h * k_w * ig)
    weights = rng.uniform(-scale, scale, (out_ch, k_h, k_w, ig)).astype(c["weights"])
    bias = rng.uniform(-0.5, 0.5, out_ch).astype(np.float32) if c["bias"] else None
    bn = random_bn(rng, out_ch) if c["bn"] else None
    neuron = R.Neuron(c["neuron"]) if c["neuron"] else None
    fwd, grad = build_transpose_pair(
        device,
        weights,
        bias,
        stride=tuple(c["s"]),
        dilation=tuple(c["d"]),
        groups=groups,
        neuron=neuron,
        bn=bn,
        kernel_weights_dtype=c["kernel_weights"],
    )
    assert grad.source_gradient_feature_channels == out_ch, what
    assert grad.source_image_feature_channels == in_ch, what
    grad.gradient_option = getattr(convt.GradientOption, c["option"])
    fwd.source_feature_channel_offset = c["sfo"]
    if c["max_count"] is not None:
        fwd.source_feature_channel_max_count = c["max_count"]
    w_ref, _ = R.prepare_weights(weights, bias, bn, c["kernel_weights"])

    n_src = c["n"] if c["path"] == "auto" else c["n_src"]
    x_nchw = rng.uniform(-1, 1, (n_src, c["sfo"] + in_ch + c["src_extra_channels"], *c["hw"]))
    x_nchw = x_nchw.astype(dtype)
    x_arr, x_layout, _, _ = make_storage(x_nchw, c["x_storage"], dtype)
    x_before = x_arr.copy()
    x_img = convt.Image(x_arr, layout=x_layout)

    if c["path"] == "auto":
        fwd.padding = convt.Padding(c["policy"])
        (hd, ty), (wd, tx) = c["expect"]
        dst_shape = (n_src, out_ch, hd, wd)
        T, clip, offset_z, dfo, n_dst = (ty, tx), None, 0, 0, n_src
    else:
        fwd.offset = (0, 0, c["offset_z"])
        set_total_offset(fwd, tuple(c["T"]), tuple(c["offset"]))
        fwd.destination_feature_channel_offset = c["dfo"]
        if c["clip"] is not None:
            fwd.clip_rect = convt.Region(*c["clip"])
        dst_shape = (c["n_dst"], c["dfo"] + out_ch + c["dst_extra_channels"], *c["dst_hw"])
        T, clip, offset_z, dfo = tuple(c["T"]), c["clip"], c["offset_z"], c["dfo"]
        n_dst = c["n_dst"]
        dst_img = convt.Image(np.zeros(dst_shape, dtype))

    dy_nchw = rng.uniform(-1, 1, dst_shape).astype(dtype)
    dy_arr, dy_layout, _, _ = make_storage(dy_nchw, c["dy_storage"], dtype)
    dy_before = dy_arr.copy()
    dy_img = convt.Image(dy_arr, layout=dy_layout)
    dx_arr = dx_base = inside = None
    dx_img = None
    if c["dx_given"]:
        dx_arr, dx_layout, dx_base, inside = make_storage(
            np.full(x_nchw.shape, np.nan), c["dx_storage"], dtype
        )
        poison(dx_base)
        dx_img = convt.Image(dx_arr, layout=dx_layout)

    def encode(cb: Any) -> tuple[Any, Any]:
        if c["path"] == "auto":
            out, state = fwd.encode(
                cb,
                x_img,
                convolution_gradient_state=forward_state_object(c),
                destination_state=True,
            )
            assert (out.height, out.width, out.number_of_images) == (hd, wd, n_src), what
        elif c["state_via"] == "encode":
            out, state = fwd.encode(cb, x_img, destination_image=dst_img, destination_state=True)
            assert out is dst_img, what
        else:
            state = fwd.result_state(x_img, destination_image=dst_img)
        return grad.encode(cb, dy_img, x_img, state, destination_gradient=dx_img), state

    dx, state = run_encoded(device, encode)

    dx_ref, dw_ref, db_ref = R.conv_transpose_mps_backward(
        dy_nchw,
        x_nchw,
        w_ref,
        tuple(c["s"]),
        tuple(c["d"]),
        groups,
        T,
        tuple(c["hw"]),
        clip=clip,
        src_c_offset=c["sfo"],
        dst_c_offset=dfo,
        offset_z=offset_z,
    )
    dx_tol = FP16_TOL if dtype == np.float16 else FP32_TOL
    if c["bn"] and c["kernel_weights"] == "float16":
        dx_tol = FP16_TOL
    dw_tol = FP16_TOL if dtype == np.float16 else FP32_TOL
    mask = R.gradient_written_mask(x_nchw.shape, in_ch, clip, n_dst, offset_z, c["sfo"])
    assert mask.any(), what

    if c["option"] == "weights_and_bias":
        assert dx is None, what
    else:
        assert isinstance(dx, convt.Image), what
        if dx_img is not None:
            assert dx is dx_img, what
            assert_written(to_nchw(dx_arr, dx_img.layout), dx_ref, mask, dx_tol, f"dX {what}")
            assert np.isnan(dx_base[~inside]).all(), f"{what}: wrote outside the dX view"
        else:
            assert dx.layout == x_layout and dx.array.dtype == dtype, what
            got = to_nchw(dx.array, dx.layout)
            assert got.shape == x_nchw.shape, what
            assert_close(got[mask], dx_ref[mask], dx_tol, f"dX {what}")

    gw, gb = state.gradient_for_weights, state.gradient_for_biases
    assert gw.shape == (out_ch, k_h, k_w, ig) and gw.dtype == np.float32, what
    assert gb.shape == (out_ch,) and gb.dtype == np.float32, what
    if c["option"] == "data":
        assert not gw.any() and not gb.any(), f"{what}: gradients written with option data"
    else:
        assert_close(gw, dw_ref, dw_tol, f"dW {what}")
        assert_close(gb, db_ref, dw_tol, f"dB {what}")
    np.testing.assert_array_equal(x_arr, x_before, err_msg=f"{what}: X modified")
    np.testing.assert_array_equal(dy_arr, dy_before, err_msg=f"{what}: dY modified")


def test_gradient_sweep_covers_every_feature() -> None:
    cases = [grad_case(i) for i in range(N_MPS_CASES)]
    seen = lambda key: {repr(c.get(key)) for c in cases}  # noqa: E731
    assert seen("dtype") == {"'float16'", "'float32'"}
    assert seen("weights") == {"'float16'", "'float32'"}
    assert seen("kernel_weights") == {"'float16'", "'float32'"}
    assert seen("option") == {"'all'", "'data'", "'weights_and_bias'"}
    for key in ("bias", "bn", "dx_given"):
        assert seen(key) == {"True", "False"}
    for key in ("x_storage", "dy_storage", "dx_storage"):
        assert {c[key] for c in cases} == set(STORAGE_KINDS)
    assert any(c["neuron"] for c in cases)
    assert any(c["path"] == "auto" and c["forward_state"] for c in cases)
    assert any(c["path"] == "auto" and not c["forward_state"] for c in cases)
    manual = [c for c in cases if c["path"] == "manual"]
    assert {c["state_via"] for c in manual} == {"encode", "result_state"}
    assert any(c["clip"] for c in manual) and any(c["dfo"] for c in manual)
    assert any(c["offset_z"] for c in manual) and any(c["sfo"] for c in cases)
    assert any(c["n_src"] > 1 for c in manual) and any(c.get("n", 1) > 1 for c in cases)
    assert {c["groups"] for c in cases} >= {1, 2, 4, 7}
    assert any(c["ig"] == 1 and c["groups"] > 1 for c in cases)  # depthwise
    assert {ch for c in cases for ch in (c["ig"], c["og"])} >= {1, 3, 7, 23}
    assert {s for c in cases for s in c["s"]} == {1, 2, 3, 4}
    assert {d for c in cases for d in c["d"]} == {1, 2, 3}
    assert {k for c in cases for k in c["k"]} == set(range(1, 8))


# ---------------------------------------------------------------------------------------------
# Functional backward sweep (PyTorch conventions)
# ---------------------------------------------------------------------------------------------

LAYOUT_STORAGE = {"NCHW": ("NCHW", "strided"), "NHWC": ("NHWC", "nhwc-view")}


def functional_case(index: int) -> dict[str, Any]:
    rng = np.random.default_rng([SEED, 13, index])
    # indices 0..15 give every output_mask once in 2-D and once in 1-D
    one_d = index >= 8 if index < 16 else bool(rng.random() < 0.3)
    c = random_torch_geometry(rng, one_d, groups=pick_groups(rng), max_n=6)
    c.update(index=index, one_d=one_d)
    fit_budget(c, c["cout"] * c["cin"] // c["groups"], c["n"])
    fix_padding(c)
    c["dtype"] = pick(rng, ["float32", "float16"], p=[0.65, 0.35])
    c["layout"] = pick(rng, ["NCHW", "NHWC"])
    c["x_storage"] = pick(rng, LAYOUT_STORAGE[c["layout"]])
    c["g_storage"] = pick(rng, LAYOUT_STORAGE[c["layout"]])
    c["mask"] = OUTPUT_MASKS[index % 8] if index < 16 else pick(rng, OUTPUT_MASKS)
    # out=: the gradients written into the caller's arrays (grad_input in x's storage kinds,
    # grad_weight contiguous or a strided slice), or allocated.
    c["out"] = pick(rng, ["allocate", "given"])
    c["gi_storage"] = pick(rng, LAYOUT_STORAGE[c["layout"]])
    c["gw_storage"] = pick(rng, ["contiguous", "strided"])
    return c


def poisoned_outputs(c: dict[str, Any], x_shape: tuple, w_shape: tuple, dtype: np.dtype):
    """NaN-filled arrays for ``out=`` where c's mask asks for a gradient, and each one's base and
    the mask of the view inside it (to check that nothing outside is written)."""
    gi = gw = gb = None
    bases = []
    if c["mask"][0]:
        gi, lay4, base, inside = make_storage(np.full(x_shape, np.nan), c["gi_storage"], dtype)
        if c["one_d"]:
            gi = squeeze_1d(gi, lay4)
        bases.append((base, inside))
    if c["mask"][1]:
        if c["gw_storage"] == "strided":
            base = np.full((w_shape[0], 2 * w_shape[1] + 1, *w_shape[2:]), np.nan, dtype)
            gw = base[:, 1::2]
            inside = np.zeros(base.shape, bool)
            inside[:, 1::2] = True
        else:
            gw = base = np.full(w_shape, np.nan, dtype)
            inside = np.ones(base.shape, bool)
        bases.append((base, inside))
    if c["mask"][2]:
        gb = np.full(c["cout"], np.nan, dtype)
    return (gi, gw, gb), bases


def squeeze_1d(arr: np.ndarray, layout: str) -> np.ndarray:
    """(N, C, 1, L) -> (N, C, L); (N, 1, L, C) -> (N, L, C)."""
    return arr[:, :, 0] if layout == "NCHW" else arr[:, 0]


@pytest.mark.parametrize("index", range(N_FUNCTIONAL_CASES))
def test_functional_backward_sweep(device: Any, index: int) -> None:
    c = functional_case(index)
    rng = np.random.default_rng([SEED, 14, index])
    what = f"functional backward case {c}"
    one_d, layout = c["one_d"], c["layout"]
    dtype = np.dtype(c["dtype"])
    kw = torch_kwargs(c, one_d)
    x = rng.uniform(-1, 1, (c["n"], c["cin"], *c["hw"])).astype(dtype)
    scale = 1.0 / np.sqrt(c["cin"] // c["groups"] * c["k"][0] * c["k"][1])
    w = rng.uniform(-scale, scale, (c["cin"], c["cout"] // c["groups"], *c["k"])).astype(dtype)
    out_shape = R.conv_transpose_torch_ref(x, w, None, **torch_kwargs(c)).shape
    g = rng.uniform(-1, 1, out_shape).astype(dtype)
    gi_ref, gw_ref, gb_ref = R.conv_transpose_torch_backward(g, x, w, **torch_kwargs(c))

    x_arr, lay4, _, _ = make_storage(x, c["x_storage"], dtype)
    g_arr, _, _, _ = make_storage(g, c["g_storage"], dtype)
    w_arg = w
    if one_d:
        x_arr, g_arr, w_arg = squeeze_1d(x_arr, lay4), squeeze_1d(g_arr, lay4), w[:, :, 0]
        fn, api_layout = convt.conv_transpose1d_backward, {"NCHW": "NCL", "NHWC": "NLC"}[layout]
    else:
        fn, api_layout = convt.conv_transpose2d_backward, layout
    x_before, g_before = x_arr.copy(), g_arr.copy()
    out, bases = (None, [])
    if c["out"] == "given":
        out, bases = poisoned_outputs(c, x.shape, w_arg.shape, dtype)
    gi, gw, gb = fn(
        g_arr, x_arr, w_arg, **kw, output_mask=c["mask"], layout=api_layout, device=device,
        out=out,
    )  # fmt: skip
    if out is not None:
        for got, given in zip((gi, gw, gb), out):
            assert got is given, f"{what}: out= entry not returned as given"
        for base, inside in bases:
            assert np.isnan(base[~inside]).all(), f"{what}: written outside an out= view"
    tol = FP16_TOL if dtype == np.float16 else FP32_TOL
    if c["mask"][0]:
        assert isinstance(gi, np.ndarray) and gi.dtype == dtype, what
        assert gi.shape == x_arr.shape, what
        got = np.expand_dims(gi, 2 if layout == "NCHW" else 1) if one_d else gi
        assert_close(to_nchw(got, layout), gi_ref, tol, f"grad_input {what}")
    else:
        assert gi is None, what
    if c["mask"][1]:
        assert isinstance(gw, np.ndarray) and gw.dtype == w.dtype, what
        assert gw.shape == w_arg.shape, what
        assert_close(gw.reshape(w.shape), gw_ref, tol, f"grad_weight {what}")
    else:
        assert gw is None, what
    if c["mask"][2]:
        assert isinstance(gb, np.ndarray) and gb.shape == (c["cout"],), what
        assert_close(gb, gb_ref, tol, f"grad_bias {what}")
    else:
        assert gb is None, what
    np.testing.assert_array_equal(x_arr, x_before, err_msg=f"{what}: x modified")
    np.testing.assert_array_equal(g_arr, g_before, err_msg=f"{what}: grad_output modified")


def test_functional_sweep_covers_every_feature() -> None:
    cases = [functional_case(i) for i in range(N_FUNCTIONAL_CASES)]
    for one_d in (False, True):
        assert {c["mask"] for c in cases if c["one_d"] == one_d} == set(OUTPUT_MASKS)
    assert {c["dtype"] for c in cases} == {"float32", "float16"}
    assert {c["x_storage"] for c in cases} == set(STORAGE_KINDS)
    given = [c for c in cases if c["out"] == "given"]
    for one_d in (False, True):
        assert {c["gi_storage"] for c in given if c["mask"][0] and c["one_d"] == one_d} == set(
            STORAGE_KINDS
        )
    assert {c["gw_storage"] for c in given if c["mask"][1]} == {"contiguous", "strided"}
    assert {c["dtype"] for c in given} == {"float32", "float16"}
    assert {c["groups"] for c in cases} >= {1, 2, 4}
    assert {s for c in cases for s in c["s"]} == {1, 2, 3, 4}
    assert {d for c in cases for d in c["d"]} == {1, 2, 3}
    assert any(op > 0 for c in cases for op in c["op"]) and any(
        p > 0 for c in cases for p in c["p"]
    )


def test_functional_backward_default_mask_and_bias_dtype(device: Any) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    g = rng.standard_normal((2, 6, 6, 10)).astype(np.float32)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=(1, 2))
    gi, gw, gb = convt.conv_transpose2d_backward(g, x, w, **kw, device=device)
    gi_ref, gw_ref, gb_ref = R.conv_transpose_torch_backward(g, x, w, **kw)
    assert_close(gi, gi_ref, FP32_TOL, "grad_input")
    assert_close(gw, gw_ref, FP32_TOL, "grad_weight")
    assert_close(gb, gb_ref, FP32_TOL, "grad_bias")


def test_functional_backward_rejects_wrong_grad_shape(device: Any) -> None:
    x = np.zeros((1, 2, 3, 3), np.float32)
    w = np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="grad_output"):
        convt.conv_transpose2d_backward(np.zeros((1, 2, 6, 5), np.float32), x, w, device=device)


# ---------------------------------------------------------------------------------------------
# Gradient options, overwriting, uint8, channel slices
# ---------------------------------------------------------------------------------------------


def small_pair(device: Any, rng: np.random.Generator, **options: Any):
    w = rng.uniform(-0.5, 0.5, (6, 3, 4, 2)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, 6).astype(np.float32)
    opts = dict(stride=(2, 1), groups=2, kernel_weights_dtype="float32")
    opts.update(options)
    fwd, grad = build_transpose_pair(device, w, b, **opts)
    return fwd, grad, w


def test_gradient_options(device: Any, rng: np.random.Generator) -> None:
    fwd, grad, w = small_pair(device, rng)
    assert grad.gradient_option == convt.GradientOption.all
    x = rng.uniform(-1, 1, (2, 4, 3, 5)).astype(np.float32)
    x_img = convt.Image(x)
    dst = convt.Image(np.zeros((2, 6, 6, 7), np.float32))
    set_total_offset(fwd, (-1, 1))
    state = fwd.result_state(x_img, destination_image=dst)
    assert not state.gradient_for_weights.any() and not state.gradient_for_biases.any()

    def ref(dy: np.ndarray):
        return R.conv_transpose_mps_backward(dy, x, w, (2, 1), 1, 2, (-1, 1), (3, 5))

    dys = [rng.uniform(-1, 1, (2, 6, 6, 7)).astype(np.float32) for _ in range(4)]
    dx = run_encoded(device, lambda cb: grad.encode(cb, convt.Image(dys[0]), x_img, state))
    dx_ref, dw_ref, db_ref = ref(dys[0])
    assert_close(dx.array, dx_ref, FP32_TOL, "all: dX")
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "all: dW")
    assert_close(state.gradient_for_biases, db_ref, FP32_TOL, "all: dB")
    dw_all = state.gradient_for_weights.copy()
    db_all = state.gradient_for_biases.copy()

    grad.gradient_option = convt.GradientOption.data
    assert grad.gradient_option == convt.GradientOption.data
    dx = run_encoded(device, lambda cb: grad.encode(cb, convt.Image(dys[1]), x_img, state))
    assert_close(dx.array, ref(dys[1])[0], FP32_TOL, "data: dX")
    np.testing.assert_array_equal(state.gradient_for_weights, dw_all, "data option wrote dW")
    np.testing.assert_array_equal(state.gradient_for_biases, db_all, "data option wrote dB")

    grad.gradient_option = convt.GradientOption.weights_and_bias
    res = run_encoded(device, lambda cb: grad.encode(cb, convt.Image(dys[2]), x_img, state))
    assert res is None
    _, dw_ref, db_ref = ref(dys[2])  # overwritten, not accumulated onto the first result
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "weights_and_bias: dW")
    assert_close(state.gradient_for_biases, db_ref, FP32_TOL, "weights_and_bias: dB")

    grad.gradient_option = convt.GradientOption.all
    dx_img = convt.Image(poison(np.empty_like(x)))
    res = run_encoded(
        device,
        lambda cb: grad.encode(cb, convt.Image(dys[3]), x_img, state, destination_gradient=dx_img),
    )
    assert res is dx_img
    dx_ref, dw_ref, _ = ref(dys[3])
    assert_close(dx_img.array, dx_ref, FP32_TOL, "all again: dX")
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "all again: dW")


def _weight_gradient_encode_setup(
    device: Any, rng: np.random.Generator, w: np.ndarray, dilation: int
) -> tuple[Any, np.ndarray, Any, Any]:
    """A stride-2 transpose pair for OHWI weights w, a (2, Cin, 3, 5) source with a 6 x 10
    destination at offset (-1, -1), and its gradient state: (gradient kernel, x, x's Image,
    state), the kernel set to weights and bias."""
    cout, cin = w.shape[0], w.shape[3]
    fwd, grad = build_transpose_pair(
        device, w, None, stride=2, dilation=dilation, kernel_weights_dtype="float32"
    )
    x = rng.uniform(-1, 1, (2, cin, 3, 5)).astype(np.float32)
    x_img = convt.Image(x)
    dst = convt.Image(np.zeros((2, cout, 6, 10), np.float32))
    set_total_offset(fwd, (-1, -1))
    state = fwd.result_state(x_img, destination_image=dst)
    grad.gradient_option = convt.GradientOption.weights_and_bias
    return grad, x, x_img, state


@pytest.mark.parametrize("cout, cin", [(13, 23), (12, 32)], ids=["tails", "whole_tiles"])
def test_weight_gradient_overwrites_state(
    device: Any, rng: np.random.Generator, cout: int, cin: int
) -> None:
    """A second encode without accumulation replaces the state's dW, on layers whose dW sums in
    register tiles of 6 output x 16 input channels (the CPU GEMM then sums whole tiles straight
    into dW, each tap overwritten by its first products): the result is the second gradient,
    not the sum of both, for every tile, the tail rows and columns included."""
    w = rng.uniform(-0.5, 0.5, (cout, 3, 3, cin)).astype(np.float32)
    grad, x, x_img, state = _weight_gradient_encode_setup(device, rng, w, 1)
    dys = [rng.uniform(-1, 1, (2, cout, 6, 10)).astype(np.float32) for _ in range(2)]
    for dy in dys:
        run_encoded(device, lambda cb, dy=dy: grad.encode(cb, convt.Image(dy), x_img, state))
    _, dw_ref, _ = R.conv_transpose_mps_backward(dys[1], x, w, 2, 1, 1, (-1, -1), (3, 5))
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "second dW")


def _poison_read_only(a: np.ndarray) -> None:
    """Fills a read-only float32 view (a state's dW) with NaN in place, through its address."""
    import ctypes

    assert a.dtype == np.float32 and a.flags.c_contiguous
    ptr = ctypes.cast(a.__array_interface__["data"][0], ctypes.POINTER(ctypes.c_float))
    np.ctypeslib.as_array(ptr, a.shape)[...] = np.nan


def test_weight_gradient_writes_dead_taps(device: Any, rng: np.random.Generator) -> None:
    """Taps that meet no dY pixel get dW = 0 written, not left as they were: a 7x7 kernel at
    dilation 2 over a 3 x 5 source and a 6 x 10 destination, whose outer tap rows land outside
    it (on the CPU, the GEMM sums whole register tiles into dW, each tap from its first
    products, and zeroes taps that have none). The state's dW is NaN before the encode."""
    cout, cin = 12, 32
    w = rng.uniform(-0.5, 0.5, (cout, 7, 7, cin)).astype(np.float32)
    grad, x, x_img, state = _weight_gradient_encode_setup(device, rng, w, 2)
    dy = rng.uniform(-1, 1, (2, cout, 6, 10)).astype(np.float32)
    _, dw_ref, _ = R.conv_transpose_mps_backward(dy, x, w, 2, 2, 1, (-1, -1), (3, 5))
    dead = (dw_ref == 0).all(axis=(0, 3))
    assert dead.any() and not dead.all(), "the layer needs taps with and without dY"
    _poison_read_only(state.gradient_for_weights)
    run_encoded(device, lambda cb: grad.encode(cb, convt.Image(dy), x_img, state))
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "dW")


def test_uint8_weights_are_rejected(device: Any, rng: np.random.Generator) -> None:
    u = rng.integers(0, 256, (4, 3, 3, 2)).astype(np.uint8)
    ranges = np.tile(np.array([[-0.5, 0.5]], np.float32), (4, 1))
    source = make_data_source(u, quant=("linear", ranges))
    convt.ConvolutionTranspose(device, source)  # the forward accepts them
    with pytest.raises(ValueError, match="uint8"):
        convt.ConvolutionTransposeGradient(device, source)
    lut = np.linspace(-1, 1, 256).astype(np.float32)
    with pytest.raises(ValueError, match="uint8"):
        convt.ConvolutionTransposeGradient(device, make_data_source(u, quant=("lookup_table", lut)))


def test_fp16_weights_accepted(device: Any, rng: np.random.Generator) -> None:
    w = rng.uniform(-0.5, 0.5, (3, 2, 2, 5)).astype(np.float16)
    fwd, grad = build_transpose_pair(device, w)
    x = rng.uniform(-1, 1, (1, 5, 4, 4)).astype(np.float32)
    dst = convt.Image(np.zeros((1, 3, 5, 5), np.float32))
    state = fwd.result_state(convt.Image(x), destination_image=dst)
    dy = rng.uniform(-1, 1, (1, 3, 5, 5)).astype(np.float32)
    dx = run_encoded(device, lambda cb: grad.encode(cb, convt.Image(dy), convt.Image(x), state))
    dx_ref, dw_ref, _ = R.conv_transpose_mps_backward(dy, x, w, 1, 1, 1, 0, (4, 4))
    assert_close(dx.array, dx_ref, FP32_TOL, "fp16 weights dX")
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "fp16 weights dW")


def test_dx_untouched_outside_channel_slice_and_images(
    device: Any, rng: np.random.Generator
) -> None:
    """dX: channels [sfo, sfo+I) of the processed source images only; every pixel there is
    written (0 where nothing contributes)."""
    w = rng.uniform(-0.5, 0.5, (3, 3, 3, 2)).astype(np.float32)
    fwd, grad = build_transpose_pair(device, w, stride=3, kernel_weights_dtype="float32")
    fwd.source_feature_channel_offset = 2
    fwd.destination_feature_channel_offset = 1
    fwd.offset = (0, 0, 1)  # source image 1 ...
    fwd.clip_rect = convt.Region(0, 0, 2, 100, 100, 1)  # ... into destination image 2
    set_total_offset(fwd, (9, 9))  # the window starts far right: some pixels get nothing
    x = rng.uniform(-1, 1, (3, 6, 4, 4)).astype(np.float32)
    dst = convt.Image(np.zeros((3, 5, 8, 8), np.float32))
    state = fwd.result_state(convt.Image(x), destination_image=dst)
    dy = rng.uniform(-1, 1, (3, 5, 8, 8)).astype(np.float32)
    dx = encode_data_gradient(device, grad, dy, x, state)
    clip = (0, 0, 2, 100, 100, 1)
    dx_ref, dw_ref, db_ref = R.conv_transpose_mps_backward(
        dy, x, w, 3, 1, 1, (9, 9), (4, 4), clip=clip, src_c_offset=2, dst_c_offset=1, offset_z=1
    )
    mask = np.zeros(x.shape, bool)
    mask[1, 2:4] = True
    np.testing.assert_array_equal(mask, R.gradient_written_mask(x.shape, 2, clip, 3, 1, 2))
    assert_written(dx, dx_ref, mask, FP32_TOL, "dX")
    assert np.any(dx[mask] == 0.0), "expected pixels without contribution (written as 0)"
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "dW")
    assert_close(state.gradient_for_biases, db_ref, FP32_TOL, "dB")
    assert_close(state.gradient_for_biases, dy[2, 1:4].sum(axis=(1, 2)), FP32_TOL, "dB image 2")


def test_neuron_is_not_differentiated(device: Any, rng: np.random.Generator) -> None:
    w = rng.uniform(-0.5, 0.5, (2, 3, 3, 2)).astype(np.float32)
    neuron = R.Neuron("sigmoid")
    fwd, grad = build_transpose_pair(device, w, neuron=neuron, kernel_weights_dtype="float32")
    x = rng.uniform(-1, 1, (1, 2, 3, 3)).astype(np.float32)
    dy = rng.uniform(-1, 1, (1, 2, 3, 3)).astype(np.float32)

    def encode(cb: Any) -> Any:
        _, state = fwd.encode(cb, convt.Image(x), destination_state=True)
        return grad.encode(cb, convt.Image(dy), convt.Image(x), state), state

    dx, state = run_encoded(device, encode)
    dx_ref, dw_ref, _ = R.conv_transpose_mps_backward(dy, x, w, 1, 1, 1, 0, (3, 3))
    assert_close(dx.array, dx_ref, FP32_TOL, "dX ignores the neuron")
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "dW ignores the neuron")


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("auto", [False, True], ids=["manual", "auto"])
@pytest.mark.parametrize("wide", [False, True], ids=["narrow", "wide"])
def test_encode_batch_sums_weight_gradients(
    device: Any, rng: np.random.Generator, auto: bool, wide: bool
) -> None:
    # wide: 40 x 36 channels, where GPU backends reduce dW by GEMM over slices of K.
    o, i = (40, 36) if wide else (4, 3)
    w = rng.uniform(-0.5, 0.5, (o, 3, 2, i)).astype(np.float32)
    fwd, grad = build_transpose_pair(
        device, w, stride=2, dilation=(1, 2), kernel_weights_dtype="float32"
    )
    xs = [rng.uniform(-1, 1, (1, i, 3, 4)).astype(np.float32) for _ in range(3)]
    x_imgs = [convt.Image(x) for x in xs]
    if auto:  # default policy: dst (3-1)*2+1 = 5 by (4-1)*2+1 + 0 = 7, T from the policy
        T = (
            R.transpose_offset(R.SIZE_SAME, 3, 2, 3)[1],
            R.transpose_offset(R.SIZE_SAME, 4, 2, 3)[1],
        )
        dst_hw, dsts = (5, 7), None
    else:
        set_total_offset(fwd, (0, -1))
        T, dst_hw = (0, -1), (6, 9)
        dsts = [convt.Image(np.zeros((1, o, *dst_hw), np.float32)) for _ in xs]
    dys = [rng.uniform(-1, 1, (1, o, *dst_hw)).astype(np.float32) for _ in xs]
    dx_dsts = [convt.Image(poison(np.empty_like(x))) for x in xs]

    def encode(cb: Any) -> Any:
        outs, states = fwd.encode_batch(
            cb, x_imgs, destination_images=dsts, destination_states=True
        )
        assert len(outs) == len(states) == 3
        assert all(s is states[0] for s in states), "one state per batch"
        dy_imgs = [convt.Image(dy) for dy in dys]
        res = grad.encode_batch(cb, dy_imgs, x_imgs, states, destination_gradients=dx_dsts)
        return res, states[0]

    res, state = run_encoded(device, encode)
    assert len(res) == 3 and all(r is d for r, d in zip(res, dx_dsts))
    dw_sum, db_sum = np.zeros(w.shape), np.zeros(o)
    for i, (x, dy) in enumerate(zip(xs, dys)):
        dx_ref, dw_ref, db_ref = R.conv_transpose_mps_backward(dy, x, w, 2, (1, 2), 1, T, (3, 4))
        assert_close(dx_dsts[i].array, dx_ref, FP32_TOL, f"batch dX {i}")
        dw_sum += dw_ref
        db_sum += db_ref
    assert_close(state.gradient_for_weights, dw_sum, FP32_TOL, "batch dW is the sum")
    assert_close(state.gradient_for_biases, db_sum, FP32_TOL, "batch dB is the sum")

    # Allocated dX images and a result_state_batch state.
    states = fwd.result_state_batch(
        x_imgs, destination_images=dsts or [convt.Image(np.zeros((1, o, *dst_hw), np.float32))] * 3
    )
    assert len(states) == 3 and all(s is states[0] for s in states)
    outs = run_encoded(
        device, lambda cb: grad.encode_batch(cb, [convt.Image(d) for d in dys], x_imgs, states)
    )
    for i, out in enumerate(outs):
        assert isinstance(out, convt.Image)
        assert_close(out.array, dx_dsts[i].array, FP32_TOL, f"allocated batch dX {i}")
    assert_close(states[0].gradient_for_weights, dw_sum, FP32_TOL, "result_state_batch dW")


# ---------------------------------------------------------------------------------------------
# Finite differences through the functional API (float64, CPU)
# ---------------------------------------------------------------------------------------------

FD_CASES = [
    # (cin, cout, k, stride, padding, output_padding, groups, dilation, hw)
    (2, 3, (3, 2), 2, 1, 1, 1, 1, (2, 3)),
    (4, 2, (2, 3), (1, 3), (0, 1), (0, 2), 2, (2, 1), (3, 2)),
    (3, 3, (1, 4), (3, 2), 0, (2, 0), 3, (1, 2), (2, 2)),
    (1, 2, 3, 1, 2, 0, 1, 3, (2, 2)),
]


def _numeric_grad(f, arr: np.ndarray, h: float = 1e-3) -> np.ndarray:
    grad = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = f()
        flat[i] = keep - h
        down = f()
        flat[i] = keep
        gflat[i] = (up - down) / (2 * h)
    return grad


def _cpu_only(device: Any) -> None:
    if device.kind != "cpu":
        pytest.skip("float64 is supported on the CPU device only")


@pytest.mark.parametrize("case", range(len(FD_CASES)))
def test_finite_differences_2d(device: Any, case: int) -> None:
    _cpu_only(device)
    cin, cout, k, s, p, op, groups, d, hw = FD_CASES[case]
    rng = np.random.default_rng([81, case])
    kk = R.pair(k)
    x = rng.standard_normal((2, cin, *hw))
    w = rng.standard_normal((cin, cout // groups, *kk))
    b = rng.standard_normal(cout)
    kw = dict(stride=s, padding=p, output_padding=op, groups=groups, dilation=d)
    y = convt.conv_transpose2d(x, w, b, **kw, device=device)
    assert y.dtype == np.float64
    g = rng.standard_normal(y.shape)

    def loss() -> float:
        return float(np.sum(g * convt.conv_transpose2d(x, w, b, **kw, device=device)))

    gi, gw, gb = convt.conv_transpose2d_backward(g, x, w, **kw, device=device)
    assert gi.dtype == gw.dtype == np.float64
    for got, arr, name in ((gi, x, "grad_input"), (gw, w, "grad_weight"), (gb, b, "grad_bias")):
        num = _numeric_grad(loss, arr)
        np.testing.assert_allclose(got, num, rtol=1e-7, atol=1e-7, err_msg=f"{name} {kw}")


FD_CASES_1D = [(2, 2, 3, 2, 1, 1, 1, 1), (4, 6, 2, 3, 0, 2, 2, 2), (3, 3, 4, 1, 2, 0, 3, 1)]


@pytest.mark.parametrize("case", range(len(FD_CASES_1D)))
def test_finite_differences_1d(device: Any, case: int) -> None:
    _cpu_only(device)
    rng = np.random.default_rng([82, case])
    cin, cout, k, s, p, op, groups, d = FD_CASES_1D[case]
    x = rng.standard_normal((2, cin, 3))
    w = rng.standard_normal((cin, cout // groups, k))
    b = rng.standard_normal(cout)
    kw = dict(stride=s, padding=p, output_padding=op, groups=groups, dilation=d)
    g = rng.standard_normal(convt.conv_transpose1d(x, w, b, **kw, device=device).shape)

    def loss() -> float:
        return float(np.sum(g * convt.conv_transpose1d(x, w, b, **kw, device=device)))

    gi, gw, gb = convt.conv_transpose1d_backward(g, x, w, **kw, device=device)
    for got, arr, name in ((gi, x, "grad_input"), (gw, w, "grad_weight"), (gb, b, "grad_bias")):
        num = _numeric_grad(loss, arr)
        np.testing.assert_allclose(got, num, rtol=1e-7, atol=1e-7, err_msg=f"{name} {kw}")
    gi_ref, gw_ref, gb_ref = R.conv_transpose1d_torch_backward(g, x, w, **kw)
    np.testing.assert_allclose(gi, gi_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-12, atol=1e-12)


def test_float64_nhwc_backward(device: Any) -> None:
    _cpu_only(device)
    rng = np.random.default_rng(83)
    kw = dict(stride=2, padding=1, groups=1, dilation=1)
    w = rng.standard_normal((4, 3, 3, 3))
    x = rng.standard_normal((2, 4, 3, 4))
    g = rng.standard_normal((2, 3, 5, 7))
    gi, gw, gb = convt.conv_transpose2d_backward(
        np.ascontiguousarray(from_nchw(g, "NHWC")),
        np.ascontiguousarray(from_nchw(x, "NHWC")),
        w,
        **kw,
        layout="NHWC",
        device=device,
    )
    gi_ref, gw_ref, gb_ref = R.conv_transpose_torch_backward(g, x, w, **kw)
    np.testing.assert_allclose(to_nchw(gi, "NHWC"), gi_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, gw_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, gb_ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------


def _mps_gradients(device: Any, problem: dict[str, Any]) -> tuple[np.ndarray, ...]:
    fwd, grad = build_transpose_pair(
        device, problem["w"], problem["b"], stride=2, groups=1, kernel_weights_dtype="float32"
    )
    set_total_offset(fwd, (1, 0))
    x_img = convt.Image(problem["x"])
    dst = convt.Image(np.zeros(problem["dy"].shape, np.float32))

    def encode(cb: Any) -> Any:
        _, state = fwd.encode(cb, x_img, destination_image=dst, destination_state=True)
        dx = grad.encode(cb, convt.Image(problem["dy"]), x_img, state)
        return dx, state

    dx, state = run_encoded(device, encode)
    return (
        np.array(dx.array),
        np.array(state.gradient_for_weights),
        np.array(state.gradient_for_biases),
    )


def _functional_gradients(device: Any, problem: dict[str, Any]) -> tuple[np.ndarray, ...]:
    return convt.conv_transpose2d_backward(
        problem["g"], problem["x"], problem["wt"], stride=2, padding=1, groups=1, device=device
    )


def test_gradients_are_deterministic(device: Any, rng: np.random.Generator) -> None:
    problem = {
        "x": rng.standard_normal((3, 23, 9, 11)).astype(np.float32),
        "w": rng.standard_normal((7, 4, 4, 23)).astype(np.float32),
        "b": rng.standard_normal(7).astype(np.float32),
        "dy": rng.standard_normal((3, 7, 19, 23)).astype(np.float32),
        "wt": rng.standard_normal((23, 7, 4, 4)).astype(np.float32),
        "g": rng.standard_normal((3, 7, 18, 22)).astype(np.float32),
    }
    before = convt.get_num_threads()
    try:
        runs = []
        for n in (2, 2, 1):
            convt.set_num_threads(n)
            assert convt.get_num_threads() == n
            runs.append(_mps_gradients(device, problem) + _functional_gradients(device, problem))
    finally:
        convt.set_num_threads(before)
    assert convt.get_num_threads() == before
    names = ("dX", "dW", "dB", "grad_input", "grad_weight", "grad_bias")
    for other, label in ((runs[1], "second run"), (runs[2], "1 thread vs 2")):
        for name, a, b in zip(names, runs[0], other):
            assert a.tobytes() == b.tobytes(), f"{name} differs bitwise ({label})"
    # and the values are right
    dx_ref, dw_ref, db_ref = R.conv_transpose_mps_backward(
        problem["dy"], problem["x"], problem["w"], 2, 1, 1, (1, 0), (9, 11)
    )
    assert_close(runs[0][1], dw_ref, FP32_TOL, "dW")
    assert_close(runs[0][0], dx_ref, FP32_TOL, "dX")


@pytest.mark.parametrize("spatial", [1, 2])
def test_layer_backward_matches_functional(device, rng, spatial) -> None:
    """Layer.backward (weights prepared once) gives the functional backward's gradients."""
    import convt

    Layer = convt.ConvTranspose2d if spatial == 2 else convt.ConvTranspose1d
    backward = convt.conv_transpose2d_backward if spatial == 2 else convt.conv_transpose1d_backward
    size = (5, 6) if spatial == 2 else (9,)
    layer = Layer(7, 6, 3, stride=2, padding=1, groups=1, device=device, seed=3)
    x = rng.standard_normal((2, 7, *size)).astype(np.float32)
    gy = rng.standard_normal(layer(x).shape).astype(np.float32)
    got = layer.backward(x, gy)
    want = backward(gy, x, layer.weight, stride=2, padding=1, device=device)
    for g, w, what in zip(got, want, ("grad_input", "grad_weight", "grad_bias")):
        assert g.shape == w.shape
        assert np.array_equal(g, w), what


@pytest.mark.parametrize(
    "cin, cout, groups, dtype",
    [
        (32, 12, 1, np.float32),  # GEMM: whole register tiles summed in place
        (23, 7, 1, np.float32),  # GEMM: tail tiles and panels
        (16, 2, 1, np.float32),  # few outputs: one GEMM over the pixels
        (5, 3, 1, np.float32),  # narrow: per-image partial sums
        (6, 6, 6, np.float32),  # depthwise
        (9, 4, 1, np.float64),  # tap by tap, in float64
    ],
    ids=["gemm_tiles", "gemm_tails", "few_outputs", "narrow", "depthwise", "float64"],
)
def test_functional_weight_gradient_writes_dead_taps(
    device: Any, rng: np.random.Generator, cin: int, cout: int, groups: int, dtype: type
) -> None:
    """grad_weight of taps that meet no grad_output pixel is 0 on every dW path: a 7x7 kernel at
    dilation 2 over a 3 x 5 input, whose outer tap rows land outside the output. The tests run
    with CONVT_POISON_SCRATCH=1 (conftest), so the CPU's dW buffer starts as NaN."""
    assert os.environ.get("CONVT_POISON_SCRATCH") == "1"
    if dtype == np.float64 and device.kind != "cpu":
        pytest.skip("float64 layers run on the CPU only")
    w = rng.uniform(-0.5, 0.5, (cin, cout // groups, 7, 7)).astype(dtype)
    x = rng.uniform(-1, 1, (2, cin, 3, 5)).astype(dtype)
    kw = dict(stride=2, padding=6, dilation=2, groups=groups)
    y = convt.conv_transpose2d(x, w, device=device, **kw)
    dy = rng.uniform(-1, 1, y.shape).astype(dtype)
    _, dw_ref, _ = R.conv_transpose_torch_backward(dy, x, w, **kw)
    dead = (dw_ref == 0).all(axis=(0, 1))
    assert dead.any() and not dead.all(), "the layer needs taps with and without dY"
    _, dw, _ = convt.conv_transpose2d_backward(dy, x, w, device=device, **kw)
    assert_close(dw, dw_ref, FP32_TOL, "grad_weight")
