"""A table of hostile inputs, one row per (entry point, parameter, bad property).

Every row must raise ValueError or TypeError whose message names the parameter, and must not
crash the process. Rows are generated: each array parameter of each entry point gets every array
property (wrong type, dtype, ndim, misaligned or odd strides, sizes near 2^31 and 2^63 faked with
zero strides, strides spanning more than 2^62 bytes, and for outputs: read-only, self-overlapping
and aliasing an input); each scalar parameter gets wrong types and out-of-range values near 0,
2^31, 2^63 and 2^64. tests/test_bad_input.py keeps the semantic rules (groups divisibility,
output_padding bounds, clip rectangles...); this file is the breadth.

Valid-but-unusual arrays (zero-size dimensions, negative strides, non-contiguous views) are
computed right instead: see ``test_unusual_but_valid_arrays``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import convt
import numpy as np
import pytest
import reference as R
from _helpers import DESCRIPTOR_FIELDS, FP32_TOL, assert_close, poison, run_encoded
from numpy.lib.stride_tricks import as_strided

try:
    import torch
except ImportError:  # torch is optional
    torch = None

RNG = np.random.default_rng(20240707)
F32 = np.float32
X = RNG.uniform(-1, 1, (2, 7, 4, 5)).astype(F32)  # NCHW, 7 channels
W = RNG.uniform(-1, 1, (7, 3, 3, 2)).astype(F32)  # (Cin, Cout/groups, kH, kW)
B = RNG.uniform(-1, 1, 3).astype(F32)
OUT_SHAPE = (2, 3, 6, 6)  # stride 1, no padding
W_MPS = RNG.uniform(-1, 1, (3, 3, 2, 7)).astype(F32)  # OHWI
SRC = RNG.uniform(-1, 1, (1, 7, 4, 5)).astype(F32)
DST_SHAPE = (1, 3, 4, 5)
MAX_I32, MAX_I64 = 2**31 - 1, 2**63 - 1
BAD = (ValueError, TypeError)


@dataclass
class Case:
    id: str
    fn: Callable[[Any], Any]  # called with the device
    match: str  # a regex the message must contain (the parameter's name)
    exc: Any = BAD


CASES: list[Case] = []


def add(id: str, fn: Callable[[Any], Any], match: str, exc: Any = BAD) -> None:
    assert all(c.id != id for c in CASES), id
    CASES.append(Case(id, fn, match, exc))


# ---- hostile arrays --------------------------------------------------------------------------


def misaligned(a: np.ndarray) -> np.ndarray:
    """A writable copy of ``a`` whose data pointer is one byte off its item alignment."""
    raw = bytearray(a.nbytes + 1)
    m = np.frombuffer(raw, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    m[...] = a
    return m


def odd_stride(a: np.ndarray) -> np.ndarray:
    """A view of ``a``'s bytes whose last stride (2 bytes) is not a multiple of the item size."""
    base = np.zeros(a.size * 2 + 8, a.dtype)
    strides = tuple(s // 2 for s in a.strides[:-1]) + (2,)
    return as_strided(base, a.shape, strides)


def fake(shape: tuple, dtype: Any = F32) -> np.ndarray:
    """A huge array that takes no memory (every stride 0)."""
    return as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))


def far_strides(a: np.ndarray, axis: int) -> np.ndarray:
    """``a`` with a stride of 2^62 bytes on ``axis``: no memory could hold it."""
    strides = list(a.strides)
    strides[axis] = 2**62
    return as_strided(np.zeros(1, a.dtype), a.shape, tuple(strides))


def self_overlapping(shape: tuple, dtype: Any = F32) -> np.ndarray:
    """Writable, every element at the same address."""
    return as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))


def read_only(shape: tuple, dtype: Any = F32) -> np.ndarray:
    a = np.zeros(shape, dtype)
    a.flags.writeable = False
    return a


def array_variants(good: np.ndarray, *, huge_axis: int, output: bool) -> dict[str, Any]:
    """Bad values for one array parameter, keyed by the property they break."""
    v: dict[str, Any] = {
        "list": good.tolist(),
        "none": None,
        "str": "not an array",
        "int-scalar": 3,
        "0-d": np.array(1.0, good.dtype),
        "int32": good.astype(np.int32),
        "complex64": good.astype(np.complex64),
        "bool": good.astype(bool),
        "object": good.astype(object),
        "big-endian": good.astype(good.dtype.newbyteorder(">")),
        "ndim-minus-1": good[0],
        "ndim-plus-1": good[None],
        "misaligned": misaligned(good),
        "stride-not-itemsize-multiple": odd_stride(good),
        "strides-beyond-2^62-bytes": far_strides(good, huge_axis),
    }
    if good.ndim == 4:  # image-like: one axis 2^31 long (the core's per-axis limit)
        shape = list(good.shape)
        shape[huge_axis] = 2**31
        v["dim-2^31"] = fake(tuple(shape))
        # As long as numpy allows: the whole array just under 2^63 bytes.
        others = int(np.prod(shape)) // shape[huge_axis]
        shape[huge_axis] = (2**63 - 1) // (good.itemsize * others)
        v["bytes-near-2^63"] = fake(tuple(shape))
    if torch is not None:  # float tensors are valid (DLPack, tests/test_dlpack.py); int ones not
        v["torch-int32-tensor"] = torch.from_numpy(good.astype(np.int32))
    if output:
        v["read-only"] = read_only(good.shape, good.dtype)
        v["self-overlapping"] = self_overlapping(good.shape, good.dtype)
    return v


