"""Helpers shared by the test modules (no convt import at module level)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import reference as R

FP32_TOL = 1e-5
FP16_TOL = 2e-3
TINY = 1e-12

BACKENDS = ("cpu", "metal", "metal-sim", "cuda")
# The integer properties of MPSCNNConvolutionDescriptor that convt's descriptor mirrors.
DESCRIPTOR_FIELDS = (
    "kernel_width",
    "kernel_height",
    "input_feature_channels",
    "output_feature_channels",
    "stride_in_pixels_x",
    "stride_in_pixels_y",
    "dilation_rate_x",
    "dilation_rate_y",
    "groups",
)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """Normwise relative error max|got-ref| / max(max|ref|, TINY); NaN anywhere -> inf."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"shape {got.shape} != reference {ref.shape}"
    if ref.size == 0:
        return 0.0
    if not np.isfinite(got).all():
        return float("inf")
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), TINY))


def assert_close(got: np.ndarray, ref: np.ndarray, tol: float, what: str = "") -> None:
    """Assert rel_err(got, ref) <= tol with a readable message."""
    err = rel_err(got, ref)
    assert err <= tol, f"{what}: rel err {err:.3g} > {tol:g}"


def poison(arr: np.ndarray) -> np.ndarray:
    """Fill ``arr`` with NaN in place (so untouched elements can be recognised) and return it."""
    arr[...] = np.nan
    return arr


def assert_written(
    got: np.ndarray, expected: np.ndarray, mask: np.ndarray, tol: float, what: str = ""
) -> None:
    """Inside ``mask``: close to ``expected``; outside: still NaN (the poison was not touched)."""
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == mask.shape, f"{what}: shape {got.shape} != {mask.shape}"
    untouched = got[~mask]
    assert np.isnan(untouched).all(), (
        f"{what}: {int(np.sum(~np.isnan(untouched)))} element(s) outside the written region changed"
    )
    assert_close(got[mask], np.asarray(expected, np.float64)[mask], tol, what)


def to_nchw(arr: np.ndarray, layout: str) -> np.ndarray:
    """View an (N,C,H,W) or (N,H,W,C) array as NCHW."""
    return arr if layout in ("NCHW", "NCL") else np.moveaxis(arr, -1, 1)


def from_nchw(arr: np.ndarray, layout: str) -> np.ndarray:
    """View an NCHW (or NCL) array in ``layout``."""
    return arr if layout in ("NCHW", "NCL") else np.moveaxis(arr, 1, -1)


def make_storage(
    nchw: np.ndarray,
    kind: str,
    dtype: np.dtype,
) -> tuple[np.ndarray, str, np.ndarray, np.ndarray]:
    """Put NCHW data into one of several storage kinds.

    kind: "NCHW", "NHWC" (contiguous), "strided" (a sliced view of a larger NCHW array, with
    gaps in H, W and C), "nhwc-view" (a transposed, non-contiguous view of an NCHW array) or
    "nhwc-gaps" (a sliced view of a larger NHWC array: channels contiguous, gaps between pixels
    and rows; not in STORAGE_KINDS, which the random sweeps pick from).
    Returns (array to wrap, layout string, base array, boolean mask of the view inside base).
    """
    nchw = np.asarray(nchw)
    n, c, h, w = nchw.shape
    if kind == "NCHW":
        arr = np.ascontiguousarray(nchw, dtype=dtype)
        return arr, "NCHW", arr, np.ones(arr.shape, bool)
    if kind == "NHWC":
        arr = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1), dtype=dtype)
        return arr, "NHWC", arr, np.ones(arr.shape, bool)
    if kind == "strided":
        base = np.full((n, 2 * c + 1, 2 * h, w + 3), np.nan, dtype=dtype)
        sel = (slice(None), slice(1, 2 * c + 1, 2), slice(None, None, 2), slice(2, w + 2))
        view = base[sel]
        view[...] = nchw
        inside = np.zeros(base.shape, bool)
        inside[sel] = True
        return view, "NCHW", base, inside
    if kind == "nhwc-gaps":
        base = np.full((n, h, w + 2, c + 3), np.nan, dtype=dtype)
        sel = (slice(None), slice(None), slice(1, w + 1), slice(2, c + 2))
        view = base[sel]
        view[...] = nchw.transpose(0, 2, 3, 1)
        inside = np.zeros(base.shape, bool)
        inside[sel] = True
        return view, "NHWC", base, inside
    if kind == "nhwc-view":
        base = np.ascontiguousarray(nchw, dtype=dtype)
        return base.transpose(0, 2, 3, 1), "NHWC", base, np.ones(base.shape, bool)
    raise ValueError(kind)


