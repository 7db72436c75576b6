"""Checks of the float64 oracle itself (tests/reference.py); no convt build needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as R
from _helpers import (
    AUTOENCODER_DEFAULT,
    AUTOENCODER_TF_SAME,
    FP16_TOL,
    SAME_NUMERIC,
    SRC_1D,
    TABLE_1D,
    W3,
    assert_close,
    random_torch_geometry,
    torch_kwargs,
)

TABLE_PARAMS = [row[1:] for row in TABLE_1D]
TABLE_IDS = [row[0] for row in TABLE_1D]
SRC = SRC_1D.reshape(1, 1, 1, 4)


def mps_1d(w: np.ndarray, T: int, dst: int, s: int = 2) -> np.ndarray:
    """Run the oracle on the 1-D example as an H = 1 image."""
    out = R.conv_transpose_mps(
        SRC, w.reshape(1, 1, -1, 1), stride=(1, s), T=(0, T), dst_hw=(1, dst)
    )
    return out[0, 0, 0]


@pytest.mark.parametrize("w, method, dst, T, off, ko, values", TABLE_PARAMS, ids=TABLE_IDS)
def test_1d_table_sizing(
    w: np.ndarray, method: int, dst: int, T: int, off: int, ko: int, values: list
) -> None:
    keff = R.effective_kernel(len(w), 1)
    assert R.transpose_offset(method, 4, 2, keff, "x") == (dst, T)
    assert R.split(T, 2) == (off, ko)


@pytest.mark.parametrize("w, method, dst, T, off, ko, values", TABLE_PARAMS, ids=TABLE_IDS)
def test_1d_table_values(
    w: np.ndarray, method: int, dst: int, T: int, off: int, ko: int, values: list
) -> None:
    np.testing.assert_array_equal(mps_1d(w, T, dst), values)


def test_same_numeric_example() -> None:
    np.testing.assert_array_equal(mps_1d(W3, 0, 7), SAME_NUMERIC)


def test_remainder_bits_are_per_axis() -> None:
    keff = 4
    for method, tx, ty in [
        (R.SIZE_SAME | 4, 1, 0),
        (R.SIZE_SAME | 8, 0, 1),
        (R.SIZE_SAME | 12, 1, 1),
        (R.SIZE_SAME, 0, 0),
    ]:
        assert R.transpose_offset(method, 4, 2, keff, "x")[1] == tx
        assert R.transpose_offset(method, 4, 2, keff, "y")[1] == ty


def test_alignment_modes() -> None:
    # k = 3, n = 4, s = 2, Full: corr = 1, extra = 4.
    assert R.transpose_offset(R.SIZE_FULL | R.ALIGN_TOP_LEFT, 4, 2, 3) == (9, 1)
    assert R.transpose_offset(R.SIZE_FULL | R.ALIGN_BOTTOM_RIGHT, 4, 2, 3) == (9, -3)
    assert R.transpose_offset(R.SIZE_FULL | 3, 4, 2, 3) == (9, 0)


def test_default_size_is_not_n_times_s() -> None:
    # §8.1: stride 1 keeps the size; stride 2 on 4 gives 7.
    assert R.transpose_offset(R.DEFAULT_PADDING, 5, 1, 3)[0] == 5
    assert R.transpose_offset(R.DEFAULT_PADDING, 4, 2, 3)[0] == 7


def test_split_floor_semantics() -> None:
    assert R.split(-1, 2) == (-1, 1)
    assert R.split(-4, 3) == (-2, 2)
    assert R.split(5, 2) == (2, 1)
    assert R.split(0, 4) == (0, 0)


@pytest.mark.parametrize(
    "policy, pad", [(R.SIZE_VALID_ONLY, 2), (R.SIZE_SAME, 1), (R.SIZE_FULL, 0)]
)
def test_table_pytorch_equivalents(policy: int, pad: int) -> None:
    dst, T = R.transpose_offset(policy, 4, 2, 3)
    torch_out = R.conv_transpose_torch_ref(
        SRC, W3[::-1].reshape(1, 1, 1, 3), stride=(1, 2), padding=(0, pad)
    )
    np.testing.assert_array_equal(torch_out[0, 0, 0], mps_1d(W3, T, dst))
    assert R.torch_axis_to_mps(4, 3, 2, pad, 0, 1) == (dst, T)


def test_autoencoder_default() -> None:
    fwd_dst, fwd_off = R.forward_size_and_offset(R.DEFAULT_PADDING, 8, 2, 3)
    assert (fwd_dst, fwd_off) == (4, 0)
    dst, T = R.autoencoder_override(8, 3, fwd_off)
    assert (dst, T) == (8, 0)
    assert R.split(T, 2) == (0, 0)
    assert R.transpose_offset(R.DEFAULT_PADDING, 4, 2, 3)[0] == 7  # without the state
    got = mps_1d(W3, T, dst)
    np.testing.assert_array_equal(got, AUTOENCODER_DEFAULT)
    torch_out = R.conv_transpose_torch_ref(
        SRC, W3[::-1].reshape(1, 1, 1, 3), stride=(1, 2), padding=(0, 1), output_padding=(0, 1)
    )
    np.testing.assert_array_equal(torch_out[0, 0, 0], got)


def test_autoencoder_tf_same() -> None:
    tf_same = R.SIZE_SAME | R.ALIGN_CENTERED | 12  # AddRemainderToBottomRight
    assert R.forward_size_and_offset(tf_same, 8, 2, 3) == (4, 1)
    dst, T = R.autoencoder_override(8, 3, 1)
    assert (dst, T) == (8, -1)
    assert R.split(T, 2) == (-1, 1)
    got = mps_1d(W3, T, dst)
    # TF SAME transpose = pad_begin 0, pad_end 1: PyTorch padding 0 with the last column dropped.
    full = R.conv_transpose_torch_ref(SRC, W3[::-1].reshape(1, 1, 1, 3), stride=(1, 2))
    np.testing.assert_array_equal(got, full[0, 0, 0, :8])
    np.testing.assert_array_equal(got, AUTOENCODER_TF_SAME)


def test_autoencoder_even_kernel_adds_one() -> None:
    assert R.autoencoder_override(9, 4, 0) == (9, 1)
    assert R.autoencoder_override(9, 4, 2) == (9, -1)


@pytest.mark.parametrize("case", range(100))
def test_gather_matches_torch_scatter(case: int) -> None:
    rng = np.random.default_rng([7, case])
    g = random_torch_geometry(rng)
    args = torch_kwargs(g)
    xs = rng.standard_normal((g["n"], g["cin"], *g["hw"]))
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], *g["k"]))
    b = rng.standard_normal(g["cout"])
    scatter = R.conv_transpose_torch_ref(xs, w, b, **args)
    w_mps, T, dst = R.torch_to_mps(
        w,
        tuple(g["hw"]),
        args["stride"],
        args["padding"],
        args["output_padding"],
        args["dilation"],
        g["groups"],
    )
    gather = R.conv_transpose_mps(
        xs,
        w_mps,
        b,
        stride=args["stride"],
        dilation=args["dilation"],
        groups=g["groups"],
        T=T,
        dst_hw=dst,
    )
    assert gather.shape == scatter.shape
    np.testing.assert_allclose(gather, scatter, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", range(60))
def test_gather_matches_mps_scatter_any_offset(case: int) -> None:
    rng = np.random.default_rng([8, case])
    groups = int(rng.choice([1, 2]))
    ig, og = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    k, s, d = rng.integers(1, 8, 2), rng.integers(1, 5, 2), rng.integers(1, 4, 2)
    n = rng.integers(1, 6, 2)
    keff = d * (k - 1) + 1
    T = [int(rng.integers(-kf - 2, kf + s_ * nn)) for kf, s_, nn in zip(keff, s, n)]
    dst = [int(rng.integers(1, (nn - 1) * s_ + kf + 3)) for kf, s_, nn in zip(keff, s, n)]
    src = rng.standard_normal((2, groups * ig, n[0], n[1]))
    w = rng.standard_normal((groups * og, k[0], k[1], ig))
    b = rng.standard_normal(groups * og)
    kw = dict(stride=tuple(s), dilation=tuple(d), groups=groups, T=tuple(T), dst_hw=tuple(dst))
    np.testing.assert_allclose(
        R.conv_transpose_mps(src, w, b, **kw),
        R.conv_transpose_mps_scatter(src, w, b, **kw),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("case", range(40))
def test_adjoint_identity(case: int) -> None:
    rng = np.random.default_rng([9, case])
    g = random_torch_geometry(rng)
    args = torch_kwargs(g)
    x = rng.standard_normal((g["n"], g["cin"], *g["hw"]))
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], *g["k"]))
    t = R.conv_transpose_torch_ref(x, w, **args)
    y = rng.standard_normal(t.shape)
    c = R.conv2d_ref(
        y,
        w,
        stride=args["stride"],
        padding=args["padding"],
        dilation=args["dilation"],
        groups=g["groups"],
        out_hw=x.shape[2:],
    )
    lhs, rhs = float(np.sum(t * y)), float(np.sum(x * c))
    assert math.isclose(lhs, rhs, rel_tol=1e-10, abs_tol=1e-10 * float(np.sum(np.abs(t * y))))


def test_conv2d_ref_small_example() -> None:
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2))
    out = R.conv2d_ref(x, w, stride=2)
    np.testing.assert_array_equal(
        out[0, 0], [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    )


def test_clip_origin_shifts_the_window() -> None:
    rng = np.random.default_rng(3)
    src = rng.standard_normal((1, 2, 4, 5))
    w = rng.standard_normal((3, 3, 2, 2))
    full = R.conv_transpose_mps(src, w, stride=2, T=(1, -1), dst_hw=(12, 12))
    clip = (3, 2, 0, 4, 5, 1)  # x, y, z, width, height, depth
    dst = np.full((1, 3, 9, 9), np.nan)
    got = R.conv_transpose_mps(src, w, stride=2, T=(1, -1), dst=dst, clip=clip)
    # Pixel (y, x) of the clip reads as unclipped pixel (y - cy, x - cx).
    np.testing.assert_allclose(got[0, :, 2:7, 3:7], full[0, :, 0:5, 0:4], rtol=1e-13)
    mask = R.written_mask(dst.shape, 3, clip)
    assert np.isnan(got[~mask]).all() and not np.isnan(got[mask]).any()


def test_channel_and_image_offsets() -> None:
    rng = np.random.default_rng(4)
    src = rng.standard_normal((3, 6, 3, 3))
    w = rng.standard_normal((2, 2, 3, 4))
    plain = R.conv_transpose_mps(src[1:3, 1:5], w, stride=2, T=0, dst_hw=(5, 5))
    dst = np.full((4, 5, 5, 5), np.nan)
    clip = (0, 0, 1, 100, 100, 100)
    got = R.conv_transpose_mps(
        src, w, stride=2, T=0, dst=dst, clip=clip, offset_z=1, src_c_offset=1, dst_c_offset=3
    )
    # Images: min(depth, 4 - 1, 3 - 1) = 2, dst 1..2 <- src 1..2.
    np.testing.assert_allclose(got[1:3, 3:5], plain, rtol=1e-13)
    assert np.isnan(got[0]).all() and np.isnan(got[3]).all() and np.isnan(got[:, :3]).all()


def test_half_accumulator_rounds_every_step() -> None:
    # acc = 2048 (fp16 spacing 2): adding 1 twice rounds back to 2048 each time (ties to even).
    src = np.ones((1, 2, 1, 1))
    w = np.ones((1, 1, 1, 2))
    out_half = R.conv_transpose_mps(src, w, np.array([2048.0]), T=0, dst_hw=1, accumulator="half")
    out_float = R.conv_transpose_mps(src, w, np.array([2048.0]), T=0, dst_hw=1)
    assert out_half[0, 0, 0, 0] == 2048.0
    assert out_float[0, 0, 0, 0] == 2050.0


def test_half_accumulator_skips_inserted_zeros() -> None:
    # Real taps only: inserted zeros never round the running sum.
    src = np.array([[[[0.1, 0.2, 0.3]]]])
    w = np.full((1, 1, 3, 1), 0.7)
    half = R.conv_transpose_mps(
        src, w, None, stride=(1, 2), T=(0, 0), dst_hw=(1, 5), accumulator="half"
    )
    ref = R.conv_transpose_mps(src, w, None, stride=(1, 2), T=(0, 0), dst_hw=(1, 5))
    assert_close(half, ref, FP16_TOL, "half vs float")
    assert np.all(half == half.astype(np.float16))


def test_half_accumulator_close_to_float() -> None:
    rng = np.random.default_rng(5)
    src = rng.uniform(-1, 1, (2, 4, 5, 5)).astype(np.float16)
    w, b = R.prepare_weights(
        rng.uniform(-0.3, 0.3, (6, 3, 3, 2)).astype(np.float32),
        rng.uniform(-0.5, 0.5, 6).astype(np.float32),
    )
    kw = dict(stride=2, groups=2, T=0, dst_hw=(9, 9))
    assert_close(
        R.conv_transpose_mps(src, w, b, accumulator="half", **kw),
        R.conv_transpose_mps(src, w, b, **kw),
        FP16_TOL,
        "half vs float",
    )


def test_prepare_weights_fp16_rounding_and_bias() -> None:
    w = np.array([0.1, 1.0 / 3.0, 2049.0, -7.25], np.float32).reshape(1, 1, 4, 1)
    w16, b = R.prepare_weights(w, np.array([0.1], np.float32))
    np.testing.assert_array_equal(w16.ravel(), w.astype(np.float16).astype(np.float64).ravel())
    assert w16.ravel()[2] == 2048.0  # ties to even
    assert b[0] == float(np.float32(0.1))  # bias stays float32
    w32, none_bias = R.prepare_weights(w, None, kernel_weights_dtype="float32")
    np.testing.assert_array_equal(w32.ravel(), w.astype(np.float64).ravel())
    assert none_bias is None


def test_prepare_weights_batch_norm_fold() -> None:
    w = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32).reshape(2, 1, 1, 2)
    f32 = np.float32
    bn = R.BatchNorm(
        mean=np.array([1.0, -1.0], f32),
        variance=np.array([4.0, 0.25], f32),
        gamma=np.array([2.0, 1.0], f32),
        beta=np.array([0.5, 0.0], f32),
        epsilon=0.0,
    )
    # I = gamma/sqrt(var+eps) = [1, 2]; J = beta - I*mean = [-0.5, 2].
    wf, bf = R.prepare_weights(
        w, np.array([3.0, 1.0], np.float32), bn, kernel_weights_dtype="float32"
    )
    np.testing.assert_array_equal(wf.reshape(2, 2), [[1.0, 2.0], [6.0, 8.0]])
    np.testing.assert_array_equal(bf, [3.0 * 1 - 0.5, 1.0 * 2 + 2.0])
    _, b_only_bn = R.prepare_weights(w, None, bn)
    np.testing.assert_array_equal(b_only_bn, [-0.5, 2.0])


def test_prepare_weights_uint8() -> None:
    u = np.array([0, 255, 51, 102], np.uint8).reshape(2, 1, 1, 2)
    ranges = np.array([[-1.0, 1.0], [0.0, 10.0]], np.float32)
    w, _ = R.prepare_weights(u, quant=("linear", ranges), kernel_weights_dtype="float32")
    np.testing.assert_allclose(w.reshape(2, 2), [[-1.0, 1.0], [2.0, 4.0]], rtol=1e-6)
    lut = np.linspace(-2, 2, 256).astype(np.float32)
    w, _ = R.prepare_weights(u, quant=("lookup_table", lut))
    np.testing.assert_array_equal(w.ravel(), lut[u.ravel()].astype(np.float16).astype(np.float64))


@pytest.mark.parametrize(
    "kind, params, v, expected",
    [
        ("none", {}, -2.0, -2.0),
        ("relu", {}, -2.0, 0.0),
        ("relu", {"a": 0.1}, -2.0, -0.2),
        ("linear", {"a": 2.0, "b": 1.0}, 3.0, 7.0),
        ("sigmoid", {}, 0.0, 0.5),
        ("hard_sigmoid", {}, 1.0, 0.7),
        ("hard_sigmoid", {}, 10.0, 1.0),
        ("tanh", {"a": 2.0, "b": 0.5}, 2.0, 2.0 * math.tanh(1.0)),
        ("abs", {}, -3.0, 3.0),
        ("softplus", {}, 0.0, math.log(2.0)),
        ("softsign", {}, 3.0, 0.75),
        ("elu", {"a": 2.0}, -1.0, 2.0 * (math.exp(-1.0) - 1.0)),
        ("relun", {}, 10.0, 6.0),
        ("relun", {"a": 0.5, "b": 1.0}, -4.0, -2.0),
        ("power", {"a": 2.0, "b": 1.0, "c": 2.0}, 1.0, 9.0),
        ("exponential", {}, 1.0, math.e),
        ("exponential", {"a": 1.0, "b": 1.0, "c": 2.0}, 2.0, 8.0),
        ("logarithm", {}, math.e, 1.0),
        ("logarithm", {"c": 10.0}, 1000.0, 3.0),
        ("gelu", {}, 1.0, 0.5 * (1.0 + math.erf(1.0 / math.sqrt(2.0)))),
    ],
)
def test_neuron_formulas(kind: str, params: dict, v: float, expected: float) -> None:
    assert R.apply_neuron(np.array([v]), kind, **params)[0] == pytest.approx(expected, rel=1e-12)


def test_prelu_uses_output_channel() -> None:
    v = -np.ones((1, 3, 2, 2))
    out = R.apply_neuron(v, "prelu", data=np.array([0.0, 0.5, 2.0]), channel_axis=1)
    np.testing.assert_array_equal(out[0, :, 0, 0], [0.0, -0.5, -2.0])


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("case", range(40))
def test_reference_matches_torch_2d(case: int) -> None:
    torch = _torch()
    rng = np.random.default_rng([10, case])
    g = random_torch_geometry(rng)
    args = torch_kwargs(g)
    x = rng.standard_normal((g["n"], g["cin"], *g["hw"]))
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], *g["k"]))
    b = rng.standard_normal(g["cout"])
    got = R.conv_transpose_torch_ref(x, w, b, **args)
    want = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **args
    ).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", range(20))
def test_reference_matches_torch_1d(case: int) -> None:
    torch = _torch()
    rng = np.random.default_rng([11, case])
    g = random_torch_geometry(rng, one_d=True)
    args = torch_kwargs(g, one_d=True)
    x = rng.standard_normal((g["n"], g["cin"], g["hw"][1]))
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], g["k"][1]))
    got = R.conv_transpose1d_torch_ref(x, w, None, **args)
    want = torch.nn.functional.conv_transpose1d(
        torch.from_numpy(x), torch.from_numpy(w), None, **args
    ).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", range(10))
def test_conv2d_ref_matches_torch(case: int) -> None:
    torch = _torch()
    rng = np.random.default_rng([12, case])
    g = random_torch_geometry(rng)
    args = torch_kwargs(g)
    args.pop("output_padding")
    x = rng.standard_normal((1, g["cout"], g["hw"][0] + 18, g["hw"][1] + 18))
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], *g["k"]))
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), **args).numpy()
    np.testing.assert_allclose(R.conv2d_ref(x, w, **args), want, rtol=1e-10, atol=1e-10)