# ---- the functional API ----------------------------------------------------------------------


def ct2d(**kw: Any) -> Callable[[Any], Any]:
    def run(device: Any) -> Any:
        args = {"x": X, "weight": W, "bias": B, **kw}
        return convt.conv_transpose2d(
            args.pop("x"), args.pop("weight"), args.pop("bias"), device=device, **args
        )

    return run


for param, good, axis, output in (
    ("x", X, 3, False),
    ("weight", W, 1, False),
    ("bias", B, 0, False),
    ("out", np.zeros(OUT_SHAPE, F32), 2, True),
):
    for prop, value in array_variants(good, huge_axis=axis, output=output).items():
        if param in ("bias", "out") and prop == "none":
            continue  # None means "no bias" / "allocate"
        add(f"conv_transpose2d-{param}-{prop}", ct2d(**{param: value}), rf"\b{param}\b")

add("conv_transpose2d-x-float16-vs-float32-weight", ct2d(x=X.astype(np.float16)), r"\bx\b")
add("conv_transpose2d-bias-float16", ct2d(bias=B.astype(np.float16)), "bias")
add("conv_transpose2d-out-float16", ct2d(out=np.zeros(OUT_SHAPE, np.float16)), "out")
add("conv_transpose2d-out-wrong-shape", ct2d(out=np.zeros((2, 3, 6, 7), F32)), "out")
add("conv_transpose2d-x-zero-channels", ct2d(x=np.zeros((2, 0, 4, 5), F32)), r"\bx\b")
add("conv_transpose2d-weight-zero-kernel", ct2d(weight=np.zeros((7, 3, 0, 2), F32)), "weight")
add("conv_transpose2d-weight-zero-cout", ct2d(weight=np.zeros((7, 0, 3, 2), F32)), "weight")
add("conv_transpose2d-weight-2^40-elements", ct2d(weight=fake((7, 2**31 - 1, 2**16, 1))), "weight")
add("conv_transpose2d-out-is-x", lambda d: ct2d(x=X, out=X)(d), "out")
add(
    "conv_transpose2d-out-overlaps-x",
    lambda d: (lambda base: ct2d(x=base[:, :7, :4, :5], out=base[:, 4:7])(d))(
        np.zeros((2, 10, 6, 6), F32)
    ),
    "out",
)

SCALARS = {
    "zero": 0,
    "negative": -1,
    "2^31": 2**31,
    "2^62": 2**62,
    "2^63": 2**63,
    "-2^63-1": -(2**63) - 1,
    "2^64": 2**64,
    "float": 1.5,
    "str": "2",
    "none": None,
    "bool": True,
    "triple": (1, 1, 1),
    "pair-of-floats": (1.0, 1.0),
    "pair-with-2^63": (1, 2**63),
}
VALID_AT = {  # values that are legal for a parameter and so are not in its rows
    "padding": {"zero"},
    "output_padding": {"zero"},
}
for param in ("stride", "padding", "output_padding", "dilation", "groups"):
    for prop, value in SCALARS.items():
        if prop in VALID_AT.get(param, ()) or (param == "groups" and prop.startswith("pair")):
            continue
        add(f"conv_transpose2d-{param}-{prop}", ct2d(**{param: value}), param)
for prop, value in {"none": None, "int": 1, "lower": "nchw", "empty": "", "1d": "NCL"}.items():
    add(f"conv_transpose2d-layout-{prop}", ct2d(layout=value), "layout")
for prop, value in {"int": 3, "unknown-kind": "no-such-device", "object": object()}.items():
    add(f"conv_transpose2d-device-{prop}", ct2d(device=value), "device")


def ct1d(**kw: Any) -> Callable[[Any], Any]:
    def run(device: Any) -> Any:
        args = {"x": X[:, :, 0], "weight": W[:, :, 0], "bias": B, **kw}
        return convt.conv_transpose1d(
            args.pop("x"), args.pop("weight"), args.pop("bias"), device=device, **args
        )

    return run


for param, good, axis, output in (
    ("x", X[:, :, 0], 2, False),
    ("weight", W[:, :, 0], 2, False),
    ("out", np.zeros((2, 3, 6), F32), 2, True),
):
    for prop, value in array_variants(good, huge_axis=axis, output=output).items():
        if param == "out" and prop == "none":
            continue
        add(f"conv_transpose1d-{param}-{prop}", ct1d(**{param: value}), rf"\b{param}\b")
for param in ("stride", "padding", "dilation", "groups"):
    for prop in ("negative", "2^63", "float", "none", "pair-of-floats"):
        add(f"conv_transpose1d-{param}-{prop}", ct1d(**{param: SCALARS[prop]}), param)
add("conv_transpose1d-layout-2d", ct1d(layout="NCHW"), "layout")


def bwd2d(**kw: Any) -> Callable[[Any], Any]:
    def run(device: Any) -> Any:
        args = {"grad_output": np.ones(OUT_SHAPE, F32), "x": X, "weight": W, **kw}
        return convt.conv_transpose2d_backward(
            args.pop("grad_output"), args.pop("x"), args.pop("weight"), device=device, **args
        )

    return run


for param, good, axis in (
    ("grad_output", np.ones(OUT_SHAPE, F32), 3),
    ("x", X, 2),
    ("weight", W, 1),
):
    for prop, value in array_variants(good, huge_axis=axis, output=False).items():
        add(f"conv_transpose2d_backward-{param}-{prop}", bwd2d(**{param: value}), rf"\b{param}\b")