STORAGE_KINDS = ("NCHW", "NHWC", "strided", "nhwc-view")


def encode_data_gradient(
    device: Any, grad: Any, dy: np.ndarray, x: np.ndarray, state: Any
) -> np.ndarray:
    """Runs ``grad`` (a gradient kernel) on dY and X with the forward's ``state`` into a
    NaN-poisoned image shaped like ``x``; returns it (dX). The state then holds dW and dB."""
    import convt

    dx = poison(np.empty_like(x))
    run_encoded(
        device,
        lambda cb: grad.encode(
            cb, convt.Image(dy), convt.Image(x), state, destination_gradient=convt.Image(dx)
        ),
    )
    return dx


def run_encoded(device: Any, encode: Callable[[Any], Any]) -> Any:
    """Create a command buffer, call ``encode(cb)``, commit, wait; return encode's result."""
    import convt

    cb = convt.CommandBuffer(device)
    result = encode(cb)
    cb.commit()
    cb.wait_until_completed()
    assert cb.status == "completed", f"command buffer status {cb.status!r}, error {cb.error!r}"
    assert cb.error is None
    return result


def neuron_descriptor(neuron: Any | None) -> Any | None:
    """convt.NeuronDescriptor for a reference.Neuron (None -> None)."""
    if neuron is None:
        return None
    import convt

    return convt.NeuronDescriptor(
        getattr(convt.NeuronType, neuron.type), a=neuron.a, b=neuron.b, c=neuron.c, data=neuron.data
    )


def build_transpose(
    device: Any,
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    in_channels: int | None = None,
    stride: R.IntOrPair = 1,
    dilation: R.IntOrPair = 1,
    groups: int = 1,
    neuron: R.Neuron | None = None,
    bn: R.BatchNorm | None = None,
    kernel_weights_dtype: str = "float16",
    quant: tuple[str, np.ndarray] | None = None,
) -> Any:
    """A convt.ConvolutionTranspose for OHWI ``weights``; pairs are (y, x) like the reference."""
    import convt

    out_ch, k_h, k_w, ig = weights.shape
    desc = convt.ConvolutionDescriptor(k_w, k_h, in_channels or ig * groups, out_ch)
    (sy, sx), (dy, dx) = R.pair(stride), R.pair(dilation)
    desc.stride_in_pixels_x, desc.stride_in_pixels_y = sx, sy
    desc.dilation_rate_x, desc.dilation_rate_y = dx, dy
    desc.groups = groups
    if neuron is not None:
        desc.fused_neuron_descriptor = neuron_descriptor(neuron)
    if bn is not None:
        desc.set_batch_normalization_parameters_for_inference(
            bn.mean, bn.variance, bn.gamma, bn.beta, bn.epsilon
        )
    extra: dict = {}
    if quant is not None:
        kind, table = quant
        if kind == "linear":
            extra = {"quantization": convt.QuantizationType.linear, "ranges": table}
        else:
            extra = {"quantization": convt.QuantizationType.lookup_table, "lookup_table": table}
    source = convt.ArrayDataSource(
        desc,
        weights,
        bias,
        kernel_weights_data_type=getattr(convt.DataType, kernel_weights_dtype),
        **extra,
    )
    return convt.ConvolutionTranspose(device, source)


