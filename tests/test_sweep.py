"""Seeded random sweep of the MPS-style and functional APIs against the float64 oracle.

Every case is generated from ``(CONVT_SWEEP_SEED, api, index)``, so a failure names a case that
can be rerun alone. Tolerances (normwise relative error): FP32_TOL for fp32 images with float
accumulation; FP16_TOL when the image is fp16, the accumulator is half, or float32 arithmetic
(BN folding, linear dequantisation) precedes the fp16 weight rounding, where one fp32 ulp of
difference may legitimately flip an fp16 rounding.
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
    STORAGE_KINDS,
    assert_close,
    assert_written,
    build_transpose,
    case_gradient_state,
    fix_padding,
    from_nchw,
    make_storage,
    mps_case_kwargs,
    poison,
    random_torch_geometry,
    run_encoded,
    to_nchw,
)

SEED = int(os.environ.get("CONVT_SWEEP_SEED", "20240611"))
N_MPS_CASES = 240
N_FUNCTIONAL_CASES = 120
CHANNELS = (1, 3, 7, 8, 23)
HALF_FAN_IN = 16  # another summation order then stays within ~1.6e-3 (2e-3 is ~2 fp16 ulps)
MAX_MACS = 1_500_000

# Parameter choices per neuron (None = the contract default); kept in ranges where the formula
# is finite for |v| of a few units.
NEURON_PARAMS: dict[str, list] = {
    "none": [{}],
    "relu": [{}, {"a": 0.1}],
    "linear": [{}, {"a": 1.5, "b": -0.25}],
    "sigmoid": [{}],
    "hard_sigmoid": [{}, {"a": 0.3, "b": 0.4}],
    "tanh": [{}, {"a": 0.8, "b": 1.3}],
    "abs": [{}],
    "softplus": [{}, {"a": 0.7, "b": 1.5}],
    "softsign": [{}],
    "elu": [{}, {"a": 0.6}],
    "prelu": [{}],
    "relun": [{}, {"a": 0.1, "b": 0.5}],
    "power": [{}, {"a": 0.5, "b": 2.0, "c": 2.0}, {"a": 0.25, "b": 1.5, "c": 3.0}],
    "exponential": [{}, {"a": 0.25, "c": 2.0}],
    "logarithm": [{"a": 0.05, "b": 2.0}, {"a": 0.05, "b": 2.0, "c": 10.0}],
    "gelu": [{}],
}


def pick(rng: np.random.Generator, options: Any, p: list | None = None) -> Any:
    """rng.choice that returns plain Python objects."""
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


def pick_neuron(rng: np.random.Generator, index: int) -> tuple[str, int] | None:
    """(type, parameter-set index) or None; the first cases go through every type in turn."""
    if index < 2 * len(R.NEURON_TYPES):
        kind = R.NEURON_TYPES[index % len(R.NEURON_TYPES)]
    elif rng.random() < 0.35:
        return None
    else:
        kind = pick(rng, list(R.NEURON_TYPES))
    return kind, int(rng.integers(len(NEURON_PARAMS[kind])))


def make_neuron(
    choice: tuple[str, int] | None, rng: np.random.Generator, out_channels: int
) -> R.Neuron | None:
    if choice is None:
        return None
    kind, which = choice
    params = dict(NEURON_PARAMS[kind][which])
    if kind == "prelu":
        params["data"] = rng.uniform(-0.5, 0.5, out_channels).astype(np.float32)
    return R.Neuron(kind, **params)


def random_weights(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    kind: str,
) -> tuple[np.ndarray, tuple[str, np.ndarray] | None]:
    """OHWI weights of a given storage kind scaled by 1/sqrt(fan-in), plus the quantisation."""
    out_ch = shape[0]
    scale = 1.0 / np.sqrt(np.prod(shape[1:]))
    if kind in ("float32", "float16"):
        return rng.uniform(-scale, scale, shape).astype(kind), None
    u = rng.integers(0, 256, shape).astype(np.uint8)
    if kind == "uint8-linear":
        lo = -scale * rng.uniform(0.5, 1.0, out_ch)
        hi = scale * rng.uniform(0.5, 1.0, out_ch)
        return u, ("linear", np.stack([lo, hi], axis=1).astype(np.float32))
    return u, ("lookup_table", np.sort(rng.uniform(-scale, scale, 256)).astype(np.float32))


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


def fit_budget(c: dict[str, Any], macs_per_tap: int, images: int, square: bool = False) -> None:
    """Shrink kernel and source sizes (in place) until the worst-case work fits MAX_MACS;
    ``square`` shrinks both axes together."""

    def cost() -> int:
        pixels = 1
        for a in range(2):
            keff = R.effective_kernel(c["k"][a], c["d"][a])
            pixels *= (c["hw"][a] - 1) * c["s"][a] + keff + 2
        return images * macs_per_tap * c["k"][0] * c["k"][1] * pixels

    while cost() > MAX_MACS and max(c["hw"] + c["k"]) > 1:
        a = int(np.argmax([c["hw"][0] * c["k"][0], c["hw"][1] * c["k"][1]]))
        key = "hw" if c["hw"][a] >= c["k"][a] else "k"
        for ax in (0, 1) if square else (a,):
            c[key][ax] = max(1, c[key][ax] - 1)


# ---------------------------------------------------------------------------------------------
# MPS-style API
# ---------------------------------------------------------------------------------------------


def mps_case(index: int) -> dict[str, Any]:
    """Geometry and options of one MPS-style case (no arrays)."""
    rng = np.random.default_rng([SEED, 1, index])
    groups, ig, og = pick_groups(rng)
    c: dict[str, Any] = {"index": index, "groups": groups, "ig": ig, "og": og}
    c["k"] = [int(v) for v in rng.integers(1, 8, 2)]
    if rng.random() < 0.15:
        c["k"][0] = 1
    c["s"] = [int(v) for v in rng.integers(1, 5, 2)]
    c["d"] = [int(v) for v in rng.integers(1, 4, 2)]
    c["hw"] = [int(v) for v in rng.integers(1, 10, 2)]
    fit_budget(c, groups * og * ig, 3)
    c["dtype"] = pick(rng, ["float32", "float16"], p=[0.6, 0.4])
    c["weights"] = pick(
        rng, ["float32", "float16", "uint8-linear", "uint8-lut"], p=[0.55, 0.15, 0.15, 0.15]
    )
    fp32_kernel = c["weights"] == "float32" and rng.random() < 0.4
    c["kernel_weights"] = "float32" if fp32_kernel else "float16"
    fan_in = c["k"][0] * c["k"][1] * ig
    half_ok = c["kernel_weights"] == "float16" and fan_in <= HALF_FAN_IN
    c["accumulator"] = "half" if half_ok and rng.random() < 0.5 else "float"
    c["bias"] = bool(rng.random() < 0.6)
    c["bn"] = bool(rng.random() < 0.25)
    c["path"] = pick(rng, ["auto", "manual"], p=[0.35, 0.65])
    c["src_storage"] = pick(rng, STORAGE_KINDS)
    c["dst_storage"] = pick(rng, STORAGE_KINDS)
    c["sfo"] = int(rng.integers(0, 4)) if rng.random() < 0.4 else 0
    c["src_extra_channels"] = int(rng.integers(0, 3))
    c["max_count"] = None
    if rng.random() < 0.25:
        c["max_count"] = ig * groups + int(rng.integers(0, 3))
    c["neuron"] = pick_neuron(rng, index)
    if c["path"] == "auto":
        c["n"] = int(rng.integers(1, 3))
        c["policy"] = random_policy(rng)
        c["state"] = random_forward_state(rng, c) if rng.random() < 0.35 else None
    else:
        c["n_src"], c["n_dst"] = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        c["offset_z"] = int(rng.integers(0, c["n_src"]))
        c["T"], c["offset"], c["dst_hw"] = [], [], []
        for ax in range(2):
            keff = R.effective_kernel(c["k"][ax], c["d"][ax])
            T = int(rng.integers(-keff - 1, keff + 2))
            off = int(rng.integers(-2, 3))
            c["T"].append(T)
            c["offset"].append(off)
            c["dst_hw"].append(int(rng.integers(1, (c["hw"][ax] - 1) * c["s"][ax] + keff + 3)))
        c["dfo"] = int(rng.integers(0, 4)) if rng.random() < 0.4 else 0
        c["dst_extra_channels"] = int(rng.integers(0, 3))
        c["clip"] = None
        if rng.random() < 0.45:
            hd, wd = c["dst_hw"]
            x0, y0 = int(rng.integers(0, wd)), int(rng.integers(0, hd))
            z0 = int(rng.integers(0, c["n_dst"]))
            c["clip"] = (
                x0,
                y0,
                z0,
                int(rng.integers(1, wd - x0 + 3)),
                int(rng.integers(1, hd - y0 + 3)),
                int(rng.integers(1, 4)),
            )
    if c["path"] == "auto":
        resolve_auto_geometry(c)
    return c


def random_forward_state(rng: np.random.Generator, c: dict[str, Any]) -> dict | None:
    """A forward convolution whose output fits the source size budget, or None."""
    method = random_policy(rng)
    for _ in range(20):
        n_fwd, fwd = [], []
        for a in range(2):
            keff = R.effective_kernel(c["k"][a], c["d"][a])
            n_fwd.append(int(rng.integers(1, c["hw"][a] * c["s"][a] + keff + 1)))
            fwd.append(R.forward_size_and_offset(method, n_fwd[a], c["s"][a], keff, "yx"[a]))
        if all(1 <= fwd[a][0] <= c["hw"][a] for a in range(2)):
            return {"method": method, "n_fwd": n_fwd, "fwd": fwd}
    return None


def resolve_auto_geometry(c: dict[str, Any]) -> None:
    """Source size and expected (dst, T) per axis for the auto-sizing path (in place)."""
    state = c["state"]
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


def tolerance(c: dict[str, Any]) -> float:
    if c["dtype"] == "float16" or c["accumulator"] == "half":
        return FP16_TOL
    rounded_after_fp32_math = c["bn"] or c["weights"] == "uint8-linear"
    if c["kernel_weights"] == "float16" and rounded_after_fp32_math:
        return FP16_TOL
    return FP32_TOL


@pytest.mark.parametrize("index", range(N_MPS_CASES))
def test_mps_sweep(device: Any, index: int) -> None:
    run_mps_case(device, mps_case(index))


def run_mps_case(device: Any, c: dict[str, Any]) -> None:
    rng = np.random.default_rng([SEED, 2, c["index"]])
    what = f"mps case {c}"
    groups, ig, og = c["groups"], c["ig"], c["og"]
    in_ch, out_ch = groups * ig, groups * og
    k_h, k_w = c["k"]
    dtype = np.dtype(c["dtype"])

    weights, quant = random_weights(rng, (out_ch, k_h, k_w, ig), c["weights"])
    bias = rng.uniform(-0.5, 0.5, out_ch).astype(np.float32) if c["bias"] else None
    bn = random_bn(rng, out_ch) if c["bn"] else None
    neuron = make_neuron(c["neuron"], rng, out_ch)
    conv = build_transpose(
        device,
        weights,
        bias,
        stride=tuple(c["s"]),
        dilation=tuple(c["d"]),
        groups=groups,
        neuron=neuron,
        bn=bn,
        kernel_weights_dtype=c["kernel_weights"],
        quant=quant,
    )
    conv.accumulator_precision = getattr(convt.AccumulatorPrecision, c["accumulator"])
    conv.source_feature_channel_offset = c["sfo"]
    if c["max_count"] is not None:
        conv.source_feature_channel_max_count = c["max_count"]
    w_ref, b_ref = R.prepare_weights(weights, bias, bn, c["kernel_weights"], quant)

    n_src = c["n"] if c["path"] == "auto" else c["n_src"]
    src_ch = c["sfo"] + in_ch + c["src_extra_channels"]
    src_nchw = rng.uniform(-1, 1, (n_src, src_ch, *c["hw"])).astype(dtype)
    src_arr, src_layout, _, _ = make_storage(src_nchw, c["src_storage"], dtype)
    src_before = src_arr.copy()
    src_img = convt.Image(src_arr, layout=src_layout)
    common = mps_case_kwargs(c, groups, neuron, dtype)

    if c["path"] == "auto":
        conv.padding = convt.Padding(c["policy"])
        state = case_gradient_state(c)
        out = run_encoded(
            device, lambda cb: conv.encode(cb, src_img, convolution_gradient_state=state)
        )
        (hd, ty), (wd, tx) = c["expect"]
        assert isinstance(out.array, np.ndarray), what
        assert out.array.dtype == dtype, what
        assert (out.width, out.height, out.feature_channels, out.number_of_images) == (
            wd,
            hd,
            out_ch,
            n_src,
        ), what
        assert out.layout == src_layout, what
        nchw_shape = (n_src, out_ch, hd, wd)
        assert to_nchw(out.array, out.layout).shape == nchw_shape, what
        assert (conv.offset[0], conv.kernel_offset_x) == R.split(tx, c["s"][1]), what
        assert (conv.offset[1], conv.kernel_offset_y) == R.split(ty, c["s"][0]), what
        ref = R.conv_transpose_mps(src_nchw, w_ref, b_ref, T=(ty, tx), dst_hw=(hd, wd), **common)
        assert_close(to_nchw(out.array, out.layout), ref, tolerance(c), what)
    else:
        conv.offset = (c["offset"][1], c["offset"][0], c["offset_z"])
        conv.kernel_offset_y = c["T"][0] - c["offset"][0] * c["s"][0]
        conv.kernel_offset_x = c["T"][1] - c["offset"][1] * c["s"][1]
        conv.destination_feature_channel_offset = c["dfo"]
        if c["clip"] is not None:
            conv.clip_rect = convt.Region(*c["clip"])
        dst_shape = (c["n_dst"], c["dfo"] + out_ch + c["dst_extra_channels"], *c["dst_hw"])
        dst_arr, dst_layout, dst_base, inside = make_storage(
            np.full(dst_shape, np.nan), c["dst_storage"], dtype
        )
        poison(dst_base)
        dst_img = convt.Image(dst_arr, layout=dst_layout)
        res = run_encoded(device, lambda cb: conv.encode(cb, src_img, destination_image=dst_img))
        assert res is dst_img, what
        ref = R.conv_transpose_mps(
            src_nchw,
            w_ref,
            b_ref,
            T=tuple(c["T"]),
            dst=np.full(dst_shape, np.nan),
            clip=c["clip"],
            offset_z=c["offset_z"],
            dst_c_offset=c["dfo"],
            **common,
        )
        mask = R.written_mask(dst_shape, out_ch, c["clip"], n_src, c["offset_z"], c["dfo"])
        assert_written(to_nchw(dst_arr, dst_layout), ref, mask, tolerance(c), what)
        assert np.isnan(dst_base[~inside]).all(), f"{what}: wrote outside the destination view"
    np.testing.assert_array_equal(src_arr, src_before, err_msg=f"{what}: source modified")


def test_encode_batch_matches_single(device: Any, rng: np.random.Generator) -> None:
    w = rng.uniform(-0.5, 0.5, (4, 3, 3, 2)).astype(np.float32)
    conv = build_transpose(device, w, stride=2, kernel_weights_dtype="float32")
    srcs = [convt.Image(rng.uniform(-1, 1, (1, 2, 3, 4)).astype(np.float32)) for _ in range(3)]
    outs = run_encoded(device, lambda cb: conv.encode_batch(cb, srcs))
    assert len(outs) == 3
    for i, (src, out) in enumerate(zip(srcs, outs)):  # default policy: 5 x 7, T = 0
        ref = R.conv_transpose_mps(src.array, w, stride=2, T=0, dst_hw=(5, 7))
        assert_close(out.array, ref, FP32_TOL, f"batch image {i}")
    dsts = [convt.Image(poison(np.empty((1, 4, 6, 8), np.float32))) for _ in range(2)]
    res = run_encoded(device, lambda cb: conv.encode_batch(cb, srcs[:2], destination_images=dsts))
    assert len(res) == 2 and all(r is d for r, d in zip(res, dsts))
    for src, dst in zip(srcs[:2], dsts):
        ref = R.conv_transpose_mps(src.array, w, stride=2, T=0, dst_hw=(6, 8))
        assert_close(dst.array, ref, FP32_TOL, "batch, manual path")


# ---------------------------------------------------------------------------------------------
# Functional API and layer objects (PyTorch conventions)
# ---------------------------------------------------------------------------------------------


def functional_case(index: int) -> dict[str, Any]:
    rng = np.random.default_rng([SEED, 3, index])
    api = pick(
        rng,
        ["conv_transpose2d", "conv_transpose1d", "ConvTranspose2d", "ConvTranspose1d"],
        p=[0.4, 0.2, 0.25, 0.15],
    )
    one_d = api.endswith("1d")
    c = random_torch_geometry(rng, one_d, groups=pick_groups(rng), max_n=9)
    c.update(index=index, api=api, as_int=one_d)
    if not one_d and rng.random() < 0.3:  # square parameters passed as plain ints
        for key in ("k", "s", "d", "p", "op", "hw"):
            c[key][0] = c[key][1]
        c["as_int"] = True
    fit_budget(c, c["cout"] * c["cin"] // c["groups"], c["n"], square=c["as_int"] and not one_d)
    fix_padding(c)
    c["dtype"] = pick(rng, ["float32", "float16"], p=[0.65, 0.35])
    c["storage"] = pick(rng, STORAGE_KINDS)
    c["bias"] = bool(rng.random() < 0.6)
    c["out"] = bool(rng.random() < 0.5)
    c["load_weights"] = api.startswith("Conv") and bool(rng.random() < 0.5)
    # PyTorch accepts output_size only within stride - 1 of the minimum size.
    op_below_stride = all(o < s for o, s in zip(c["op"], c["s"]))
    c["output_size"] = api.startswith("Conv") and op_below_stride and bool(rng.random() < 0.3)
    return c


def _arg(c: dict[str, Any], key: str) -> Any:
    """A per-axis parameter as the API takes it: int (1-D or square) or (y, x) tuple."""
    return c[key][1] if c["as_int"] else tuple(c[key])


@pytest.mark.parametrize("index", range(N_FUNCTIONAL_CASES))
def test_functional_sweep(device: Any, index: int) -> None:
    c = functional_case(index)
    rng = np.random.default_rng([SEED, 4, index])
    what = f"functional case {c}"
    one_d = c["api"].endswith("1d")
    dtype = np.dtype(c["dtype"])
    k_h, k_w = c["k"]
    x_nchw = rng.uniform(-1, 1, (c["n"], c["cin"], *c["hw"])).astype(dtype)
    x_arr, layout, _, _ = make_storage(x_nchw, c["storage"], dtype)
    if one_d:  # drop the unit H axis: (N, C, 1, L) -> (N, C, L), (N, 1, L, C) -> (N, L, C)
        x_arr = x_arr[:, :, 0] if layout == "NCHW" else x_arr[:, 0]
        layout = "NCL" if layout == "NCHW" else "NLC"
    x_before = x_arr.copy()
    scale = 1.0 / np.sqrt(c["cin"] // c["groups"] * k_h * k_w)
    w = rng.uniform(-scale, scale, (c["cin"], c["cout"] // c["groups"], k_h, k_w)).astype(dtype)
    b = rng.uniform(-0.5, 0.5, c["cout"]).astype(dtype) if c["bias"] else None
    if one_d:
        w = w[:, :, 0]

    ref = R.conv_transpose_torch_ref(
        x_nchw,
        w if not one_d else w[:, :, None],
        b,
        stride=tuple(c["s"]),
        padding=tuple(c["p"]),
        output_padding=tuple(c["op"]),
        groups=c["groups"],
        dilation=tuple(c["d"]),
    ).astype(dtype)
    n_out, c_out, h_out, w_out = ref.shape
    if one_d:
        out_shape = (n_out, c_out, w_out) if layout == "NCL" else (n_out, w_out, c_out)
    else:
        out_shape = from_nchw(np.empty((n_out, c_out, h_out, w_out)), layout).shape
    out = poison(np.empty(out_shape, dtype)) if c["out"] else None

    geometry = dict(
        stride=_arg(c, "s"), padding=_arg(c, "p"), groups=c["groups"], dilation=_arg(c, "d")
    )
    if c["api"].startswith("conv_transpose"):
        fn = convt.conv_transpose1d if one_d else convt.conv_transpose2d
        got = fn(
            x_arr,
            w,
            b,
            output_padding=_arg(c, "op"),
            out=out,
            layout=layout,
            device=device,
            **geometry,
        )
    else:
        cls = convt.ConvTranspose1d if one_d else convt.ConvTranspose2d
        kernel = k_w if c["as_int"] else (k_h, k_w)
        op = 0 if c["output_size"] else _arg(c, "op")
        layer = cls(
            c["cin"],
            c["cout"],
            kernel,
            output_padding=op,
            bias=c["bias"],
            dtype=dtype,
            layout=layout,
            device=device,
            seed=c["index"],
            **geometry,
        )
        assert layer.weight.shape == w.shape and layer.weight.dtype == dtype, what
        assert (layer.bias is None) == (not c["bias"]), what
        if c["load_weights"]:
            layer.load_weights(w, b)
            np.testing.assert_array_equal(layer.weight, w)
        else:  # the layer's own (seeded) initial weights
            w, b = layer.weight, layer.bias
            ref = R.conv_transpose_torch_ref(
                x_nchw,
                w if not one_d else w[:, :, None],
                b,
                stride=tuple(c["s"]),
                padding=tuple(c["p"]),
                output_padding=tuple(c["op"]),
                groups=c["groups"],
                dilation=tuple(c["d"]),
            ).astype(dtype)
        size = None
        if c["output_size"]:
            size = (ref.shape[3],) if one_d else ref.shape[2:]
        got = layer(x_arr, out=out, output_size=size)

    if out is not None:
        assert got is out, f"{what}: out= was not returned"
    assert isinstance(got, np.ndarray) and got.dtype == dtype, what
    assert got.shape == out_shape, what
    got4 = np.expand_dims(got, 2 if layout == "NCL" else 1) if one_d else got
    got_nchw = to_nchw(got4, "NCHW" if layout in ("NCHW", "NCL") else "NHWC")
    tol = FP16_TOL if dtype == np.float16 else FP32_TOL
    assert_close(got_nchw, ref, tol, what)
    np.testing.assert_array_equal(x_arr, x_before, err_msg=f"{what}: input modified")


def test_from_nchw_roundtrip() -> None:
    a = np.arange(24.0).reshape(1, 2, 3, 4)
    assert np.shares_memory(from_nchw(a, "NHWC"), a)
    np.testing.assert_array_equal(to_nchw(from_nchw(a, "NHWC"), "NHWC"), a)


def test_sweep_covers_every_feature() -> None:
    """The generated cases exercise every option the sweep claims to cover."""
    mps = [mps_case(i) for i in range(N_MPS_CASES)]
    fun = [functional_case(i) for i in range(N_FUNCTIONAL_CASES)]
    seen = lambda cases, key: {repr(c.get(key)) for c in cases}  # noqa: E731
    assert {c["neuron"][0] for c in mps if c["neuron"]} == set(R.NEURON_TYPES)
    assert seen(mps, "weights") == {
        repr(v) for v in ("float32", "float16", "uint8-linear", "uint8-lut")
    }
    assert seen(mps, "accumulator") == {"'half'", "'float'"}
    assert seen(mps, "dtype") == seen(fun, "dtype") == {"'float16'", "'float32'"}
    assert seen(mps, "kernel_weights") == {"'float16'", "'float32'"}
    assert {c["src_storage"] for c in mps} == {c["dst_storage"] for c in mps} == set(STORAGE_KINDS)
    assert seen(fun, "storage") == {repr(v) for v in STORAGE_KINDS}
    assert seen(fun, "api") == {
        repr(v)
        for v in ("conv_transpose2d", "conv_transpose1d", "ConvTranspose2d", "ConvTranspose1d")
    }
    for key in ("bias", "bn"):
        assert seen(mps, key) == {"True", "False"}
    assert any(c["path"] == "auto" and c["state"] for c in mps)
    assert any(c["path"] == "auto" and not c["state"] for c in mps)
    manual = [c for c in mps if c["path"] == "manual"]
    assert any(c["clip"] for c in manual) and any(c["dfo"] for c in manual)
    assert any(c["offset_z"] for c in manual) and any(c["sfo"] for c in mps)
    assert {c["groups"] for c in mps} >= {1, 2, 4, 7}
    assert {s for c in mps for s in c["s"]} == {1, 2, 3, 4}
    assert {d for c in mps for d in c["d"]} == {1, 2, 3}
    assert {k for c in mps for k in c["k"]} == set(range(1, 8))
    assert any(c["out"] for c in fun) and any(c["output_size"] for c in fun)