add(
    "conv_transpose2d_backward-grad_output-wrong-shape",
    bwd2d(grad_output=np.ones((2, 3, 6, 5), F32)),
    "grad_output",
)
add(
    "conv_transpose2d_backward-grad_output-float16",
    bwd2d(grad_output=np.ones(OUT_SHAPE, np.float16)),
    "grad_output",
)
for prop, value in {"none": None, "short": (True,), "int": 5, "long": (1, 1, 1, 1)}.items():
    add(f"conv_transpose2d_backward-output_mask-{prop}", bwd2d(output_mask=value), "output_mask")
# out=(grad_input, grad_weight, grad_bias): each entry's hostile arrays, named in the error.
GRADS = (np.zeros(X.shape, F32), np.zeros(W.shape, F32), np.zeros(3, F32))
for i, (param, good, axis) in enumerate(
    zip(("grad_input", "grad_weight", "grad_bias"), GRADS, (3, 1, 0))
):
    for prop, value in array_variants(good, huge_axis=axis, output=True).items():
        if prop == "none":
            continue  # None means "allocate"
        out = tuple(value if j == i else None for j in range(3))
        add(f"conv_transpose2d_backward-out-{param}-{prop}", bwd2d(out=out), rf"\b{param}\b")
    wrong = np.zeros(good.shape[:-1] + (good.shape[-1] + 1,), F32)
    add(
        f"conv_transpose2d_backward-out-{param}-wrong-shape",
        bwd2d(out=tuple(wrong if j == i else None for j in range(3))),
        rf"\b{param}\b",
    )
    mask = tuple(j != i for j in range(3))
    add(
        f"conv_transpose2d_backward-out-{param}-not-computed",
        bwd2d(out=tuple(good.copy() if j == i else None for j in range(3)), output_mask=mask),
        rf"\b{param}\b.*output_mask",
    )
for prop, value in {"array": GRADS[0], "short": (None, None), "int": 5}.items():
    add(f"conv_transpose2d_backward-out-{prop}", bwd2d(out=value), r"\bout\b")
add(
    "conv_transpose2d_backward-out-grad_input-is-x",
    bwd2d(out=(X, None, None)),
    r"\bgrad_input\b",
)
for param in ("stride", "padding", "dilation", "groups"):
    for prop in ("zero" if param != "padding" else "negative", "2^63", "str"):
        add(f"conv_transpose2d_backward-{param}-{prop}", bwd2d(**{param: SCALARS[prop]}), param)


def bwd1d(**kw: Any) -> Callable[[Any], Any]:
    def run(device: Any) -> Any:
        args = {"grad_output": np.ones((2, 3, 6), F32), "x": X[:, :, 0], "weight": W[:, :, 0]}
        args.update(kw)
        return convt.conv_transpose1d_backward(
            args.pop("grad_output"), args.pop("x"), args.pop("weight"), device=device, **args
        )

    return run


for param, good in (("grad_output", np.ones((2, 3, 6), F32)), ("x", X[:, :, 0])):
    for prop in ("list", "none", "int32", "ndim-plus-1", "misaligned", "strides-beyond-2^62-bytes"):
        value = array_variants(good, huge_axis=2, output=False)[prop]
        add(f"conv_transpose1d_backward-{param}-{prop}", bwd1d(**{param: value}), rf"\b{param}\b")
for i, (param, good) in enumerate(
    (
        ("grad_input", np.zeros(X[:, :, 0].shape, F32)),
        ("grad_weight", np.zeros(W[:, :, 0].shape, F32)),
    )
):
    for prop in ("list", "int32", "ndim-plus-1", "ndim-minus-1", "misaligned", "read-only"):
        value = array_variants(good, huge_axis=2, output=True)[prop]
        out = tuple(value if j == i else None for j in range(3))
        add(f"conv_transpose1d_backward-out-{param}-{prop}", bwd1d(out=out), rf"\b{param}\b")


# ---- layer objects ---------------------------------------------------------------------------


def layer(ctor: dict | None = None, call: dict | None = None) -> Callable[[Any], Any]:
    def run(device: Any) -> Any:
        kw = {"in_channels": 7, "out_channels": 3, "kernel_size": 3, **(ctor or {})}
        m = convt.ConvTranspose2d(
            kw.pop("in_channels"), kw.pop("out_channels"), kw.pop("kernel_size"),
            device=kw.pop("device", device), **kw,
        )  # fmt: skip
        args = {"x": X, **(call or {})}
        return m(args.pop("x"), **args)

    return run


for param in ("in_channels", "out_channels", "kernel_size", "stride", "dilation", "groups"):
    for prop in ("zero", "negative", "2^31", "2^63", "float", "str", "none"):
        if param in ("in_channels", "out_channels", "groups") and prop == "2^31":
            continue  # would first fail on the 7-channel x, not on the parameter
        add(f"ConvTranspose2d-{param}-{prop}", layer({param: SCALARS[prop]}), param)
for param in ("padding", "output_padding"):
    for prop in ("negative", "2^63", "float"):
        add(f"ConvTranspose2d-{param}-{prop}", layer({param: SCALARS[prop]}), param)
for prop, value in {"int32": np.int32, "float64": np.float64, "bogus": "bogus"}.items():
    add(f"ConvTranspose2d-dtype-{prop}", layer({"dtype": value}), "dtype")