# ---- Worked examples of spec §1.4 (n = 4, s = 2, source [1, 2, 3, 4]) -------------------------

SRC_1D = np.array([1.0, 2.0, 3.0, 4.0])
_A, _B, _C = 10.0, 100.0, 1000.0
W3 = np.array([_A, _B, _C])
W4 = np.array([1.0, 10.0, 100.0, 1000.0])

# (name, MPS weights, policy bits, dst, T, offset, kernelOffset, expected values)
TABLE_1D = [
    (
        "k3-valid",
        W3,
        R.SIZE_VALID_ONLY,
        5,
        1,
        0,
        1,
        [_A + 2 * _C, 2 * _B, 2 * _A + 3 * _C, 3 * _B, 3 * _A + 4 * _C],
    ),
    (
        "k3-same",
        W3,
        R.SIZE_SAME,
        7,
        0,
        0,
        0,
        [_B, _A + 2 * _C, 2 * _B, 2 * _A + 3 * _C, 3 * _B, 3 * _A + 4 * _C, 4 * _B],
    ),
    (
        "k3-full",
        W3,
        R.SIZE_FULL,
        9,
        -1,
        -1,
        1,
        [_C, _B, _A + 2 * _C, 2 * _B, 2 * _A + 3 * _C, 3 * _B, 3 * _A + 4 * _C, 4 * _B, 4 * _A],
    ),
    # Even kernel k = 4, weights [a, b, c, d] = [1, 10, 100, 1000]; values worked by hand.
    ("k4-valid", W4, R.SIZE_VALID_ONLY, 4, 2, 1, 0, [201, 3020, 302, 4030]),
    ("k4-same", W4, R.SIZE_SAME, 7, 0, 0, 0, [100, 2010, 201, 3020, 302, 4030, 403]),
    (
        "k4-full",
        W4,
        R.SIZE_FULL,
        10,
        -1,
        -1,
        1,
        [1000, 100, 2010, 201, 3020, 302, 4030, 403, 40, 4],
    ),
    (
        "k4-same-remainder-br",
        W4,
        R.SIZE_SAME | 12,
        7,
        1,
        0,
        1,
        [2010, 201, 3020, 302, 4030, 403, 40],
    ),
]
SAME_NUMERIC = [100, 2010, 200, 3020, 300, 4030, 400]
# §1.5 autoencoder, k = 3, s = 2, forward source 8 (transpose source = the 4-wide example).
AUTOENCODER_DEFAULT = [100, 2010, 200, 3020, 300, 4030, 400, 40]  # dst 8, T = 0
AUTOENCODER_TF_SAME = [1000, 100, 2010, 200, 3020, 300, 4030, 400]  # dst 8, T = -1


# ---- Random PyTorch-convention geometry ------------------------------------------------------


