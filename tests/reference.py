"""Independent float64 NumPy model of MPSCNNConvolutionTranspose.

Written straight from shared/spec/mps-semantics.md (§1.2 gather formula, §1.4/§1.5 sizing,
§1.8 PyTorch mapping, §2 weights, §3 batch-norm folding, §6 accumulator) and from the neuron
formulas of the Python API contract. It never looks at convt's kernels; it is the oracle the
tests trust.

Conventions: every per-axis pair is ordered (y, x), like array axes; images are NCHW; MPS weights
are OHWI ``[O][kH][kW][I/G]``; PyTorch weights are ``[Cin][Cout/G][kH][kW]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

Pair = tuple[int, int]
IntOrPair = Union[int, Sequence[int]]
Clip = tuple[int, int, int, int, int, int]  # (x, y, z, width, height, depth)

# MPS padding-method bits (§1.4).
ALIGN_CENTERED, ALIGN_TOP_LEFT, ALIGN_BOTTOM_RIGHT = 0, 1, 2
REMAINDER_RIGHT_BIT, REMAINDER_BOTTOM_BIT = 0x4, 0x8
SIZE_VALID_ONLY, SIZE_SAME, SIZE_FULL = 0x00, 0x10, 0x20
CUSTOM = 0x4000
DEFAULT_PADDING = SIZE_SAME | ALIGN_CENTERED  # remainder to top/left

NO_CLIP_EXTENT = 1 << 62


def pair(v: IntOrPair) -> Pair:
    """An int or a 2-sequence as a (y, x) pair."""
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def effective_kernel(k: int, d: int) -> int:
    """keff = d*(k-1)+1, the dilated window extent."""
    return d * (k - 1) + 1


# ---------------------------------------------------------------------------------------------
# Expanded (zero-inserted) image, §1.1/§1.2
# ---------------------------------------------------------------------------------------------


def expanded_index(pos: np.ndarray, stride: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Map expanded-image coordinates to source indices.

    Returns ``(index, real)``: ``real`` is True where ``E[pos]`` is a real source sample
    (pos >= 0, pos % s == 0, pos / s < n); ``index`` is the source index there and 0 elsewhere.
    """
    pos = np.asarray(pos, dtype=np.int64)
    real = (pos >= 0) & (pos % stride == 0) & (pos // stride < n)
    return np.where(real, pos // stride, 0), real


# ---------------------------------------------------------------------------------------------
# Sizing and offsets, §1.3-§1.5
# ---------------------------------------------------------------------------------------------


def padding_style(method: int) -> int:
    """-1 ValidOnly, 0 Same, +1 Full."""
    return ((method >> 4) & 3) - 1


def _aligned_offset(method: int, axis: str, corr: int, extra: int) -> int:
    """The alignment rule shared by forward and transpose sizing (§1.4)."""
    align = method & 3
    if align == ALIGN_CENTERED:
        bit = REMAINDER_RIGHT_BIT if axis == "x" else REMAINDER_BOTTOM_BIT
        r = 0 if method & bit else 1
        return corr - ((extra + r) >> 1)
    if align == ALIGN_TOP_LEFT:
        return corr
    if align == ALIGN_BOTTOM_RIGHT:
        return corr - extra
    return 0


def dest_size_reverse(n: int, s: int, keff: int, style: int) -> int:
    """Transpose destination size: max(0, (n-1)*s + 1 + style*(keff-1))."""
    return max(0, (n - 1) * s + 1 + style * (keff - 1))


def transpose_offset(method: int, n: int, s: int, keff: int, axis: str = "x") -> Pair:
    """Padding-policy sizing of a transpose along one axis: returns (dst, T)."""
    dst = dest_size_reverse(n, s, keff, padding_style(method))
    nexp = (n - 1) * s + 1
    extra = keff + (dst - 1) - nexp
    return dst, _aligned_offset(method, axis, keff >> 1, extra)


def forward_size_and_offset(method: int, n: int, s: int, keff: int, axis: str = "x") -> Pair:
    """Padding-policy sizing of the paired forward convolution: returns (dst, offset)."""
    dst = -(-max(0, n + padding_style(method) * (keff - 1)) // s)  # ceil division
    extra = keff + (dst - 1) * s - n
    return dst, _aligned_offset(method, axis, keff >> 1, extra)


def split(T: int, s: int) -> Pair:
    """Split a total offset into (offset, kernelOffset) = (floor(T/s), T mod s)."""
    return T // s, T % s


def autoencoder_override(n_forward_source: int, k: int, forward_offset: int) -> Pair:
    """Gradient-state override (§1.5): (dst, T) = (forward source size, (k even) - o_fwd)."""
    return n_forward_source, (1 if k % 2 == 0 else 0) - forward_offset


# ---------------------------------------------------------------------------------------------
# Neurons (API contract formulas)
# ---------------------------------------------------------------------------------------------

NEURON_TYPES = (
    "none",
    "relu",
    "linear",
    "sigmoid",
    "hard_sigmoid",
    "tanh",
    "abs",
    "softplus",
    "softsign",
    "elu",
    "prelu",
    "relun",
    "power",
    "exponential",
    "logarithm",
    "gelu",
)

NEURON_DEFAULTS = {
    "relu": {"a": 0.0},
    "linear": {"a": 1.0, "b": 0.0},
    "hard_sigmoid": {"a": 0.2, "b": 0.5},
    "tanh": {"a": 1.0, "b": 1.0},
    "softplus": {"a": 1.0, "b": 1.0},
    "elu": {"a": 1.0},
    "relun": {"a": 0.0, "b": 6.0},
    "power": {"a": 1.0, "b": 0.0, "c": 1.0},
    "exponential": {"a": 1.0, "b": 0.0, "c": -1.0},
    "logarithm": {"a": 1.0, "b": 0.0, "c": -1.0},
}

_erf = np.vectorize(math.erf, otypes=[np.float64])


@dataclass
class Neuron:
    """A fused activation: type name plus optional parameters (None -> contract default)."""

    type: str = "none"
    a: float | None = None
    b: float | None = None
    c: float | None = None
    data: np.ndarray | None = None


def apply_neuron(
    v: np.ndarray,
    type: str = "none",
    a: float | None = None,
    b: float | None = None,
    c: float | None = None,
    data: np.ndarray | None = None,
    channel_axis: int = 1,
) -> np.ndarray:
    """Apply one neuron in float64; ``data`` (PReLU slopes) is indexed along ``channel_axis``."""
    if type not in NEURON_TYPES:
        raise ValueError(f"unknown neuron type {type!r}")
    p = dict(NEURON_DEFAULTS.get(type, {}))
    for name, val in (("a", a), ("b", b), ("c", c)):
        if val is not None:
            p[name] = float(val)
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if type == "none":
            return v.copy()
        if type == "relu":
            return np.where(v >= 0, v, p["a"] * v)
        if type == "linear":
            return p["a"] * v + p["b"]
        if type == "sigmoid":
            return 1.0 / (1.0 + np.exp(-v))
        if type == "hard_sigmoid":
            return np.clip(p["a"] * v + p["b"], 0.0, 1.0)
        if type == "tanh":
            return p["a"] * np.tanh(p["b"] * v)
        if type == "abs":
            return np.abs(v)
        if type == "softplus":
            return p["a"] * np.log1p(np.exp(p["b"] * v))
        if type == "softsign":
            return v / (1.0 + np.abs(v))
        if type == "elu":
            return np.where(v >= 0, v, p["a"] * np.expm1(v))
        if type == "prelu":
            shape = [1] * v.ndim
            shape[channel_axis] = -1
            slopes = np.asarray(data, dtype=np.float64).reshape(shape)
            return np.where(v >= 0, v, slopes * v)
        if type == "relun":
            return np.minimum(np.where(v >= 0, v, p["a"] * v), p["b"])
        if type == "power":
            return (p["a"] * v + p["b"]) ** p["c"]
        if type == "exponential":
            base = math.e if p["c"] == -1.0 else p["c"]
            return base ** (p["a"] * v + p["b"])
        if type == "logarithm":
            arg = p["a"] * v + p["b"]
            return np.log(arg) if p["c"] == -1.0 else np.log(arg) / math.log(p["c"])
        # gelu
        return 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)))