add("ConvTranspose2d-layout-bogus", layer({"layout": "CHWN"}), "layout")
add("ConvTranspose2d-device-int", layer({"device": 7}), "device")
for prop, value in array_variants(X, huge_axis=3, output=False).items():
    add(f"ConvTranspose2d-call-x-{prop}", layer(call={"x": value}), r"\bx\b")
for prop, value in array_variants(np.zeros(OUT_SHAPE, F32), huge_axis=2, output=True).items():
    if prop != "none":
        add(f"ConvTranspose2d-call-out-{prop}", layer(call={"out": value}), r"\bout\b")
for prop, value in {
    "str": "ab",
    "2^64": (2**64, 6),
    "negative": (-1, -1),
    "too-large": (MAX_I64, MAX_I64),
    "floats": (6.0, 6.0),
}.items():
    add(
        f"ConvTranspose2d-call-output_size-{prop}",
        layer(call={"output_size": value}),
        "output_size",
    )


def load_weights(weight: Any, bias: Any = None) -> Callable[[Any], Any]:
    return lambda d: convt.ConvTranspose2d(7, 3, (3, 2), device=d).load_weights(weight, bias)


for prop in ("list", "none", "int32", "ndim-minus-1", "misaligned", "strides-beyond-2^62-bytes"):
    add(
        f"ConvTranspose2d-load_weights-weight-{prop}",
        load_weights(array_variants(W, huge_axis=1, output=False)[prop]),
        "weight",
    )
add("ConvTranspose2d-load_weights-weight-float16", load_weights(W.astype(np.float16)), "weight")
add("ConvTranspose2d-load_weights-bias-list", load_weights(W, [0.0, 0.0, 0.0]), "bias")
add("ConvTranspose2d-load_weights-bias-short", load_weights(W, B[:2]), "bias")


# ---- the MPS-style API -----------------------------------------------------------------------


def mps(
    attrs: dict | None = None,
    src: Any = None,
    dst: Any = None,
    *,
    auto: bool = False,
    desc: dict | None = None,
    source: dict | None = None,
) -> Callable[[Any], Any]:
    """Builds a kernel, sets ``attrs`` on it, encodes ``src`` (into ``dst`` unless ``auto``)."""

    def run(device: Any) -> Any:
        d = convt.ConvolutionDescriptor(2, 3, 7, 3)
        for k, v in (desc or {}).items():
            setattr(d, k, v)
        src_kw = {"weights": W_MPS, "bias": None, **(source or {})}
        k = convt.ConvolutionTranspose(
            device, convt.ArrayDataSource(d, src_kw.pop("weights"), src_kw.pop("bias"), **src_kw)
        )
        for name, value in (attrs or {}).items():
            setattr(k, name, value)
        s = convt.Image(SRC if src is None else src)
        if auto:
            return run_encoded(device, lambda cb: k.encode(cb, s))
        out = convt.Image(poison(np.empty(DST_SHAPE, F32)) if dst is None else dst)
        return run_encoded(device, lambda cb: k.encode(cb, s, destination_image=out))

    return run


for name in (
    "kernel_offset_x",
    "kernel_offset_y",
    "source_feature_channel_offset",
    "source_feature_channel_max_count",
    "destination_feature_channel_offset",
):
    for prop in ("2^31", "2^62", "2^63", "-2^63-1", "2^64", "float", "str", "none"):
        value = SCALARS[prop]
        if name == "source_feature_channel_max_count" and prop in ("2^31", "2^62"):
            continue  # a maximum count may be anything >= the channels used
        if name.startswith("kernel_offset") and prop in ("2^31", "2^62"):
            # The total offset must fit in 32 bits (checked by name at encode time).
            add(f"mps-{name}-{prop}", mps({name: value}), f"total offset|{name}")
            add(f"mps-{name}-{prop}-negative", mps({name: -value}), f"total offset|{name}")
            continue
        add(f"mps-{name}-{prop}", mps({name: value}), name.replace("_feature_channel", ".*"))
    if name != "source_feature_channel_max_count":
        if name.startswith("kernel_offset"):
            continue  # negative kernel offsets are legal
        add(f"mps-{name}-negative", mps({name: -1}), name)
for prop, value in {
    "x-2^62": (2**62, 0, 0),
    "y-2^63-1": (0, MAX_I64, 0),
    "x-min-int64": (-(2**63), 0, 0),
    "z-2^62": (0, 0, 2**62),
    "z-negative": (0, 0, -1),
    "pair": (1, 2),
    "str": "abc",
    "none": None,
    "x-2^64": (2**64, 0, 0),
    "floats": (0.5, 0.0, 0.0),
}.items():
    add(f"mps-offset-{prop}", mps({"offset": value}), "offset")
for prop, value in {
    "origin-2^62": lambda: convt.Region(2**62, 0, 0, 1, 1, 1),
    "origin-negative": lambda: convt.Region(0, -1, 0, 1, 1, 1),
    "zero-width": lambda: convt.Region(0, 0, 0, 0, 1, 1),
    "negative-depth": lambda: convt.Region(0, 0, 0, 1, 1, -(2**63)),
    "tuple": lambda: (0, 0, 0, 1, 1, 1),
    "none": lambda: None,
}.items():
    add(f"mps-clip_rect-{prop}", lambda d, v=value: mps({"clip_rect": v()})(d), "clip_rect")
add("mps-Region-2^64", lambda d: convt.Region(2**64, 0, 0, 1, 1, 1), r"\bx\b")
for name, values in {
    "edge_mode": {"int": 7, "none": None, "str": "zero"},
    "accumulator_precision": {"int": 5, "none": None, "str": "half"},
    "label": {"int": 5, "none": None},
}.items():
    for prop, value in values.items():
        add(f"mps-{name}-{prop}", mps({name: value}), name)
