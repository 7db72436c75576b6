"""Checks of the float64 gradient oracle (tests/reference.py, spec §5.3); no convt build needed.

The gradient references are checked against finite differences of the forward references, the
adjoint (bilinearity) identity, hand-worked values, each other through the §1.8 mapping, and
PyTorch autograd when torch is installed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference as R
from _helpers import random_torch_geometry, torch_kwargs

# ---------------------------------------------------------------------------------------------
# Random MPS geometry (manual path: any T, clip, channel and image offsets)
# ---------------------------------------------------------------------------------------------


def random_mps_geometry(rng: np.random.Generator, tiny: bool = True) -> dict[str, Any]:
    """One manual-path forward geometry, per-axis values as (y, x); sizes are tiny when asked."""
    top = 3 if tiny else 6
    g: dict[str, Any] = {
        "groups": int(rng.choice([1, 1, 2, 3])),
        "ig": int(rng.integers(1, 3 if tiny else 4)),
        "og": int(rng.integers(1, 3 if tiny else 4)),
        "k": tuple(int(v) for v in rng.integers(1, 5 if tiny else 8, 2)),
        "s": tuple(int(v) for v in rng.integers(1, 4 if tiny else 5, 2)),
        "d": tuple(int(v) for v in rng.integers(1, 4, 2)),
        "hw": tuple(int(v) for v in rng.integers(1, top + 1, 2)),
        "n_src": int(rng.integers(1, 3)),
        "n_dst": int(rng.integers(1, 3)),
        "sfo": int(rng.integers(0, 3)),
        "dfo": int(rng.integers(0, 3)),
        "src_extra": int(rng.integers(0, 2)),
        "dst_extra": int(rng.integers(0, 2)),
    }
    g["offset_z"] = int(rng.integers(0, g["n_src"]))
    T, dst_hw = [], []
    for a in range(2):
        keff = R.effective_kernel(g["k"][a], g["d"][a])
        T.append(int(rng.integers(-keff - 1, keff + 2)))
        dst_hw.append(int(rng.integers(1, (g["hw"][a] - 1) * g["s"][a] + keff + 3)))
    g["T"], g["dst_hw"] = tuple(T), tuple(dst_hw)
    g["clip"] = None
    if rng.random() < 0.5:
        hd, wd = dst_hw
        x0, y0 = int(rng.integers(0, wd)), int(rng.integers(0, hd))
        g["clip"] = (
            x0,
            y0,
            int(rng.integers(0, g["n_dst"])),
            int(rng.integers(1, wd - x0 + 3)),
            int(rng.integers(1, hd - y0 + 3)),
            int(rng.integers(1, 3)),
        )
    return g


def mps_arrays(rng: np.random.Generator, g: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """(x, W', bias', dY) for a geometry; x and dY are whole images (offset channels included)."""
    in_ch, out_ch = g["groups"] * g["ig"], g["groups"] * g["og"]
    x = rng.standard_normal((g["n_src"], g["sfo"] + in_ch + g["src_extra"], *g["hw"]))
    w = rng.standard_normal((out_ch, *g["k"], g["ig"]))
    b = rng.standard_normal(out_ch)
    dy = rng.standard_normal((g["n_dst"], g["dfo"] + out_ch + g["dst_extra"], *g["dst_hw"]))
    return x, w, b, dy


def forward(g: dict[str, Any], x: np.ndarray, w: np.ndarray, b: np.ndarray | None, shape) -> Any:
    """The forward oracle into a zero destination of ``shape`` (unwritten elements stay 0)."""
    return R.conv_transpose_mps(
        x,
        w,
        b,
        stride=g["s"],
        dilation=g["d"],
        groups=g["groups"],
        T=g["T"],
        dst=np.zeros(shape),
        clip=g["clip"],
        offset_z=g["offset_z"],
        src_c_offset=g["sfo"],
        dst_c_offset=g["dfo"],
    )


def backward(g: dict[str, Any], dy: np.ndarray, x: np.ndarray | None, w: np.ndarray, **kw: Any):
    return R.conv_transpose_mps_backward(
        dy,
        x,
        w,
        g["s"],
        g["d"],
        g["groups"],
        g["T"],
        g["hw"],
        clip=g["clip"],
        src_c_offset=g["sfo"],
        dst_c_offset=g["dfo"],
        offset_z=g["offset_z"],
        **kw,
    )


def written(g: dict[str, Any], dy_shape) -> np.ndarray:
    return R.written_mask(
        dy_shape, g["groups"] * g["og"], g["clip"], g["n_src"], g["offset_z"], g["dfo"]
    )


def central_difference(f, arr: np.ndarray, h: float = 0.5) -> np.ndarray:
    """Numerical gradient of the scalar f() w.r.t. every element of ``arr`` (modified and
    restored in place). f is affine in ``arr`` here, so the central difference is exact up to
    rounding."""
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


def assert_grad_close(got: np.ndarray, want: np.ndarray, what: str, tol: float = 1e-9) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1.0)
    err = float(np.max(np.abs(got - want), initial=0.0))
    assert err <= tol * scale, f"{what}: max abs err {err:.3g} (scale {scale:.3g})"


# ---------------------------------------------------------------------------------------------
# Hand-worked values (the 1-D example of spec §1.4: source [1, 2, 3, 4], s = 2, W = [a, b, c])
# ---------------------------------------------------------------------------------------------

A, B, C = 10.0, 100.0, 1000.0
SRC = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4)
W3 = np.array([A, B, C]).reshape(1, 1, 3, 1)


def mps_1d_backward(dy: list[float], T: int = 0):
    dx, dw, db = R.conv_transpose_mps_backward(
        np.array(dy, float).reshape(1, 1, 1, -1), SRC, W3, (1, 2), 1, 1, (0, T), (1, 4)
    )
    return dx.reshape(-1), dw.reshape(-1), db


def test_hand_worked_unit_gradient() -> None:
    # out[1] = a*E[0] + b*E[1] + c*E[2] = a*src0 + c*src1 (Same policy, T = 0, dst 7).
    dx, dw, db = mps_1d_backward([0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(dx, [A, C, 0, 0])
    np.testing.assert_array_equal(dw, [1, 0, 2])
    np.testing.assert_array_equal(db, [1])
    # out[0] = b*src0 only.
    dx, dw, db = mps_1d_backward([1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(dx, [B, 0, 0, 0])
    np.testing.assert_array_equal(dw, [0, 1, 0])


def test_hand_worked_all_ones() -> None:
    dx, dw, db = mps_1d_backward([1] * 7)
    np.testing.assert_array_equal(dx, [A + B, A + B + C, A + B + C, B + C])
    # tap k reads E[y - 1 + k] for y in 0..6; E = [1, 0, 2, 0, 3, 0, 4]
    np.testing.assert_array_equal(dw, [6, 10, 9])
    np.testing.assert_array_equal(db, [7])


def test_hand_worked_full_policy_offset() -> None:
    # Full: dst 9, T = -1 -> out = [c, b, a+2c, 2b, 2a+3c, 3b, 3a+4c, 4b, 4a].
    dy = np.zeros(9)
    dy[0], dy[8] = 1.0, 1.0  # c*src0 + a*src3
    dx, dw, db = mps_1d_backward(list(dy), T=-1)
    np.testing.assert_array_equal(dx, [C, 0, 0, A])
    np.testing.assert_array_equal(dw, [4, 0, 1])
    np.testing.assert_array_equal(db, [2])


def test_hand_worked_torch() -> None:
    # x = [1, 2], w = [1, 10, 100], stride 2: out = [1, 10, 100 + 2, 20, 200].
    x = np.array([1.0, 2.0]).reshape(1, 1, 2)
    w = np.array([1.0, 10.0, 100.0]).reshape(1, 1, 3)
    np.testing.assert_array_equal(
        R.conv_transpose1d_torch_ref(x, w, stride=2)[0, 0], [1, 10, 102, 20, 200]
    )
    g = np.array([1.0, 2.0, 3.0, 4.0, 5.0]).reshape(1, 1, 5)
    gi, gw, gb = R.conv_transpose1d_torch_backward(g, x, w, stride=2)
    np.testing.assert_array_equal(gi.reshape(-1), [321, 543])
    np.testing.assert_array_equal(gw.reshape(-1), [7, 10, 13])
    np.testing.assert_array_equal(gb, [15])


def test_clip_and_channel_offsets_select_dy() -> None:
    """dY outside the written region (other channels, pixels outside the clip, unprocessed
    images) must not reach any gradient."""
    rng = np.random.default_rng(5)
    g = {
        "groups": 1,
        "ig": 2,
        "og": 2,
        "k": (3, 3),
        "s": (2, 2),
        "d": (1, 1),
        "hw": (3, 3),
        "n_src": 2,
        "n_dst": 3,
        "sfo": 1,
        "dfo": 2,
        "offset_z": 1,
        "T": (0, 1),
        "dst_hw": (6, 6),
        "clip": (1, 2, 1, 3, 9, 5),
    }
    x = rng.standard_normal((2, 4, 3, 3))
    w = rng.standard_normal((2, 3, 3, 2))
    dy = rng.standard_normal((3, 5, 6, 6))
    mask = written(g, dy.shape)
    # only destination image 1 (from source image 1), channels 2..3, rows 2..5, cols 1..3
    assert mask.sum() == 1 * 2 * 4 * 3 and mask[1, 2:4, 2:6, 1:4].all()
    dx, dw, db = backward(g, dy, x, w)
    dx2, dw2, db2 = backward(g, np.where(mask, dy, 0.0), x, w)
    np.testing.assert_array_equal(dx, dx2)
    np.testing.assert_array_equal(dw, dw2)
    np.testing.assert_array_equal(db, db2)
    np.testing.assert_array_equal(db, dy[1, 2:4, 2:6, 1:4].sum(axis=(1, 2)))
    # dX: written only for source image 1, channels 1..2
    assert not dx[0].any() and not dx[1, 0].any() and not dx[1, 3].any()
    assert dx[1, 1:3].any()
    keep = np.full(x.shape, 7.0)
    dx3, _, _ = backward(g, dy, x, w, dx=keep)
    gmask = R.gradient_written_mask(x.shape, 2, g["clip"], 3, 1, 1)
    np.testing.assert_array_equal(dx3[~gmask], 7.0)
    np.testing.assert_array_equal(dx3[gmask], dx[gmask])


# ---------------------------------------------------------------------------------------------
# Finite differences of the forward references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(16))
def test_mps_backward_matches_finite_differences(case: int) -> None:
    rng = np.random.default_rng([71, case])
    g = random_mps_geometry(rng, tiny=True)
    x, w, b, dy = mps_arrays(rng, g)

    def loss() -> float:
        return float(np.sum(dy * forward(g, x, w, b, dy.shape)))

    dx, dw, db = backward(g, dy, x, w)
    assert_grad_close(dx, central_difference(loss, x), f"dX {g}")
    assert_grad_close(dw, central_difference(loss, w), f"dW {g}")
    assert_grad_close(db, central_difference(loss, b), f"dB {g}")


@pytest.mark.parametrize("one_d", [False, True], ids=["2d", "1d"])
@pytest.mark.parametrize("case", range(10))
def test_torch_backward_matches_finite_differences(case: int, one_d: bool) -> None:
    rng = np.random.default_rng([72, case, one_d])
    g = random_torch_geometry(rng, one_d, max_k=4, max_n=3)
    x = rng.standard_normal((g["n"], g["cin"], *g["hw"]))
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], *g["k"]))
    b = rng.standard_normal(g["cout"])
    kw = torch_kwargs(g)
    out_shape = R.conv_transpose_torch_ref(x, w, b, **kw).shape
    go = rng.standard_normal(out_shape)

    if one_d:
        kw1 = torch_kwargs(g, one_d=True)
        x1, w1, go1 = x[:, :, 0], w[:, :, 0], go[:, :, 0]

        def loss() -> float:
            return float(np.sum(go1 * R.conv_transpose1d_torch_ref(x1, w1, b, **kw1)))

        gi, gw, gb = R.conv_transpose1d_torch_backward(go1, x1, w1, **kw1)
        assert_grad_close(gi, central_difference(loss, x1), f"grad_input {g}")
        assert_grad_close(gw, central_difference(loss, w1), f"grad_weight {g}")
    else:

        def loss() -> float:
            return float(np.sum(go * R.conv_transpose_torch_ref(x, w, b, **kw)))

        gi, gw, gb = R.conv_transpose_torch_backward(go, x, w, **kw)
        assert_grad_close(gi, central_difference(loss, x), f"grad_input {g}")
        assert_grad_close(gw, central_difference(loss, w), f"grad_weight {g}")
    assert_grad_close(gb, central_difference(loss, b), f"grad_bias {g}")


# ---------------------------------------------------------------------------------------------
# Adjoint identity (the forward is bilinear in (x, W) and affine in the bias)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(150))
def test_mps_backward_adjoint_identity(case: int) -> None:
    rng = np.random.default_rng([73, case])
    g = random_mps_geometry(rng, tiny=False)
    x, w, b, dy = mps_arrays(rng, g)
    y = forward(g, x, w, None, dy.shape)
    mask = written(g, dy.shape)
    assert np.all(y[~mask] == 0.0)
    lhs = float(np.sum(y * dy))
    dx, dw, db = backward(g, dy, x, w)
    scale = float(np.sum(np.abs(y * dy))) + 1e-300
    assert abs(lhs - float(np.sum(x * dx))) <= 1e-10 * max(scale, 1.0), g
    assert abs(lhs - float(np.sum(w * dw))) <= 1e-10 * max(scale, 1.0), g
    bias_only = forward(g, np.zeros_like(x), w, b, dy.shape)
    assert abs(float(np.sum(bias_only * dy)) - float(np.sum(b * db))) <= 1e-10 * max(
        float(np.sum(np.abs(bias_only * dy))), 1.0
    ), g
    # without x the data gradient is the same and dW is not computed
    dx_only, dw_none, db2 = backward(g, dy, None, w, dx=np.zeros_like(x))
    assert dw_none is None
    np.testing.assert_array_equal(dx_only, dx)
    np.testing.assert_array_equal(db2, db)


@pytest.mark.parametrize("case", range(100))
def test_torch_backward_adjoint_identity(case: int) -> None:
    rng = np.random.default_rng([74, case])
    g = random_torch_geometry(rng, one_d=bool(case % 4 == 0))
    x = rng.standard_normal((g["n"], g["cin"], *g["hw"]))
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], *g["k"]))
    kw = torch_kwargs(g)
    y = R.conv_transpose_torch_ref(x, w, None, **kw)
    go = rng.standard_normal(y.shape)
    gi, gw, gb = R.conv_transpose_torch_backward(go, x, w, **kw)
    lhs = float(np.sum(y * go))
    scale = max(float(np.sum(np.abs(y * go))), 1.0)
    assert abs(lhs - float(np.sum(x * gi))) <= 1e-10 * scale, g
    assert abs(lhs - float(np.sum(w * gw))) <= 1e-10 * scale, g
    np.testing.assert_allclose(gb, go.sum(axis=(0, 2, 3)), rtol=1e-12)
    # the data gradient of a transposed convolution is the plain convolution (conv2d_ref)
    conv = R.conv2d_ref(
        go,
        w,
        stride=tuple(g["s"]),
        padding=tuple(g["p"]),
        dilation=tuple(g["d"]),
        groups=g["groups"],
        out_hw=tuple(g["hw"]),
    )
    assert_grad_close(gi, conv, f"grad_input vs conv2d {g}", tol=1e-12)


# ---------------------------------------------------------------------------------------------
# The two gradient references agree through the §1.8 mapping
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(60))
def test_mps_and_torch_backward_agree(case: int) -> None:
    rng = np.random.default_rng([75, case])
    g = random_torch_geometry(rng, one_d=bool(case % 5 == 0))
    x = rng.standard_normal((g["n"], g["cin"], *g["hw"]))
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], *g["k"]))
    kw = torch_kwargs(g)
    w_mps, T, dst = R.torch_to_mps(w, g["hw"], g["s"], g["p"], g["op"], g["d"], g["groups"])
    go = rng.standard_normal((g["n"], g["cout"], *dst))
    gi, gw, gb = R.conv_transpose_torch_backward(go, x, w, **kw)
    dx, dw, db = R.conv_transpose_mps_backward(
        go, x, w_mps, tuple(g["s"]), tuple(g["d"]), g["groups"], T, tuple(g["hw"])
    )
    assert_grad_close(dx, gi, f"dX {g}", tol=1e-12)
    assert_grad_close(dw, R.torch_weight_to_mps(gw, g["groups"]), f"dW {g}", tol=1e-12)
    assert_grad_close(db, gb, f"dB {g}", tol=1e-12)


# ---------------------------------------------------------------------------------------------
# PyTorch autograd
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", range(40))
def test_torch_backward_matches_autograd(case: int) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng([76, case])
    one_d = case % 4 == 3
    g = random_torch_geometry(rng, one_d=one_d)
    x = rng.standard_normal((g["n"], g["cin"], *g["hw"]))
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], *g["k"]))
    b = rng.standard_normal(g["cout"])
    if one_d:
        x, w = x[:, :, 0], w[:, :, 0]
        kw = torch_kwargs(g, one_d=True)
        fn, ref_bw = torch.nn.functional.conv_transpose1d, R.conv_transpose1d_torch_backward
    else:
        kw = torch_kwargs(g)
        fn, ref_bw = torch.nn.functional.conv_transpose2d, R.conv_transpose_torch_backward
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = fn(tx, tw, tb, **kw)
    go = rng.standard_normal(tuple(out.shape))
    out.backward(torch.from_numpy(go))
    gi, gw, gb = ref_bw(go, x, w, **kw)
    assert_grad_close(gi, tx.grad.numpy(), f"grad_input {g}", tol=1e-12)
    assert_grad_close(gw, tw.grad.numpy(), f"grad_weight {g}", tol=1e-12)
    assert_grad_close(gb, tb.grad.numpy(), f"grad_bias {g}", tol=1e-12)


@pytest.mark.parametrize("case", range(20))
def test_mps_backward_matches_autograd_of_mapped_torch(case: int) -> None:
    """MPS geometry with an arbitrary T (not only PyTorch's) is a PyTorch transpose on a padded
    or cropped output: dst = crop/pad of conv_transpose2d(x, flip(W)) with padding 0."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng([77, case])
    groups = int(rng.choice([1, 2]))
    ig, og = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 5, 2))
    s = tuple(int(v) for v in rng.integers(1, 4, 2))
    d = tuple(int(v) for v in rng.integers(1, 3, 2))
    hw = tuple(int(v) for v in rng.integers(1, 5, 2))
    keff = [R.effective_kernel(k[a], d[a]) for a in range(2)]
    T = tuple(int(rng.integers(-keff[a], keff[a] + 1)) for a in range(2))
    dst = tuple(int(rng.integers(1, (hw[a] - 1) * s[a] + keff[a] + 3)) for a in range(2))
    x = rng.standard_normal((2, groups * ig, *hw))
    w = rng.standard_normal((groups * og, *k, ig))
    dy = rng.standard_normal((2, groups * og, *dst))
    # PyTorch weight for these MPS weights (inverse of torch_weight_to_mps)
    w_t = w.reshape(groups, og, *k, ig)[:, :, ::-1, ::-1].transpose(0, 4, 1, 2, 3)
    w_t = np.ascontiguousarray(w_t.reshape(groups * ig, og, *k))
    np.testing.assert_array_equal(R.torch_weight_to_mps(w_t, groups), w)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w_t, requires_grad=True)
    full = torch.nn.functional.conv_transpose2d(tx, tw, None, s, 0, 0, groups, d)
    # With padding 0, full[y'] has T' = (keff>>1) - keff + 1; MPS row y is full row y + T - T'.
    shift = [T[a] - ((keff[a] >> 1) - keff[a] + 1) for a in range(2)]
    pads = (max(0, -shift[1]), dst[1] + 2 * keff[1], max(0, -shift[0]), dst[0] + 2 * keff[0])
    padded = torch.nn.functional.pad(full, pads)
    y0, x0 = max(0, shift[0]), max(0, shift[1])
    out = padded[:, :, y0 : y0 + dst[0], x0 : x0 + dst[1]]
    np.testing.assert_allclose(
        out.detach().numpy(),
        R.conv_transpose_mps(x, w, stride=s, dilation=d, groups=groups, T=T, dst_hw=dst),
        rtol=1e-12,
        atol=1e-12,
    )
    out.backward(torch.from_numpy(dy))
    dx, dw, _ = R.conv_transpose_mps_backward(dy, x, w, s, d, groups, T, hw)
    assert_grad_close(dx, tx.grad.numpy(), "dX", tol=1e-12)
    assert_grad_close(dw, R.torch_weight_to_mps(tw.grad.numpy(), groups), "dW", tol=1e-12)