def random_torch_geometry(
    rng: np.random.Generator,
    one_d: bool = False,
    groups: tuple[int, int, int] | None = None,
    max_k: int = 7,
    max_n: int = 7,
) -> dict:
    """A valid random ConvTranspose geometry. Per-axis values are [y, x] lists (y is the unit
    axis when ``one_d``); ``groups`` = (G, Cin/G, Cout/G), random when None."""
    if groups is None:
        groups = (int(rng.choice([1, 1, 2, 3])), int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    n_groups, ig, og = groups
    g: dict = {
        "groups": n_groups,
        "cin": n_groups * ig,
        "cout": n_groups * og,
        "n": int(rng.integers(1, 3)),
    }
    for key, unit in (("k", 1), ("s", 1), ("d", 1), ("p", 0), ("op", 0), ("hw", 1)):
        g[key] = [unit, unit]
    for ax in (1,) if one_d else (0, 1):
        k, s, d = int(rng.integers(1, max_k + 1)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
        keff = R.effective_kernel(k, d)
        values = (
            k,
            s,
            d,
            int(rng.integers(0, keff)),
            int(rng.integers(0, max(s, d))),
            int(rng.integers(1, max_n + 1)),
        )
        for key, v in zip(("k", "s", "d", "p", "op", "hw"), values):
            g[key][ax] = v
    fix_padding(g)
    return g


def fix_padding(g: dict) -> None:
    """Lower the padding (in place) until every output size is >= 1."""
    for ax in range(2):
        while (g["hw"][ax] - 1) * g["s"][ax] - 2 * g["p"][ax] + R.effective_kernel(
            g["k"][ax], g["d"][ax]
        ) + g["op"][ax] < 1:
            g["p"][ax] -= 1


def torch_kwargs(g: dict, one_d: bool = False) -> dict:
    """stride/padding/output_padding/groups/dilation as PyTorch takes them (ints when 1-D)."""
    pick = (lambda v: v[1]) if one_d else tuple
    return {
        "stride": pick(g["s"]),
        "padding": pick(g["p"]),
        "output_padding": pick(g["op"]),
        "groups": g["groups"],
        "dilation": pick(g["d"]),
    }


# ---- Training path (gradient kernel, states) -------------------------------------------------


def make_data_source(
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    in_channels: int | None = None,
    stride: R.IntOrPair = 1,
    dilation: R.IntOrPair = 1,
    groups: int = 1,
    neuron: R.Neuron | None = None,
    bn: R.BatchNorm | None = None,
    kernel_weights_dtype: str = "float16",
    quant: tuple[str, np.ndarray] | None = None,
    label: str = "",
) -> Any:
    """A convt.ArrayDataSource for OHWI ``weights`` (same options as :func:`build_transpose`)."""
    import convt

    out_ch, k_h, k_w, ig = weights.shape
    desc = convt.ConvolutionDescriptor(k_w, k_h, in_channels or ig * groups, out_ch)
    (sy, sx), (dy, dx) = R.pair(stride), R.pair(dilation)
    desc.stride_in_pixels_x, desc.stride_in_pixels_y = sx, sy
    desc.dilation_rate_x, desc.dilation_rate_y = dx, dy
    desc.groups = groups
    if neuron is not None:
        desc.fused_neuron_descriptor = neuron_descriptor(neuron)
    if bn is not None:
        desc.set_batch_normalization_parameters_for_inference(
            bn.mean, bn.variance, bn.gamma, bn.beta, bn.epsilon
        )
    extra: dict = {}
    if quant is not None:
        kind, table = quant
        if kind == "linear":
            extra = {"quantization": convt.QuantizationType.linear, "ranges": table}
        else:
            extra = {"quantization": convt.QuantizationType.lookup_table, "lookup_table": table}
    return convt.ArrayDataSource(
        desc,
        weights,
        bias,
        kernel_weights_data_type=getattr(convt.DataType, kernel_weights_dtype),
        label=label,
        **extra,
    )


def build_transpose_pair(
    device: Any, weights: np.ndarray, bias: np.ndarray | None = None, **options: Any
) -> tuple[Any, Any]:
    """(ConvolutionTranspose, ConvolutionTransposeGradient) built from one data source."""
    import convt

    source = make_data_source(weights, bias, **options)
    return convt.ConvolutionTranspose(device, source), convt.ConvolutionTransposeGradient(
        device, source
    )


def kernel_T(kernel: Any) -> tuple[int, int]:
    """The kernel's current total offset (Ty, Tx) = offset*stride + kernelOffset."""
    return (
        kernel.offset[1] * kernel.stride_in_pixels_y + kernel.kernel_offset_y,
        kernel.offset[0] * kernel.stride_in_pixels_x + kernel.kernel_offset_x,
    )


def set_total_offset(kernel: Any, T: tuple[int, int], offset: tuple[int, int] = (0, 0)) -> None:
    """Place the manual-path window: offset (y, x) in source pixels, the rest in kernel offsets
    (offset.z is kept)."""
    z = kernel.offset[2]
    kernel.offset = (offset[1], offset[0], z)
    kernel.kernel_offset_y = T[0] - offset[0] * kernel.stride_in_pixels_y
    kernel.kernel_offset_x = T[1] - offset[1] * kernel.stride_in_pixels_x


GRADIENT_OPTIONS = ("data", "weights_and_bias", "all")
OUTPUT_MASKS = [(a, b, c) for a in (True, False) for b in (True, False) for c in (True, False)]


def mps_case_kwargs(c: dict, groups: int, neuron: Any, dtype: Any) -> dict:
    """The build_transpose keyword arguments a random MPS case (test_sweep's and
    test_properties' generators) shares between its forward kernel and the reference."""
    return dict(
        stride=tuple(c["s"]),
        dilation=tuple(c["d"]),
        groups=groups,
        neuron=neuron,
        accumulator=c["accumulator"],
        dst_dtype=dtype,
        src_c_offset=c["sfo"],
    )


def case_gradient_state(c: dict) -> Any | None:
    """The ConvolutionGradientState an auto-sized MPS case sizes its destination from, or None
    when the case has none."""
    import convt

    if c["state"] is None:
        return None
    nf = c["state"]["n_fwd"]
    return convt.ConvolutionGradientState.for_forward(
        nf[1], nf[0], c["k"][1], c["k"][0],
        stride_x=c["s"][1], stride_y=c["s"][0],
        dilation_x=c["d"][1], dilation_y=c["d"][0],
        padding_method=c["state"]["method"],
    )  # fmt: skip


def check_windowed_fp16_dx(
    device: Any, rng: np.random.Generator, w: np.ndarray, groups: int, stride: int
) -> None:
    """MPS gradient API: dX of the OHWI float32 weights ``w`` (``groups`` groups) written into a
    NaN-poisoned fp16 image from fp16 dY, with a window (T = (5, 3)) that leaves some source
    pixels without any dY (they must be written as 0) and a clip rectangle (dY read from an
    offset region only); 2 images of 10 x 12 pixels, dY 17 x 19."""
    import convt

    cin, cout = w.shape[3] * groups, w.shape[0]
    fwd, grad = build_transpose_pair(
        device, w, stride=stride, groups=groups, kernel_weights_dtype="float32"
    )
    set_total_offset(fwd, (5, 3))
    clip = (2, 1, 0, 15, 14, 2)
    fwd.clip_rect = convt.Region(*clip)
    x = rng.uniform(-1, 1, (2, cin, 10, 12)).astype(np.float16)
    dst = convt.Image(np.zeros((2, cout, 17, 19), np.float16))
    state = fwd.result_state(convt.Image(x), destination_image=dst)
    dy = rng.uniform(-1, 1, (2, cout, 17, 19)).astype(np.float16)
    dx = encode_data_gradient(device, grad, dy, x, state)
    dx_ref, _, _ = R.conv_transpose_mps_backward(
        dy, x, w, stride, 1, groups, (5, 3), (10, 12), clip=clip
    )
    assert_written(dx, dx_ref, np.ones(x.shape, bool), FP16_TOL, "dX")
    assert np.any(dx == 0.0), "expected source pixels without any dY (written as 0)"


def guarded(a: np.ndarray, side: str = "after") -> np.ndarray:
    """A C-contiguous copy of ``a`` flush against an inaccessible page (Linux and macOS): with
    ``side="after"`` its last byte is the last one before the page, with ``"before"`` its first
    byte the first one after it. A read or write outside the array's bytes on that side faults
    (SIGSEGV), where a sanitizer-free run would otherwise read a neighbour's bytes unnoticed."""
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    data = -(-max(a.nbytes, 1) // page) * page
    buf = mmap.mmap(-1, data + page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    guard = base + (data if side == "after" else 0)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if libc.mprotect(guard, page, 0) != 0:  # PROT_NONE
        raise OSError(ctypes.get_errno(), "mprotect failed")
    offset = data - a.nbytes if side == "after" else page
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=offset).reshape(a.shape)
    out[...] = a
    return out