for prop, make in {
    "none": lambda: None,
    "int": lambda: 0x10,
    "size-bits-0x30": lambda: convt.Padding(0x30),
    "negative": lambda: convt.Padding(-1),
    "2^32": lambda: convt.Padding(2**32),
    "str": lambda: convt.Padding("same"),
}.items():
    add(
        f"mps-padding-{prop}",
        lambda d, m=make: mps({"padding": m()}, auto=True)(d),
        "padding|method",
    )

for field in DESCRIPTOR_FIELDS:
    for prop in ("zero", "negative", "2^31", "2^63", "2^64", "float", "str", "none"):
        add(f"ConvolutionDescriptor-{field}-{prop}", mps(desc={field: SCALARS[prop]}), field)
for prop, value in {"str": "relu", "int": 1}.items():
    add(
        f"ConvolutionDescriptor-fused_neuron_descriptor-{prop}",
        mps(desc={"fused_neuron_descriptor": value}),
        "fused_neuron_descriptor",
    )
add(
    "ConvolutionDescriptor-huge-weight-count",
    lambda d: mps(desc={"kernel_width": MAX_I32, "kernel_height": MAX_I32})(d),
    "weight count",
)
for i, name in enumerate(
    ("kernel_width", "kernel_height", "input_feature_channels", "output_feature_channels")
):
    for prop in ("2^64", "str", "none"):
        args = [3, 3, 7, 3]
        args[i] = SCALARS[prop]
        add(
            f"ConvolutionDescriptor()-{name}-{prop}",
            lambda d, a=tuple(args): convt.ConvolutionDescriptor(*a),
            name,
        )


def neuron_desc(**kw: Any) -> Callable[[Any], Any]:
    def run(device: Any) -> Any:
        args = {"type": convt.NeuronType.prelu, "data": np.ones(3, F32), **kw}
        n = convt.NeuronDescriptor(args.pop("type"), **args)
        return mps(desc={"fused_neuron_descriptor": n})(device)

    return run


add("NeuronDescriptor-type-int", neuron_desc(type=99), "type")
add("NeuronDescriptor-type-str", neuron_desc(type="relu"), "type")
add("NeuronDescriptor-a-str", neuron_desc(a="x"), r"\ba\b")
add("NeuronDescriptor-prelu-data-short", neuron_desc(data=np.ones(2, F32)), "data")
add("NeuronDescriptor-prelu-data-missing", neuron_desc(data=None), "data")
add("NeuronDescriptor-prelu-data-2d", neuron_desc(data=np.ones((3, 1), F32)), "data")
add("NeuronDescriptor-prelu-data-str", neuron_desc(data="abc"), "data")


def batch_norm(**kw: Any) -> Callable[[Any], Any]:
    def run(device: Any) -> Any:
        d = convt.ConvolutionDescriptor(2, 3, 7, 3)
        p = {k: np.ones(3, F32) for k in ("mean", "variance", "gamma", "beta")} | {"epsilon": 1e-3}
        p.update(kw)
        d.set_batch_normalization_parameters_for_inference(**p)
        k = convt.ConvolutionTranspose(device, convt.ArrayDataSource(d, W_MPS))
        return run_encoded(device, lambda cb: k.encode(cb, convt.Image(SRC)))

    return run


for name in ("mean", "variance", "gamma", "beta"):
    add(f"batch_norm-{name}-short", batch_norm(**{name: np.ones(2, F32)}), name)
    add(f"batch_norm-{name}-none", batch_norm(**{name: None}), name)
    add(f"batch_norm-{name}-str", batch_norm(**{name: "abc"}), name)
add("batch_norm-epsilon-str", batch_norm(epsilon="small"), "epsilon")

# A data source hands over its values, as MPS takes a pointer: shape beyond the element count,
# alignment and strides do not matter (a contiguous copy is taken), so those rows are not here.
COPIED = ("0-d", "ndim-minus-1", "ndim-plus-1", "misaligned", "stride-not-itemsize-multiple")
for prop, value in array_variants(W_MPS, huge_axis=1, output=False).items():
    if prop not in COPIED:
        add(f"ArrayDataSource-weights-{prop}", mps(source={"weights": value}), "weights")
for prop, value in array_variants(B, huge_axis=0, output=False).items():
    if prop not in COPIED + ("none",):
        add(f"ArrayDataSource-bias-{prop}", mps(source={"bias": value}), "bias")
add("ArrayDataSource-descriptor-str", lambda d: convt.ArrayDataSource("desc", W_MPS), "descriptor")
add(
    "ArrayDataSource-kernel_weights_data_type-str",
    mps(source={"kernel_weights_data_type": "float32"}),
    "kernel_weights_data_type|data_type",
)
add(
    "ArrayDataSource-uint8-without-quantization",
    mps(source={"weights": W_MPS.astype(np.uint8)}),
    "quantization|weights",
)
add(
    "ArrayDataSource-ranges-short",
    mps(
        source={
            "weights": W_MPS.astype(np.uint8),
            "quantization": convt.QuantizationType.linear,
            "ranges": np.ones((2, 2), F32),
        }
    ),
    "ranges",
)