# ---------------------------------------------------------------------------------------------
# Weights: dequantisation, batch-norm folding, precision (§2, §3)
# ---------------------------------------------------------------------------------------------


@dataclass
class BatchNorm:
    """Inference batch-norm parameters, float32[O] each."""

    mean: np.ndarray
    variance: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    epsilon: float


def dequantize(
    u: np.ndarray,
    kind: str,
    ranges: np.ndarray | None = None,
    lookup_table: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 OHWI weights to float32: linear (u/255)*(max-min)+min per output channel, or lut[u]."""
    u = np.asarray(u)
    if kind == "linear":
        r = np.asarray(ranges, dtype=np.float32).reshape(-1, 2)
        lo = r[:, 0].reshape(-1, 1, 1, 1)
        hi = r[:, 1].reshape(-1, 1, 1, 1)
        return (u.astype(np.float32) / np.float32(255.0)) * (hi - lo) + lo
    if kind == "lookup_table":
        return np.asarray(lookup_table, dtype=np.float32)[u]
    raise ValueError(f"unknown quantization {kind!r}")


def prepare_weights(
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    bn: BatchNorm | None = None,
    kernel_weights_dtype: str = "float16",
    quant: tuple[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """W', bias' as the kernel uses them, returned as float64.

    ``quant`` is ``("linear", ranges[O,2])`` or ``("lookup_table", lut[256])`` for uint8 weights.
    Order: dequantise (float32) -> BN fold in float32 -> round W' to fp16 unless
    ``kernel_weights_dtype == "float32"``. Bias stays float32 (no bias + BN -> bias' = J).
    """
    if quant is not None:
        kind, table = quant
        w = dequantize(
            weights,
            kind,
            ranges=table if kind == "linear" else None,
            lookup_table=table if kind == "lookup_table" else None,
        )
    else:
        w = np.asarray(weights)
    b = None if bias is None else np.asarray(bias, dtype=np.float32)
    if bn is not None:
        w = w.astype(np.float32)
        f32 = np.float32
        scale = (
            np.asarray(bn.gamma, f32) / np.sqrt(np.asarray(bn.variance, f32) + f32(bn.epsilon))
        ).astype(f32)
        shift = (np.asarray(bn.beta, f32) - scale * np.asarray(bn.mean, f32)).astype(f32)
        w = w * scale.reshape(-1, 1, 1, 1)
        b = shift if b is None else (b * scale + shift).astype(f32)
    if kernel_weights_dtype == "float16":
        w = np.asarray(w).astype(np.float16)
    elif kernel_weights_dtype == "float32":
        w = np.asarray(w).astype(np.float32)
    else:
        raise ValueError(
            f"kernel_weights_dtype must be float16 or float32, got {kernel_weights_dtype!r}"
        )
    return w.astype(np.float64), None if b is None else b.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# The transpose itself, §1.2
# ---------------------------------------------------------------------------------------------


def _clip_tuple(clip: Clip | None) -> Clip:
    if clip is None:
        return 0, 0, 0, NO_CLIP_EXTENT, NO_CLIP_EXTENT, NO_CLIP_EXTENT
    return tuple(int(v) for v in clip)  # type: ignore[return-value]


def processed_images(
    clip: Clip | None, dst_images: int, src_images: int, offset_z: int = 0
) -> range:
    """Destination images written: clip.z .. for min(depth, dstN - clip.z, srcN - offset.z)."""
    _, _, z, _, _, depth = _clip_tuple(clip)
    count = max(0, min(depth, dst_images - z, src_images - offset_z))
    return range(z, z + count)


def written_mask(
    dst_shape: Sequence[int],
    out_channels: int,
    clip: Clip | None = None,
    src_images: int = 1,
    offset_z: int = 0,
    dst_c_offset: int = 0,
) -> np.ndarray:
    """Boolean NCHW mask of the destination elements one encode writes (clip ∩ bounds)."""
    n_dst, c_dst, h_dst, w_dst = dst_shape
    cx, cy, _, cw, ch, _ = _clip_tuple(clip)
    mask = np.zeros(dst_shape, dtype=bool)
    images = list(processed_images(clip, n_dst, src_images, offset_z))
    y0, y1 = max(cy, 0), min(cy + ch, h_dst)
    x0, x1 = max(cx, 0), min(cx + cw, w_dst)
    if images and y1 > y0 and x1 > x0:
        channels = slice(dst_c_offset, dst_c_offset + out_channels)
        mask[images[0] : images[-1] + 1, channels, y0:y1, x0:x1] = True
    return mask


def conv_transpose_mps(
    src: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    stride: IntOrPair = 1,
    dilation: IntOrPair = 1,
    groups: int = 1,
    T: IntOrPair = 0,
    dst_hw: IntOrPair | None = None,
    dst: np.ndarray | None = None,
    clip: Clip | None = None,
    offset_z: int = 0,
    src_c_offset: int = 0,
    dst_c_offset: int = 0,
    neuron: Neuron | None = None,
    accumulator: str = "float",
    dst_dtype: np.dtype | None = None,
) -> np.ndarray:
    """§1.2 gather form, literally, in float64.

    ``src`` NCHW (all channels; the slice starts at ``src_c_offset``); ``weights`` OHWI W' and
    ``bias`` bias' as prepared by :func:`prepare_weights`. ``T`` = total offset (Ty, Tx).
    Writes into a float64 copy of ``dst`` (default: zeros of shape (N, dfo+O, *dst_hw)) and returns
    it; elements outside the written region keep their value (NaN poison survives).
    ``accumulator="half"``: acc starts at fp16(bias'); for ky, kx, icl ascending over real taps
    only, acc = fp16(x*w + acc); the neuron is applied in float64 afterwards. ``dst_dtype``
    rounds the written values to the destination's storage type.
    """
    src = np.asarray(src, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    n_src, _, h_src, w_src = src.shape
    out_ch, k_h, k_w, ig = w.shape
    sy, sx = pair(stride)
    dy, dx = pair(dilation)
    ty, tx = pair(T)
    g_count = groups
    og = out_ch // g_count
    if dst is None:
        hd, wd = pair(dst_hw)
        out = np.zeros((n_src, dst_c_offset + out_ch, hd, wd))
    else:
        out = np.array(dst, dtype=np.float64, copy=True)
    mask = written_mask(out.shape, out_ch, clip, n_src, offset_z, dst_c_offset)
    images = list(processed_images(clip, out.shape[0], n_src, offset_z))
    if not mask.any():
        return out
    cx, cy, cz, _, _, _ = _clip_tuple(clip)
    rows = np.nonzero(mask.any(axis=(0, 1, 3)))[0]
    cols = np.nonzero(mask.any(axis=(0, 1, 2)))[0]
    keff_y, keff_x = effective_kernel(k_h, dy), effective_kernel(k_w, dx)
    base_y = ty + (rows - cy) - (keff_y >> 1)
    base_x = tx + (cols - cx) - (keff_x >> 1)

    src_idx = [offset_z + (nd - cz) for nd in images]
    x = src[src_idx, src_c_offset : src_c_offset + g_count * ig]
    x = x.reshape(len(images), g_count, ig, h_src, w_src)
    wg = w.reshape(g_count, og, k_h, k_w, ig)
    bias_g = (
        np.zeros((g_count, og))
        if bias is None
        else np.asarray(bias, np.float64).reshape(g_count, og)
    )
    acc_shape = (len(images), g_count, og, len(rows), len(cols))

    if accumulator == "float":
        acc = np.broadcast_to(bias_g[None, :, :, None, None], acc_shape).copy()
    elif accumulator == "half":
        acc = np.broadcast_to(_fp16(bias_g)[None, :, :, None, None], acc_shape).copy()
    else:
        raise ValueError(f"accumulator must be 'float' or 'half', got {accumulator!r}")

    for ky in range(k_h):
        iy, ry = expanded_index(base_y + dy * ky, sy, h_src)
        for kx in range(k_w):
            ix, rx = expanded_index(base_x + dx * kx, sx, w_src)
            real = ry[:, None] & rx[None, :]
            if not real.any():
                continue
            # np.where, not "* real": a NaN/Inf at the substituted index 0 must not leak into
            # positions that read an inserted zero (NaN * 0 is NaN).
            taps = np.where(real, x[:, :, :, iy[:, None], ix[None, :]], 0.0)  # (n,G,Ig,rows,cols)
            wk = wg[:, :, ky, kx, :]  # (G, Og, Ig)
            if accumulator == "float":
                acc += np.einsum("ngihw,goi->ngohw", taps, wk)
                continue
            for icl in range(ig):
                prod = taps[:, :, None, icl] * wk[None, :, :, icl, None, None]
                acc = np.where(real, _fp16(prod + acc), acc)

    result = acc.reshape(len(images), out_ch, len(rows), len(cols))
    if neuron is not None:
        result = apply_neuron(result, neuron.type, neuron.a, neuron.b, neuron.c, neuron.data, 1)
    if dst_dtype is not None:
        result = result.astype(dst_dtype).astype(np.float64)
    out[
        images[0] : images[-1] + 1,
        dst_c_offset : dst_c_offset + out_ch,
        rows[0] : rows[-1] + 1,
        cols[0] : cols[-1] + 1,
    ] = result
    return out


def conv_transpose_mps_scatter(
    src: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    stride: IntOrPair = 1,
    dilation: IntOrPair = 1,
    groups: int = 1,
    T: IntOrPair = 0,
    dst_hw: IntOrPair = 1,
) -> np.ndarray:
    """§1.2 "scatter" form (no clip, offsets or neuron): every source pixel (i, j) adds
    W'·src to (i*sy - Ty + (keffY>>1) - dY*ky, j*sx - Tx + (keffX>>1) - dX*kx)."""
    src = np.asarray(src, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    n, _, h, wd_src = src.shape
    out_ch, k_h, k_w, ig = w.shape
    sy, sx = pair(stride)
    dy, dx = pair(dilation)
    ty, tx = pair(T)
    hd, wd = pair(dst_hw)
    og = out_ch // groups
    out = np.zeros((n, groups, og, hd, wd))
    if bias is not None:
        out += np.asarray(bias, np.float64).reshape(1, groups, og, 1, 1)
    xg = src[:, : groups * ig].reshape(n, groups, ig, h, wd_src)
    wg = w.reshape(groups, og, k_h, k_w, ig)
    cy, cx = effective_kernel(k_h, dy) >> 1, effective_kernel(k_w, dx) >> 1
    for ky in range(k_h):
        ys = np.arange(h) * sy - ty + cy - dy * ky
        vy = (ys >= 0) & (ys < hd)
        for kx in range(k_w):
            xs = np.arange(wd_src) * sx - tx + cx - dx * kx
            vx = (xs >= 0) & (xs < wd)
            if not (vy.any() and vx.any()):
                continue
            part = np.einsum("ngihw,goi->ngohw", xg[:, :, :, vy][..., vx], wg[:, :, ky, kx, :])
            out[:, :, :, ys[vy][:, None], xs[vx][None, :]] += part
    return out.reshape(n, out_ch, hd, wd)


def _fp16(v: np.ndarray) -> np.ndarray:
    """Round to fp16 (round to nearest even) and back to float64."""
    return np.asarray(v).astype(np.float16).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# PyTorch conventions, §1.8
# ---------------------------------------------------------------------------------------------


def torch_axis_to_mps(n: int, k: int, s: int, p: int, op: int, d: int) -> Pair:
    """One axis of PyTorch ConvTranspose as MPS: (dst, T) with
    dst = (n-1)s - 2p + keff + op and T = (keff>>1) - keff + 1 + p."""
    keff = effective_kernel(k, d)
    return (n - 1) * s - 2 * p + keff + op, (keff >> 1) - keff + 1 + p


def torch_weight_to_mps(weight: np.ndarray, groups: int) -> np.ndarray:
    """[Cin][Cout/G][kH][kW] -> OHWI:
    W[oc][ky][kx][icl] = w[g*Ig+icl][oc-g*Og][kH-1-ky][kW-1-kx]."""
    w = np.asarray(weight)
    cin, og, k_h, k_w = w.shape
    ig = cin // groups
    w = w[:, :, ::-1, ::-1].reshape(groups, ig, og, k_h, k_w)
    return np.ascontiguousarray(w.transpose(0, 2, 3, 4, 1).reshape(groups * og, k_h, k_w, ig))


def torch_to_mps(
    weight: np.ndarray,
    in_hw: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> tuple[np.ndarray, Pair, Pair]:
    """PyTorch ConvTranspose2d parameters -> (OHWI weights, T (y, x), dst (h, w))."""
    _, _, k_h, k_w = np.shape(weight)
    geo = [
        torch_axis_to_mps(n, k, s, p, op, d)
        for n, k, s, p, op, d in zip(
            pair(in_hw),
            (k_h, k_w),
            pair(stride),
            pair(padding),
            pair(output_padding),
            pair(dilation),
        )
    ]
    return torch_weight_to_mps(weight, groups), (geo[0][1], geo[1][1]), (geo[0][0], geo[1][0])


def conv_transpose_torch_ref(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
) -> np.ndarray:
    """PyTorch conv_transpose2d in float64 by scattering: input pixel (i, j) adds
    w[ic][oc][ky][kx]*x to output (i*sy - py + dy*ky, j*sx - px + dx*kx)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    n, cin, h, wi = x.shape
    _, og, k_h, k_w = w.shape
    ig = cin // groups
    sy, sx = pair(stride)
    py, px = pair(padding)
    oy, ox = pair(output_padding)
    dy, dx = pair(dilation)
    ho = (h - 1) * sy - 2 * py + dy * (k_h - 1) + oy + 1
    wo = (wi - 1) * sx - 2 * px + dx * (k_w - 1) + ox + 1
    out = np.zeros((n, groups, og, ho, wo))
    xg = x.reshape(n, groups, ig, h, wi)
    wg = w.reshape(groups, ig, og, k_h, k_w)
    for ky in range(k_h):
        ys = np.arange(h) * sy - py + dy * ky
        vy = (ys >= 0) & (ys < ho)
        for kx in range(k_w):
            xs = np.arange(wi) * sx - px + dx * kx
            vx = (xs >= 0) & (xs < wo)
            if not (vy.any() and vx.any()):
                continue
            part = np.einsum("ngihw,gio->ngohw", xg[:, :, :, vy][..., vx], wg[:, :, :, ky, kx])
            out[:, :, :, ys[vy][:, None], xs[vx][None, :]] += part
    out = out.reshape(n, groups * og, ho, wo)
    if bias is not None:
        out += np.asarray(bias, np.float64).reshape(1, -1, 1, 1)
    return out


def conv_transpose1d_torch_ref(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    groups: int = 1,
    dilation: int = 1,
) -> np.ndarray:
    """PyTorch conv_transpose1d (x (N, C, L), weight (Cin, Cout/G, k)) via the 2-D scatter."""
    out = conv_transpose_torch_ref(
        np.asarray(x)[:, :, None, :],
        np.asarray(weight)[:, :, None, :],
        bias,
        (1, stride),
        (0, padding),
        (0, output_padding),
        groups,
        (1, dilation),
    )
    return out[:, :, 0, :]


def conv2d_ref(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    out_hw: IntOrPair | None = None,
) -> np.ndarray:
    """Plain forward convolution (PyTorch conv2d, weight (Cout, Cin/G, kH, kW)) in float64:
    out[oc][i][j] = sum w[oc][ic][ky][kx] * x[g*Ig+ic][i*sy - py + dy*ky][j*sx - px + dx*kx].
    ``out_hw`` overrides the output size (rows read outside x count as zero)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    n, cin, h, wi = x.shape
    cout, ig, k_h, k_w = w.shape
    og = cout // groups
    sy, sx = pair(stride)
    py, px = pair(padding)
    dy, dx = pair(dilation)
    if out_hw is None:
        ho = (h + 2 * py - dy * (k_h - 1) - 1) // sy + 1
        wo = (wi + 2 * px - dx * (k_w - 1) - 1) // sx + 1
    else:
        ho, wo = pair(out_hw)
    xg = x.reshape(n, groups, ig, h, wi)
    wg = w.reshape(groups, og, ig, k_h, k_w)
    out = np.zeros((n, groups, og, ho, wo))
    for ky in range(k_h):
        ys = np.arange(ho) * sy - py + dy * ky
        vy = (ys >= 0) & (ys < h)
        for kx in range(k_w):
            xs = np.arange(wo) * sx - px + dx * kx
            vx = (xs >= 0) & (xs < wi)
            taps = xg[:, :, :, np.clip(ys, 0, h - 1)[:, None], np.clip(xs, 0, wi - 1)[None, :]]
            taps = taps * (vy[:, None] & vx[None, :])
            out += np.einsum("ngihw,goi->ngohw", taps, wg[:, :, :, ky, kx])
    out = out.reshape(n, cout, ho, wo)
    if bias is not None:
        out += np.asarray(bias, np.float64).reshape(1, -1, 1, 1)
    return out


# ---------------------------------------------------------------------------------------------
# Gradients, §5.3 (MPSCNNConvolutionTransposeGradient) and PyTorch's conv_transpose backward
# ---------------------------------------------------------------------------------------------


def processed_image_pairs(
    clip: Clip | None, dst_images: int, src_images: int, offset_z: int = 0
) -> list[tuple[int, int]]:
    """(destination image nd, source image ns = offset.z + (nd - clip.z)) for every image the
    forward processes (§1.2, §7.2)."""
    _, _, z, _, _, _ = _clip_tuple(clip)
    return [
        (nd, offset_z + (nd - z)) for nd in processed_images(clip, dst_images, src_images, offset_z)
    ]


def gradient_written_mask(
    src_shape: Sequence[int],
    in_channels: int,
    clip: Clip | None = None,
    dst_images: int = 1,
    offset_z: int = 0,
    src_c_offset: int = 0,
) -> np.ndarray:
    """Boolean NCHW mask (shaped like the forward source X) of the dX elements one gradient
    encode writes: channels [sfo, sfo+I) of the processed source images, every pixel."""
    mask = np.zeros(tuple(src_shape), dtype=bool)
    for _, ns in processed_image_pairs(clip, dst_images, src_shape[0], offset_z):
        mask[ns, src_c_offset : src_c_offset + in_channels] = True
    return mask


def conv_transpose_mps_backward(
    dy: np.ndarray,
    x: np.ndarray | None,
    weights: np.ndarray,
    stride: IntOrPair = 1,
    dilation: IntOrPair = 1,
    groups: int = 1,
    T: IntOrPair = 0,
    src_hw: IntOrPair | None = None,
    clip: Clip | None = None,
    src_c_offset: int = 0,
    dst_c_offset: int = 0,
    offset_z: int = 0,
    src_images: int | None = None,
    dx: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """§5.3 in float64 for the geometry of one forward encode (§1.2): returns (dX, dW, dB).

    ``dy`` is the whole incoming-gradient image, NCHW, shaped like the forward destination; it is
    read only where the forward wrote (processed images, channels [dfo, dfo+O), pixels in
    clip ∩ bounds). ``x`` is the whole forward source (NCHW, all channels; the slice starts at
    ``src_c_offset``) or None (then dW is None; give ``src_hw`` and ``src_images``). ``weights``
    is W' (OHWI, as :func:`prepare_weights` returns it); ``T`` = (Ty, Tx).

    dX has the forward source's shape (or ``dx``'s, whose values are kept outside the written
    region): channels [sfo, sfo+I) of processed source images are set to
    ``dX[g*Ig+icl][i][j] = SUM_{oc in g, ky, kx} W'[oc][ky][kx][icl] * dY[oc][y][x]`` over the
    (y, x) whose tap (ky, kx) reads expanded position (i*sy, j*sx), i.e. the scatter form; every
    other element keeps its value (zero by default). dW (OHWI) and dB ([O]) are sums over the
    processed images of ``dY * E(tap)`` and ``dY``.
    """
    dy = np.asarray(dy, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    out_ch, k_h, k_w, ig = w.shape
    og = out_ch // groups
    sy, sx = pair(stride)
    dil_y, dil_x = pair(dilation)
    ty, tx = pair(T)
    if x is not None:
        x = np.asarray(x, dtype=np.float64)
        n_src, h_src, w_src = x.shape[0], x.shape[2], x.shape[3]
        dx_shape = x.shape
    else:
        h_src, w_src = pair(src_hw)
        n_src = src_images if src_images is not None else np.shape(dx)[0]
        dx_shape = (n_src, src_c_offset + groups * ig, h_src, w_src)
    if dx is None:
        grad_x = np.zeros(dx_shape)
    else:
        grad_x = np.array(dx, dtype=np.float64, copy=True)
    grad_w = None if x is None else np.zeros((groups, og, k_h, k_w, ig))
    grad_b = np.zeros((groups, og))

    pairs = processed_image_pairs(clip, dy.shape[0], n_src, offset_z)
    nd_list = [p[0] for p in pairs]
    ns_list = [p[1] for p in pairs]
    channels = slice(src_c_offset, src_c_offset + groups * ig)
    for ns in ns_list:
        grad_x[ns, channels] = 0.0
    cx, cy, _, cw, ch, _ = _clip_tuple(clip)
    rows = np.arange(max(cy, 0), min(cy + ch, dy.shape[2]))
    cols = np.arange(max(cx, 0), min(cx + cw, dy.shape[3]))
    if not pairs or rows.size == 0 or cols.size == 0:
        return grad_x, None if grad_w is None else grad_w.reshape(w.shape), grad_b.reshape(-1)

    # dY where the forward wrote, grouped: (n, G, Og, rows, cols).
    d_sel = dy[nd_list, dst_c_offset : dst_c_offset + out_ch][:, :, rows[0] : rows[-1] + 1]
    d_sel = d_sel[..., cols[0] : cols[-1] + 1].reshape(len(pairs), groups, og, rows.size, -1)
    grad_b += d_sel.sum(axis=(0, 3, 4))
    x_sel = None
    if x is not None:
        x_sel = x[ns_list, channels].reshape(len(pairs), groups, ig, h_src, w_src)
    gx = np.zeros((len(pairs), groups, ig, h_src, w_src))
    wg = w.reshape(groups, og, k_h, k_w, ig)
    # Expanded position read by tap (ky, kx) of destination pixel (y, x), §1.2.
    base_y = ty + (rows - cy) - (effective_kernel(k_h, dil_y) >> 1)
    base_x = tx + (cols - cx) - (effective_kernel(k_w, dil_x) >> 1)
    for ky in range(k_h):
        iy, ry = expanded_index(base_y + dil_y * ky, sy, h_src)
        if not ry.any():
            continue
        for kx in range(k_w):
            ix, rx = expanded_index(base_x + dil_x * kx, sx, w_src)
            if not rx.any():
                continue
            d_tap = d_sel[:, :, :, ry][..., rx]  # (n, G, Og, real rows, real cols)
            # rows are consecutive, so the source indices of one tap are distinct: plain += works
            yy, xx = iy[ry][:, None], ix[rx][None, :]
            gx[:, :, :, yy, xx] += np.einsum("ngohw,goi->ngihw", d_tap, wg[:, :, ky, kx, :])
            if x_sel is not None:
                taps = x_sel[:, :, :, yy, xx]
                grad_w[:, :, ky, kx, :] += np.einsum("ngohw,ngihw->goi", d_tap, taps)
    grad_x[ns_list, channels] = gx.reshape(len(pairs), groups * ig, h_src, w_src)
    return grad_x, None if grad_w is None else grad_w.reshape(w.shape), grad_b.reshape(-1)


def conv_transpose_torch_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
    groups: int = 1,
    dilation: IntOrPair = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of PyTorch conv_transpose2d in float64: (grad_input, grad_weight, grad_bias).

    The forward scatters w[ic][oc][ky][kx]*x[ic][i][j] to output (i*sy - py + dy*ky,
    j*sx - px + dx*kx), so grad_input[ic][i][j] = SUM w[ic][oc][ky][kx]*g[oc][that pixel] and
    grad_weight[ic][oc][ky][kx] = SUM_{n,i,j} x[ic][i][j]*g[oc][that pixel] (pixels outside the
    output contribute nothing); grad_bias = SUM g over n, y, x. ``grad_out`` must have the
    forward's output shape (output_padding only fixes that size).
    """
    g = np.asarray(grad_out, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    n, cin, h, wi = x.shape
    _, og, k_h, k_w = w.shape
    ig = cin // groups
    sy, sx = pair(stride)
    py, px = pair(padding)
    oy, ox = pair(output_padding)
    dy, dx = pair(dilation)
    ho = (h - 1) * sy - 2 * py + dy * (k_h - 1) + oy + 1
    wo = (wi - 1) * sx - 2 * px + dx * (k_w - 1) + ox + 1
    if g.shape != (n, groups * og, ho, wo):
        raise ValueError(f"grad_out shape {g.shape} != forward output {(n, groups * og, ho, wo)}")
    gg = g.reshape(n, groups, og, ho, wo)
    xg = x.reshape(n, groups, ig, h, wi)
    wg = w.reshape(groups, ig, og, k_h, k_w)
    grad_x = np.zeros((n, groups, ig, h, wi))
    grad_w = np.zeros((groups, ig, og, k_h, k_w))
    for ky in range(k_h):
        ys = np.arange(h) * sy - py + dy * ky
        iy = np.nonzero((ys >= 0) & (ys < ho))[0]
        for kx in range(k_w):
            xs = np.arange(wi) * sx - px + dx * kx
            ix = np.nonzero((xs >= 0) & (xs < wo))[0]
            if iy.size == 0 or ix.size == 0:
                continue
            g_tap = gg[:, :, :, ys[iy][:, None], xs[ix][None, :]]  # (n, G, Og, |iy|, |ix|)
            grad_x[:, :, :, iy[:, None], ix[None, :]] += np.einsum(
                "ngohw,gio->ngihw", g_tap, wg[:, :, :, ky, kx]
            )
            x_tap = xg[:, :, :, iy[:, None], ix[None, :]]
            grad_w[:, :, :, ky, kx] += np.einsum("ngihw,ngohw->gio", x_tap, g_tap)
    return (
        grad_x.reshape(n, cin, h, wi),
        grad_w.reshape(cin, og, k_h, k_w),
        g.sum(axis=(0, 2, 3)),
    )


def conv_transpose1d_torch_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride: int = 1,
    padding: int = 0,
    output_padding: int = 0,
    groups: int = 1,
    dilation: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`conv_transpose_torch_backward` for (N, C, L) tensors and (Cin, Cout/G, k) weights."""
    gi, gw, gb = conv_transpose_torch_backward(
        np.asarray(grad_out)[:, :, None, :],
        np.asarray(x)[:, :, None, :],
        np.asarray(weight)[:, :, None, :],
        (1, stride),
        (0, padding),
        (0, output_padding),
        groups,
        (1, dilation),
    )
    return gi[:, :, 0, :], gw[:, :, 0, :], gb