class HostileSource(convt.DataSource):
    """A DataSource whose one method returns something wrong."""

    def __init__(self, broken: str, value: Any) -> None:
        super().__init__()
        self.broken, self.value = broken, value

    def _get(self, name: str, good: Any) -> Any:
        if self.broken != name:
            return good
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value

    def descriptor(self) -> Any:
        return self._get("descriptor", convt.ConvolutionDescriptor(2, 3, 7, 3))

    def data_type(self) -> Any:
        return self._get("data_type", convt.DataType.float32)

    def weights(self) -> Any:
        return self._get("weights", W_MPS)

    def bias_terms(self) -> Any:
        return self._get("bias_terms", None)

    def label(self) -> Any:
        return self._get("label", "hostile")

    def load(self) -> Any:
        return self._get("load", True)


for broken, value, exc in (
    ("descriptor", "nope", BAD),
    ("descriptor", None, BAD),
    ("data_type", 17, BAD),
    ("data_type", convt.DataType.uint8, BAD),  # the weights are float32
    ("weights", None, BAD),
    ("weights", W_MPS.tolist(), BAD),
    ("weights", W_MPS[:2], BAD),
    ("weights", W_MPS.astype(np.float16), BAD),
    ("bias_terms", np.ones(2, F32), BAD),
    ("bias_terms", "abc", BAD),
    ("label", 5, BAD),
    ("weights", ValueError("weights are unavailable"), ValueError),
):
    add(
        f"DataSource-{broken}-returns-{type(value).__name__}-{len(CASES)}",
        lambda d, b=broken, v=value: mps_with_source(d, HostileSource(b, v)),
        (broken if broken != "data_type" else "data_type|weights")
        if not isinstance(value, BaseException)
        else "weights are unavailable",
        exc,
    )


def mps_with_source(device: Any, source: Any) -> Any:
    k = convt.ConvolutionTranspose(device, source)
    out = convt.Image(poison(np.empty(DST_SHAPE, F32)))
    return run_encoded(device, lambda cb: k.encode(cb, convt.Image(SRC), destination_image=out))


for prop, value in array_variants(SRC, huge_axis=3, output=False).items():
    if prop != "none":  # None is mps()'s "use the default"
        add(f"Image-source-{prop}", mps(src=value), "array|source")
for prop, value in array_variants(np.zeros(DST_SHAPE, F32), huge_axis=2, output=True).items():
    if prop != "none":
        add(f"Image-destination-{prop}", mps(dst=value), "array|destination")
add("Image-array-none", lambda d: convt.Image(None), "array")


def aliasing(device: Any, overlap: bool) -> Any:
    base = RNG.uniform(-1, 1, (1, 10, 4, 5)).astype(F32)
    src, dst = base[:, :7], base[:, 4:7] if overlap else base[:, :3]
    return mps(src=src, dst=dst)(device)


add("Image-destination-overlaps-source", lambda d: aliasing(d, True), "destination")
add("Image-destination-inside-source", lambda d: aliasing(d, False), "destination")
add("Image-layout-bogus", lambda d: convt.Image(SRC, layout="CHWN"), "layout")
add("Image-layout-none", lambda d: convt.Image(SRC, layout=None), "layout")
for prop, value in {"none": None, "device": "cpu", "int": 1}.items():
    add(
        f"encode-command_buffer-{prop}",
        lambda d, v=value: mps_encode_args(d, command_buffer=v),
        "command_buffer",
    )
for prop, value in {"array": SRC, "none": None, "str": "image"}.items():
    add(
        f"encode-source_image-{prop}",
        lambda d, v=value: mps_encode_args(d, source_image=v),
        "source_image",
    )
for prop, value in {"array": np.zeros(DST_SHAPE, F32), "str": "image"}.items():
    add(
        f"encode-destination_image-{prop}",
        lambda d, v=value: mps_encode_args(d, destination_image=v),
        "destination_image",
    )
for prop, value in {"str": "state", "int": 1, "gradient-state-type": "transpose-state"}.items():
    add(
        f"encode-convolution_gradient_state-{prop}",
        lambda d, v=value: mps_encode_args(d, convolution_gradient_state=v),
        "convolution_gradient_state",
    )


def mps_encode_args(device: Any, **kw: Any) -> Any:
    d = convt.ConvolutionDescriptor(2, 3, 7, 3)
    k = convt.ConvolutionTranspose(device, convt.ArrayDataSource(d, W_MPS))
    cb = convt.CommandBuffer(device)
    args = {"command_buffer": cb, "source_image": convt.Image(SRC), **kw}
    if args.get("convolution_gradient_state") == "transpose-state":
        dst = convt.Image(np.zeros(DST_SHAPE, F32))
        args["convolution_gradient_state"] = k.result_state(convt.Image(SRC), destination_image=dst)
    k.encode(**args)
    cb.commit()
    cb.wait_until_completed()


for prop, value in {
    "lengths-differ": "dests",
    "states-length": "states",
}.items():
    add(
        f"encode_batch-{prop}",
        lambda d, v=value: encode_batch(d, v),
        "destination_images|convolution_gradient_states",
    )


def encode_batch(device: Any, which: str) -> Any:
    d = convt.ConvolutionDescriptor(2, 3, 7, 3)
    k = convt.ConvolutionTranspose(device, convt.ArrayDataSource(d, W_MPS))
    srcs = [convt.Image(SRC), convt.Image(SRC.copy())]
    if which == "dests":
        dests = [convt.Image(np.zeros(DST_SHAPE, F32))]
        return run_encoded(device, lambda cb: k.encode_batch(cb, srcs, destination_images=dests))
    return run_encoded(device, lambda cb: k.encode_batch(cb, srcs, [None]))


for name, index in (("source_width", 0), ("source_height", 1), ("kernel_width", 2)):
    for prop in ("negative", "2^31", "2^63", "2^64", "str"):
        args = [8, 8, 2, 3]
        args[index] = SCALARS[prop]
        add(
            f"ConvolutionGradientState.for_forward-{name}-{prop}",
            lambda d, a=tuple(args): convt.ConvolutionGradientState.for_forward(*a),
            name,
        )
for name in ("stride_x", "dilation_y"):
    for prop in ("zero", "2^31", "2^64"):
        add(
            f"ConvolutionGradientState.for_forward-{name}-{prop}",
            lambda d, n=name, p=prop: convt.ConvolutionGradientState.for_forward(
                8, 8, 2, 3, **{n: SCALARS[p]}
            ),
            name,
        )


# ---- the gradient kernel ---------------------------------------------------------------------


def gradient(**kw: Any) -> Callable[[Any], Any]:
    def run(device: Any) -> Any:
        d = convt.ConvolutionDescriptor(2, 3, 7, 3)
        source = convt.ArrayDataSource(d, W_MPS)
        fwd = convt.ConvolutionTranspose(device, source)
        grad = convt.ConvolutionTransposeGradient(device, source)
        dst = convt.Image(np.zeros(DST_SHAPE, F32))
        state = fwd.result_state(convt.Image(SRC), destination_image=dst)
        args = {
            "source_gradient": convt.Image(np.ones(DST_SHAPE, F32)),
            "source_image": convt.Image(SRC),
            "gradient_state": state,
            "destination_gradient": convt.Image(np.zeros(SRC.shape, F32)),
        }
        for name, value in kw.items():
            args[name] = convt.Image(value) if isinstance(value, np.ndarray) else value
        return run_encoded(device, lambda cb: grad.encode(cb, **args))

    return run


for param, good, output in (
    ("source_gradient", np.ones(DST_SHAPE, F32), False),
    ("source_image", SRC, False),
    ("destination_gradient", np.zeros(SRC.shape, F32), True),
):
    add(f"gradient-{param}-not-an-image", gradient(**{param: "not an image"}), param)
    for prop in ("read-only", "self-overlapping") if output else ():
        value = array_variants(good, huge_axis=2, output=True)[prop]
        add(f"gradient-{param}-{prop}", gradient(**{param: value}), param)
    for prop in ("wrong-shape",):
        bad = np.zeros(good.shape[:3] + (good.shape[3] + 1,), F32)
        add(f"gradient-{param}-{prop}", gradient(**{param: bad}), param)
add("gradient-gradient_state-none", gradient(gradient_state=None), "gradient_state")
add("gradient-gradient_state-str", gradient(gradient_state="state"), "gradient_state")
for prop, value in {"int": 9, "none": None, "str": "all"}.items():
    add(
        f"gradient-gradient_option-{prop}",
        lambda d, v=value: setattr(
            convt.ConvolutionTransposeGradient(
                d, convt.ArrayDataSource(convt.ConvolutionDescriptor(2, 3, 7, 3), W_MPS)
            ),
            "gradient_option",
            v,
        ),
        "gradient_option",
    )


# ---- serialization, devices, memory helpers --------------------------------------------------

for prop, value in {
    "none": None,
    "str": "CONVTKRN",
    "int": 5,
    "list": [1, 2, 3],
    "ndarray": np.zeros(8, np.uint8),
    "empty": b"",
    "magic-only": b"CONVTKRN",
}.items():
    for cls in ("ConvolutionTranspose", "ConvolutionTransposeGradient"):
        add(
            f"{cls}.from_bytes-data-{prop}",
            lambda d, v=value, c=cls: getattr(convt, c).from_bytes(v, device=d),
            "data|serialized",
        )
add(
    "from_bytes-device-int",
    lambda d: convt.ConvolutionTranspose.from_bytes(b"CONVTKRN", device=5),
    "device",
)
for prop, value in {"zero": 0, "negative": -1, "2^40": 2**40, "2^64": 2**64, "str": "2"}.items():
    add(f"set_num_threads-{prop}", lambda d, v=value: convt.set_num_threads(v), "num_threads|n\\b")
for prop, value in {"none": None, "int": 1, "unknown": "tpu"}.items():
    add(f"Device-kind-{prop}", lambda d, v=value: convt.Device(v), "kind|device")
add("CommandBuffer-device-none", lambda d: convt.CommandBuffer(None), "device")
add("empty_aligned-shape-negative", lambda d: convt.empty_aligned((2, -1)), "shape")
add("empty_aligned-shape-2^62-bytes", lambda d: convt.empty_aligned((2**60, 8)), "shape")


# ---- the tests -------------------------------------------------------------------------------


def test_the_corpus_is_large() -> None:
    """The corpus size, for the record (the closing note quotes it)."""
    print(f"\nbad-input corpus: {len(CASES)} cases per device")
    assert len(CASES) >= 500


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(device: Any, case: Case) -> None:
    with pytest.raises(case.exc) as info:
        case.fn(device)
    message = str(info.value)
    assert re.search(case.match, message), f"{case.id}: message does not name it: {message!r}"


# ---- valid but unusual arrays: computed right --------------------------------------------------


def _views(a: np.ndarray) -> dict[str, np.ndarray]:
    flipped = a[..., ::-1].copy()[..., ::-1]  # negative last stride, same values
    padded = np.full(a.shape[:-1] + (2 * a.shape[-1],), np.nan, a.dtype)
    padded[..., ::2] = a
    return {
        "negative-strides": flipped,
        "all-negative": a[::-1, ::-1, ::-1, ::-1].copy()[::-1, ::-1, ::-1, ::-1]
        if a.ndim == 4
        else flipped,
        "non-contiguous": padded[..., ::2],
        "fortran-order": np.asfortranarray(a),
    }


@pytest.mark.parametrize("param", ["x", "weight", "out", "grad_output"])
@pytest.mark.parametrize(
    "kind", ["negative-strides", "all-negative", "non-contiguous", "fortran-order"]
)
def test_unusual_but_valid_arrays(device: Any, param: str, kind: str) -> None:
    x, w, b = X, W, B
    g = RNG.uniform(-1, 1, OUT_SHAPE).astype(F32)
    if param == "grad_output":
        ref = R.conv_transpose_torch_backward(g, x, w)
        gv = _views(g)[kind]
        got = convt.conv_transpose2d_backward(gv, x, w, device=device)
        for a, r in zip(got, ref):
            assert_close(a, r, FP32_TOL, f"backward, grad_output {kind}")
        return
    ref = R.conv_transpose_torch_ref(x, w, b)
    if param == "out":
        out = _views(poison(np.empty(OUT_SHAPE, F32)))[kind]
        got = convt.conv_transpose2d(x, w, b, out=out, device=device)
        assert got is out
    else:
        args = {"x": x, "weight": w}
        args[param] = _views(args[param])[kind]
        got = convt.conv_transpose2d(args["x"], args["weight"], b, device=device)
    assert_close(got, ref, FP32_TOL, f"{param} {kind}")


@pytest.mark.parametrize(
    "shape",
    [(0, 7, 4, 5), (2, 7, 0, 5), (2, 7, 4, 0), (0, 7, 0, 0)],
    ids=["n0", "h0", "w0", "all0"],
)
def test_zero_size_inputs_are_computed_right(device: Any, shape: tuple) -> None:
    """An empty input gives the shape PyTorch gives; any output pixel holds just the bias."""
    x = np.zeros(shape, F32)
    ref = R.conv_transpose_torch_ref(x, W, B)
    got = convt.conv_transpose2d(x, W, B, device=device)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=0)
    gi, gw, gb = convt.conv_transpose2d_backward(np.ones(ref.shape, F32), x, W, device=device)
    assert gi.shape == x.shape and gw.shape == W.shape
    np.testing.assert_array_equal(gw, np.zeros_like(W))
    np.testing.assert_array_equal(gb, np.full(3, float(np.prod(ref.shape)) / 3, F32))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(
    "cin,cout,k,stride,groups",
    [(16, 3, 4, 2, 1), (8, 8, 3, 1, 1), (64, 64, 3, 1, 1), (32, 32, 2, 2, 1), (8, 8, 4, 2, 8)],
    ids=["few-outputs", "gemm", "winograd-3x3", "winograd-2x2", "depthwise"],
)
@pytest.mark.parametrize("hw", [(5, 0), (0, 5), (0, 0)], ids=["w0", "h0", "hw0"])
def test_zero_size_inputs_reach_every_weight_gradient_path(
    device: Any, cin: int, cout: int, k: int, stride: int, groups: int, hw: tuple, layout: str
) -> None:
    """X without pixels, for layers whose dW takes each CPU path: dW is zero and dB sums
    grad_output (not empty: with padding 0 an empty row still has k - stride output columns).
    Regression: the dW paths that cut rows into pixel slices divided by the zero width (SIGFPE:
    the process killed)."""
    w = RNG.uniform(-1, 1, (cin, cout // groups, k, k)).astype(F32)
    x = np.zeros((2, cin, *hw), F32)
    ref_y = R.conv_transpose_torch_ref(x, w, None, stride=stride, groups=groups)
    g = RNG.uniform(-1, 1, ref_y.shape).astype(F32)
    ref = R.conv_transpose_torch_backward(g, x, w, stride=stride, groups=groups)
    if layout == "NHWC":
        x, g = x.transpose(0, 2, 3, 1).copy(), g.transpose(0, 2, 3, 1).copy()
    gi, gw, gb = convt.conv_transpose2d_backward(
        g, x, w, stride=stride, groups=groups, layout=layout, device=device
    )
    assert gi.shape == x.shape and gw.shape == w.shape
    np.testing.assert_array_equal(gw, np.zeros_like(w))
    assert_close(gb, ref[2], FP32_TOL, f"grad_bias, input {hw}")


@pytest.mark.parametrize("stride", [2**20, 2**30, 2**31 - 1])
def test_huge_stride_is_computed_right(device: Any, stride: int) -> None:
    """A 1-pixel-wide input with a huge stride has a small output. Regression: the CPU backend
    computed 16 * stride in 32 bits, took its narrow path and allocated stride * channels floats
    (std::bad_alloc, or the OOM killer; found by tools/fuzz_deserialize.py). GPU backends gave
    every stride phase a threadgroup, stride_x * stride_y of them (an endless dispatch); only
    phases that reach the output get one now."""
    x = RNG.uniform(-1, 1, (1, 7, 2, 1)).astype(F32)
    ref = R.conv_transpose_torch_ref(x, W, B, stride=(2, stride), padding=(0, 1))
    got = convt.conv_transpose2d(x, W, B, stride=(2, stride), padding=(0, 1), device=device)
    assert_close(got, ref, FP32_TOL, f"stride {stride}")
