"""Gradient states and weight states (spec §5.1, §5.2, §5.4): lifetimes, batch sharing, geometry
snapshots, the ``convolution`` property, export/reload of weights, OptimizerSGD and the data-source
update hooks driven by apply_data_source_update."""

from __future__ import annotations

from typing import Any

import convt
import numpy as np
import pytest
import reference as R
from _helpers import (
    FP16_TOL,
    FP32_TOL,
    assert_close,
    build_transpose_pair,
    kernel_T,
    make_data_source,
    run_encoded,
    set_total_offset,
)

# A small problem used throughout: O = 4, k = 3 x 2, I = 3, stride (2, 1).
STRIDE = (2, 1)


def problem(rng: np.random.Generator, dtype: str = "float32") -> dict[str, np.ndarray]:
    return {
        "w": rng.uniform(-0.5, 0.5, (4, 3, 2, 3)).astype(dtype),
        "b": rng.uniform(-0.5, 0.5, 4).astype(np.float32),
        "x": rng.uniform(-1, 1, (2, 3, 4, 5)).astype(np.float32),
        "dy": rng.uniform(-1, 1, (2, 4, 8, 6)).astype(np.float32),
    }


def pair(device: Any, p: dict[str, np.ndarray], **options: Any) -> tuple[Any, Any]:
    opts = {"stride": STRIDE, "kernel_weights_dtype": "float32"}
    opts.update(options)
    return build_transpose_pair(device, p["w"], p["b"], **opts)


def reference_gradients(p: dict[str, np.ndarray], T: tuple[int, int], **kw: Any):
    return R.conv_transpose_mps_backward(p["dy"], p["x"], p["w"], STRIDE, 1, 1, T, (4, 5), **kw)


def images(p: dict[str, np.ndarray]) -> tuple[Any, Any, Any]:
    """(X image, forward destination image, dY image)."""
    return (
        convt.Image(p["x"]),
        convt.Image(np.zeros(p["dy"].shape, np.float32)),
        convt.Image(p["dy"]),
    )


def W(state: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A WeightsAndBiasesState's float32 weights as OHWI (the contract leaves the attribute's
    shape open: OHWI or flat are both accepted; the element order must be OHWI)."""
    arr = np.asarray(state.weights)
    assert arr.dtype == np.float32, arr.dtype
    assert arr.size == int(np.prod(shape)), (arr.shape, shape)
    return arr.reshape(shape)


def sgd_expected(w: np.ndarray, dw: np.ndarray, lr: float, wd: float = 0.0) -> np.ndarray:
    w = np.asarray(w, np.float64)
    return w - lr * (np.asarray(dw, np.float64) + wd * w)


# ---------------------------------------------------------------------------------------------
# result_state vs temporary_result_state
# ---------------------------------------------------------------------------------------------


def test_result_state_outlives_its_command_buffer(device: Any, rng: np.random.Generator) -> None:
    p = problem(rng)
    fwd, grad = pair(device, p)
    set_total_offset(fwd, (-1, 1))
    x_img, dst, dy_img = images(p)
    state = fwd.result_state(x_img, destination_image=dst)
    assert isinstance(state, convt.ConvolutionTransposeGradientState)
    assert not state.is_temporary and state.is_valid
    # gradients are zero until a gradient kernel writes them
    assert state.gradient_for_weights.shape == (4, 3, 2, 3)
    assert not state.gradient_for_weights.any() and not state.gradient_for_biases.any()
    run_encoded(device, lambda cb: grad.encode(cb, dy_img, x_img, state))
    assert state.is_valid
    _, dw_ref, db_ref = reference_gradients(p, (-1, 1))
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "dW after completion")
    assert_close(state.gradient_for_biases, db_ref, FP32_TOL, "dB after completion")
    # still readable and usable later, in another command buffer
    dx = run_encoded(device, lambda cb: grad.encode(cb, dy_img, x_img, state))
    assert_close(dx.array, reference_gradients(p, (-1, 1))[0], FP32_TOL, "dX")


def test_gradient_buffers_are_read_only_views(device: Any, rng: np.random.Generator) -> None:
    p = problem(rng)
    fwd, _ = pair(device, p)
    x_img, dst, _ = images(p)
    state = fwd.result_state(x_img, destination_image=dst)
    for arr in (state.gradient_for_weights, state.gradient_for_biases):
        assert arr.dtype == np.float32
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[...] = 1.0


def test_temporary_state_valid_inside_its_command_buffer(
    device: Any, rng: np.random.Generator
) -> None:
    p = problem(rng)
    fwd, grad = pair(device, p)
    x_img, dst, dy_img = images(p)
    cb = convt.CommandBuffer(device)
    tmp = fwd.temporary_result_state(cb, x_img, destination_image=dst)
    assert tmp.is_temporary and tmp.is_valid
    assert tmp.gradient_for_weights.shape == (4, 3, 2, 3)  # readable before completion
    fwd.encode(cb, x_img, destination_image=dst)
    dx = grad.encode(cb, dy_img, x_img, tmp)
    # consume the temporary gradients inside the same command buffer: w = 0 - 1 * dW
    weights_state = convt.WeightsAndBiasesState(
        np.zeros((4, 3, 2, 3), np.float32), np.zeros(4, np.float32)
    )
    convt.OptimizerSGD(1.0).encode(cb, tmp, weights_state)
    cb.commit()
    cb.wait_until_completed()
    assert cb.status == "completed" and cb.error is None
    dx_ref, dw_ref, db_ref = reference_gradients(p, (0, 0))
    assert_close(dx.array, dx_ref, FP32_TOL, "dX from a temporary state")
    assert_close(
        W(weights_state, dw_ref.shape), -dw_ref, FP32_TOL, "dW seen inside the command buffer"
    )
    assert_close(weights_state.biases, -db_ref, FP32_TOL, "dB seen inside the command buffer")

    # after completion every use fails
    assert not tmp.is_valid
    with pytest.raises(RuntimeError, match="temporary"):
        _ = tmp.gradient_for_weights
    with pytest.raises(RuntimeError, match="temporary"):
        _ = tmp.gradient_for_biases
    cb2 = convt.CommandBuffer(device)
    with pytest.raises(RuntimeError, match="temporary"):
        grad.encode(cb2, dy_img, x_img, tmp)
    with pytest.raises(RuntimeError, match="temporary"):
        convt.OptimizerSGD(1.0).encode(cb2, tmp, weights_state)
    cb2.commit()
    cb2.wait_until_completed()


def test_temporary_state_from_forward_encode(device: Any, rng: np.random.Generator) -> None:
    p = problem(rng)
    fwd, grad = pair(device, p)
    x_img, dst, dy_img = images(p)
    cb = convt.CommandBuffer(device)
    out, tmp = fwd.encode(
        cb,
        x_img,
        destination_image=dst,
        destination_state=True,
        destination_state_is_temporary=True,
    )
    assert out is dst and tmp.is_temporary
    grad.encode(cb, dy_img, x_img, tmp)
    cb.commit()
    cb.wait_until_completed()
    assert not tmp.is_valid
    with pytest.raises(RuntimeError, match="temporary"):
        _ = tmp.gradient_for_weights
    with pytest.raises(RuntimeError, match="temporary"):
        run_encoded(device, lambda c: grad.encode(c, dy_img, x_img, tmp))


def test_temporary_state_in_another_command_buffer(device: Any, rng: np.random.Generator) -> None:
    p = problem(rng)
    fwd, grad = pair(device, p)
    x_img, dst, dy_img = images(p)
    cb1, cb2 = convt.CommandBuffer(device), convt.CommandBuffer(device)
    tmp = fwd.temporary_result_state(cb1, x_img, destination_image=dst)
    with pytest.raises(ValueError):
        grad.encode(cb2, dy_img, x_img, tmp)
    weights_state = convt.WeightsAndBiasesState(np.zeros((4, 3, 2, 3), np.float32))
    with pytest.raises(ValueError):
        convt.OptimizerSGD(0.1).encode(cb2, tmp, weights_state)
    # still fine in its own command buffer
    grad.encode(cb1, dy_img, x_img, tmp)
    for cb in (cb1, cb2):
        cb.commit()
        cb.wait_until_completed()
        assert cb.status == "completed"


# ---------------------------------------------------------------------------------------------
# Batches share one state
# ---------------------------------------------------------------------------------------------


def test_batch_states_are_one_shared_object(device: Any, rng: np.random.Generator) -> None:
    p = problem(rng)
    fwd, _ = pair(device, p)
    xs = [convt.Image(p["x"][i : i + 1]) for i in range(2)] * 2
    dsts = [convt.Image(np.zeros((1, 4, 8, 6), np.float32)) for _ in xs]
    states = fwd.result_state_batch(xs, destination_images=dsts)
    assert isinstance(states, list) and len(states) == 4
    assert all(s is states[0] for s in states) and not states[0].is_temporary

    cb = convt.CommandBuffer(device)
    tmps = fwd.temporary_result_state_batch(cb, xs, destination_images=dsts)
    assert len(tmps) == 4 and all(s is tmps[0] for s in tmps) and tmps[0].is_temporary
    outs, enc_states = fwd.encode_batch(cb, xs, destination_images=dsts, destination_states=True)
    assert len(outs) == 4 and all(o is d for o, d in zip(outs, dsts))
    assert len(enc_states) == 4 and all(s is enc_states[0] for s in enc_states)
    assert enc_states[0] is not states[0] and not enc_states[0].is_temporary
    _, tmp_states = fwd.encode_batch(
        cb,
        xs,
        destination_images=dsts,
        destination_states=True,
        destination_state_is_temporary=True,
    )
    assert all(s is tmp_states[0] for s in tmp_states) and tmp_states[0].is_temporary
    cb.commit()
    cb.wait_until_completed()
    assert not tmps[0].is_valid and not tmp_states[0].is_valid and enc_states[0].is_valid


# ---------------------------------------------------------------------------------------------
# Geometry snapshot
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [R.SIZE_SAME, R.SIZE_FULL, R.SIZE_VALID_ONLY | 12])
def test_forward_encode_with_state_auto_sizing(
    device: Any, rng: np.random.Generator, method: int
) -> None:
    p = problem(rng)
    fwd, grad = pair(device, p)
    fwd.padding = convt.Padding(method)
    x_img = convt.Image(p["x"])
    out, state = run_encoded(device, lambda cb: fwd.encode(cb, x_img, destination_state=True))
    (hd, ty), (wd, tx) = (
        R.transpose_offset(method, 4, 2, 3, "y"),
        R.transpose_offset(method, 5, 1, 2, "x"),
    )
    assert (out.height, out.width, out.feature_channels) == (hd, wd, 4)
    assert kernel_T(fwd) == (ty, tx)
    assert state.convolution_transpose is fwd
    assert not state.is_temporary and state.is_valid
    assert state.offset == tuple(fwd.offset)
    assert (state.kernel_offset_x, state.kernel_offset_y) == (
        fwd.kernel_offset_x,
        fwd.kernel_offset_y,
    )
    assert (state.offset[0], state.kernel_offset_x) == R.split(tx, 1)
    assert (state.offset[1], state.kernel_offset_y) == R.split(ty, 2)
    assert state.clip_rect == fwd.clip_rect
    assert (state.source_width, state.source_height) == (5, 4)
    assert (state.destination_width, state.destination_height) == (wd, hd)
    assert not state.gradient_for_weights.any()
    dy = rng.uniform(-1, 1, (2, 4, hd, wd)).astype(np.float32)
    dx = run_encoded(device, lambda cb: grad.encode(cb, convt.Image(dy), x_img, state))
    dx_ref, dw_ref, _ = R.conv_transpose_mps_backward(dy, p["x"], p["w"], STRIDE, 1, 1, (ty, tx))
    assert_close(dx.array, dx_ref, FP32_TOL, "dX")
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "dW")


def test_state_is_a_snapshot_of_the_manual_geometry(device: Any, rng: np.random.Generator) -> None:
    p = problem(rng)
    fwd, grad = pair(device, p)
    fwd.offset = (1, -1, 0)
    fwd.kernel_offset_x, fwd.kernel_offset_y = -2, 3
    clip = convt.Region(1, 2, 0, 4, 5, 2)
    fwd.clip_rect = clip
    x_img, dst, dy_img = images(p)
    out, state = run_encoded(
        device, lambda cb: fwd.encode(cb, x_img, destination_image=dst, destination_state=True)
    )
    assert out is dst
    assert state.offset == (1, -1, 0)
    assert (state.kernel_offset_x, state.kernel_offset_y) == (-2, 3)
    assert state.clip_rect == clip
    assert (state.destination_width, state.destination_height) == (6, 8)
    assert (state.source_width, state.source_height) == (5, 4)
    T = (-1 * 2 + 3, 1 * 1 - 2)
    # change the kernel afterwards: the state keeps the geometry it was created with
    fwd.offset = (0, 0, 0)
    fwd.kernel_offset_x = fwd.kernel_offset_y = 0
    fwd.clip_rect = convt.Region.no_clip()
    assert state.offset == (1, -1, 0) and state.kernel_offset_y == 3
    dx = run_encoded(device, lambda cb: grad.encode(cb, dy_img, x_img, state))
    rclip = (1, 2, 0, 4, 5, 2)
    dx_ref, dw_ref, db_ref = reference_gradients(p, T, clip=rclip)
    assert_close(dx.array, dx_ref, FP32_TOL, "dX with the snapshot geometry")
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "dW with the snapshot geometry")
    assert_close(state.gradient_for_biases, db_ref, FP32_TOL, "dB with the snapshot geometry")
    other = reference_gradients(p, (0, 0))[1]
    assert np.max(np.abs(other - dw_ref)) > 1e-3  # the geometry matters


FORWARD_STATE_FIELDS = (
    "source_width",
    "source_height",
    "kernel_width",
    "kernel_height",
    "stride_x",
    "stride_y",
    "offset_x",
    "offset_y",
    "destination_width",
    "destination_height",
)


def assert_same_forward_state(got: Any, want: Any) -> None:
    """The state's ``convolution`` is the forward state given at creation (the object itself or
    an equal copy)."""
    assert isinstance(got, convt.ConvolutionGradientState)
    for name in FORWARD_STATE_FIELDS:
        assert getattr(got, name) == getattr(want, name), name


def test_convolution_property(device: Any, rng: np.random.Generator) -> None:
    p = problem(rng)
    fwd, _ = pair(device, p)
    x_img, dst, _ = images(p)
    state = fwd.result_state(x_img, destination_image=dst)
    with pytest.raises(ValueError, match="convolution"):
        _ = state.convolution
    # the autoencoder link: forward conv with stride (2, 1), kernel 2 x 3 ... source 8 x 5
    fstate = convt.ConvolutionGradientState.for_forward(5, 8, 2, 3, stride_x=1, stride_y=2)
    assert (fstate.destination_width, fstate.destination_height) == (5, 4)
    out, state2 = run_encoded(
        device,
        lambda cb: fwd.encode(cb, x_img, convolution_gradient_state=fstate, destination_state=True),
    )
    assert_same_forward_state(state2.convolution, fstate)
    assert (out.height, out.width) == (8, 5)
    assert (state2.destination_width, state2.destination_height) == (5, 8)
    state3 = fwd.result_state(x_img, convolution_gradient_state=fstate, destination_image=dst)
    assert_same_forward_state(state3.convolution, fstate)
    state4 = fwd.result_state_batch([x_img], destination_images=[dst])[0]
    with pytest.raises(ValueError, match="convolution"):
        _ = state4.convolution


# ---------------------------------------------------------------------------------------------
# Export / reload of weights and biases
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_weights", ["float16", "float32"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_export_gives_prepared_weights(
    device: Any, rng: np.random.Generator, kernel_weights: str, with_bias: bool
) -> None:
    p = problem(rng)
    bias = p["b"] if with_bias else None
    fwd, grad = build_transpose_pair(
        device, p["w"], bias, stride=STRIDE, kernel_weights_dtype=kernel_weights
    )
    w_ref, b_ref = R.prepare_weights(p["w"], bias, None, kernel_weights)
    for kernel in (fwd, grad):
        state = run_encoded(device, lambda cb, k=kernel: k.export_weights_and_biases(cb))
        assert isinstance(state, convt.WeightsAndBiasesState) and not state.is_temporary
        np.testing.assert_array_equal(W(state, p["w"].shape), w_ref.astype(np.float32))
        expected_bias = np.zeros(4) if b_ref is None else b_ref
        np.testing.assert_array_equal(state.biases, expected_bias.astype(np.float32))


def test_export_includes_batch_norm_folding(device: Any, rng: np.random.Generator) -> None:
    p = problem(rng)
    f = np.float32
    bn = R.BatchNorm(
        mean=rng.uniform(-0.5, 0.5, 4).astype(f),
        variance=rng.uniform(0.5, 2.0, 4).astype(f),
        gamma=rng.uniform(0.5, 1.5, 4).astype(f),
        beta=rng.uniform(-0.5, 0.5, 4).astype(f),
        epsilon=1e-3,
    )
    for kernel_weights, tol in (("float32", FP32_TOL), ("float16", FP16_TOL)):
        fwd, _ = build_transpose_pair(
            device, p["w"], None, stride=STRIDE, bn=bn, kernel_weights_dtype=kernel_weights
        )
        state = run_encoded(device, lambda cb, k=fwd: k.export_weights_and_biases(cb))
        w_ref, b_ref = R.prepare_weights(p["w"], None, bn, kernel_weights)
        assert_close(W(state, w_ref.shape), w_ref, tol, f"BN-folded W' ({kernel_weights})")
        assert_close(state.biases, b_ref, FP32_TOL, f"BN bias' ({kernel_weights})")
        if kernel_weights == "float16":  # every exported weight is an fp16 value
            np.testing.assert_array_equal(state.weights.astype(np.float16), state.weights)


@pytest.mark.parametrize("kernel_weights", ["float16", "float32"])
def test_reload_matches_a_kernel_built_from_the_new_weights(
    device: Any, rng: np.random.Generator, kernel_weights: str
) -> None:
    p = problem(rng)
    fwd, grad = build_transpose_pair(
        device, p["w"], p["b"], stride=STRIDE, kernel_weights_dtype=kernel_weights
    )
    w2 = rng.uniform(-0.5, 0.5, p["w"].shape).astype(np.float32)
    b2 = rng.uniform(-0.5, 0.5, 4).astype(np.float32)
    fresh_fwd, fresh_grad = build_transpose_pair(
        device, w2, b2, stride=STRIDE, kernel_weights_dtype=kernel_weights
    )
    x_img, _, dy_img = images(p)

    def run(f: Any, g: Any, reload: bool) -> tuple[np.ndarray, np.ndarray]:
        dst = convt.Image(np.zeros(p["dy"].shape, np.float32))
        keep = []  # (test_command_buffer_keeps_encoded_objects_alive checks dropping them)

        def encode(cb: Any) -> Any:
            if reload:
                keep.append(convt.WeightsAndBiasesState(w2, b2))
                f.reload_weights_and_biases(cb, keep[-1])
                g.reload_weights_and_biases(cb, keep[-1])
            _, state = f.encode(cb, x_img, destination_image=dst, destination_state=True)
            keep.append(state)
            return g.encode(cb, dy_img, x_img, state)

        dx = run_encoded(device, encode)
        return dst.array.copy(), dx.array.copy()

    before = run(fwd, grad, reload=False)
    after = run(fwd, grad, reload=True)
    fresh = run(fresh_fwd, fresh_grad, reload=False)
    np.testing.assert_array_equal(after[0], fresh[0], "forward after reload")
    np.testing.assert_array_equal(after[1], fresh[1], "dX after reload")
    assert not np.array_equal(before[0], after[0])
    w_ref, b_ref = R.prepare_weights(w2, b2, None, kernel_weights)
    ref = R.conv_transpose_mps(p["x"], w_ref, b_ref, stride=STRIDE, T=0, dst_hw=(8, 6))
    assert_close(after[0], ref, FP32_TOL, "forward after reload vs oracle")
    dx_ref = R.conv_transpose_mps_backward(p["dy"], p["x"], w_ref, STRIDE, 1, 1, 0, (4, 5))[0]
    assert_close(after[1], dx_ref, FP32_TOL, "dX after reload vs oracle")
    # a later export returns the reloaded weights, rounded to the kernel's weight type
    state = run_encoded(device, lambda cb: fwd.export_weights_and_biases(cb))
    np.testing.assert_array_equal(W(state, w_ref.shape), w_ref.astype(np.float32))
    np.testing.assert_array_equal(state.biases, b2)


def test_export_then_reload_round_trip(device: Any, rng: np.random.Generator) -> None:
    """Export from one kernel, edit the state's writable arrays, reload into another."""
    p = problem(rng)
    fwd, grad = pair(device, p)
    state = run_encoded(device, lambda cb: fwd.export_weights_and_biases(cb))
    assert state.weights.flags.writeable and state.biases.flags.writeable
    state.weights[...] *= 2.0
    state.biases[...] = 0.25
    run_encoded(device, lambda cb: fwd.reload_weights_and_biases(cb, state))
    again = run_encoded(device, lambda cb: fwd.export_weights_and_biases(cb))
    np.testing.assert_array_equal(W(again, p["w"].shape), 2.0 * p["w"])
    np.testing.assert_array_equal(again.biases, np.full(4, 0.25, np.float32))
    x_img = convt.Image(p["x"])
    out = run_encoded(device, lambda cb: fwd.encode(cb, x_img))
    ref = R.conv_transpose_mps(
        p["x"], 2.0 * p["w"], np.full(4, 0.25), stride=STRIDE, T=kernel_T(fwd), dst_hw=(7, 5)
    )
    assert_close(out.array, ref, FP32_TOL, "forward with the edited weights")


def test_weights_state_constructor(device: Any) -> None:
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    state = convt.WeightsAndBiasesState(w)
    np.testing.assert_array_equal(W(state, w.shape), w)
    assert state.biases is None or not np.any(state.biases)
    assert not state.is_temporary
    state2 = convt.WeightsAndBiasesState(w, np.ones(2, np.float32))
    np.testing.assert_array_equal(state2.biases, [1, 1])


def _recording_source(desc: Any, w: np.ndarray, b: np.ndarray | None, **hooks: Any) -> Any:
    """A Python DataSource over mutable arrays; ``hooks`` become methods (update hooks)."""

    class Recording(convt.DataSource):
        def __init__(self) -> None:
            super().__init__()
            self.w, self.b, self.calls = w, b, []

        def descriptor(self) -> Any:
            return desc

        def data_type(self) -> Any:
            return convt.DataType.float32

        def weights(self) -> np.ndarray:
            self.calls.append("weights")
            return self.w

        def bias_terms(self) -> np.ndarray | None:
            return self.b

        def load(self) -> bool:
            self.calls.append("load")
            return True

        def purge(self) -> None:
            self.calls.append("purge")

        def label(self) -> str:
            return "recording"

        def kernel_weights_data_type(self) -> Any:
            return convt.DataType.float32

    for name, fn in hooks.items():
        setattr(Recording, name, fn)
    return Recording()


def _descriptor(out_ch: int, k_h: int, k_w: int, in_ch: int, stride: tuple[int, int]) -> Any:
    desc = convt.ConvolutionDescriptor(k_w, k_h, in_ch, out_ch)
    desc.stride_in_pixels_y, desc.stride_in_pixels_x = stride
    return desc


def test_reload_from_mutated_data_source(device: Any, rng: np.random.Generator) -> None:
    p = problem(rng)
    w, b = p["w"].copy(), p["b"].copy()
    source = _recording_source(_descriptor(4, 3, 2, 3, STRIDE), w, b)
    fwd = convt.ConvolutionTranspose(device, source)
    grad = convt.ConvolutionTransposeGradient(device, source)
    x_img, dst, dy_img = images(p)
    w2 = rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
    w[...] = w2  # mutate the array the data source hands out
    source.b = b * -2.0  # and replace the bias array
    before = run_encoded(device, lambda cb: fwd.encode(cb, x_img, destination_image=dst))
    old = R.conv_transpose_mps(p["x"], p["w"], p["b"], stride=STRIDE, T=0, dst_hw=(8, 6))
    assert_close(before.array, old, FP32_TOL, "kernels keep their copy until reloaded")
    source.calls.clear()
    fwd.reload_weights_and_biases_from_data_source()
    grad.reload_weights_and_biases_from_data_source()
    assert source.calls.count("load") == 2 and source.calls.count("purge") == 2
    assert source.calls.count("weights") >= 2
    out = run_encoded(device, lambda cb: fwd.encode(cb, x_img, destination_image=dst))
    new = R.conv_transpose_mps(p["x"], w2, -2.0 * p["b"], stride=STRIDE, T=0, dst_hw=(8, 6))
    assert_close(out.array, new, FP32_TOL, "forward after reload from the data source")
    state = fwd.result_state(x_img, destination_image=dst)
    dx = run_encoded(device, lambda cb: grad.encode(cb, dy_img, x_img, state))
    dx_ref = R.conv_transpose_mps_backward(p["dy"], p["x"], w2, STRIDE, 1, 1, 0, (4, 5))[0]
    assert_close(dx.array, dx_ref, FP32_TOL, "dX after reload from the data source")


# ---------------------------------------------------------------------------------------------
# OptimizerSGD
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr, wd", [(0.1, 0.0), (0.03, 0.5), (1.0, 0.0)])
def test_optimizer_sgd(device: Any, rng: np.random.Generator, lr: float, wd: float) -> None:
    p = problem(rng)
    fwd, grad = pair(device, p)
    x_img, dst, dy_img = images(p)
    state = fwd.result_state(x_img, destination_image=dst)
    run_encoded(device, lambda cb: grad.encode(cb, dy_img, x_img, state))
    _, dw_ref, db_ref = reference_gradients(p, (0, 0))
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "dW")
    w0 = rng.uniform(-1, 1, p["w"].shape).astype(np.float32)
    b0 = rng.uniform(-1, 1, 4).astype(np.float32)
    ws = convt.WeightsAndBiasesState(w0, b0)
    opt = convt.OptimizerSGD(lr, weight_decay=wd)
    cb = convt.CommandBuffer(device)
    opt.encode(cb, state, ws)
    np.testing.assert_array_equal(W(ws, w0.shape), w0)  # nothing happens before commit
    cb.commit()
    cb.wait_until_completed()
    assert cb.status == "completed"
    assert_close(W(ws, w0.shape), sgd_expected(w0, dw_ref, lr, wd), FP32_TOL, "SGD weights")
    assert_close(ws.biases, b0 - lr * db_ref, FP32_TOL, "SGD biases (no weight decay)")
    # the gradient state is not changed by the update
    assert_close(state.gradient_for_weights, dw_ref, FP32_TOL, "dW after the update")


# ---------------------------------------------------------------------------------------------
# apply_data_source_update: GPU-style and CPU-style hooks, a tiny SGD loop
# ---------------------------------------------------------------------------------------------

LOOP_LR = 1.5
LOOP_STEPS = 15


def loop_problem(rng: np.random.Generator) -> dict[str, np.ndarray]:
    x = rng.uniform(-1, 1, (4, 3, 6, 6)).astype(np.float32)
    teacher_w = rng.uniform(-0.5, 0.5, (2, 3, 3, 3)).astype(np.float32)
    teacher_b = rng.uniform(-0.5, 0.5, 2).astype(np.float32)
    return {
        "x": x,
        "target": R.conv_transpose_mps(x, teacher_w, teacher_b, stride=2, T=0, dst_hw=(11, 11)),
        "w0": rng.uniform(-0.5, 0.5, (2, 3, 3, 3)).astype(np.float32),
        "b0": np.zeros(2, np.float32),
    }


def simulated_losses(lp: dict[str, np.ndarray]) -> list[float]:
    """The same SGD loop in float64 with the oracle."""
    w, b = lp["w0"].astype(np.float64), lp["b0"].astype(np.float64)
    losses = []
    for _ in range(LOOP_STEPS):
        y = R.conv_transpose_mps(lp["x"], w, b, stride=2, T=0, dst_hw=(11, 11))
        losses.append(0.5 * float(np.mean((y - lp["target"]) ** 2)))
        _, dw, db = R.conv_transpose_mps_backward(
            (y - lp["target"]) / y.size, lp["x"], w, 2, 1, 1, 0, (6, 6)
        )
        w, b = w - LOOP_LR * dw, b - LOOP_LR * db
    return losses


def train(device: Any, lp: dict[str, np.ndarray], source: Any) -> list[float]:
    """SGD through apply_data_source_update; the data source's hooks do the update."""
    fwd = convt.ConvolutionTranspose(device, source)
    grad = convt.ConvolutionTransposeGradient(device, source)
    grad.gradient_option = convt.GradientOption.weights_and_bias
    x_img = convt.Image(lp["x"])
    losses = []
    for _ in range(LOOP_STEPS):
        out, state = run_encoded(device, lambda cb: fwd.encode(cb, x_img, destination_state=True))
        assert (out.height, out.width) == (11, 11) and kernel_T(fwd) == (0, 0)
        diff = out.array.astype(np.float64) - lp["target"]
        losses.append(0.5 * float(np.mean(diff**2)))
        dy = convt.Image((diff / diff.size).astype(np.float32))
        cb = convt.CommandBuffer(device)
        assert grad.encode(cb, dy, x_img, state) is None
        convt.apply_data_source_update(cb, fwd, state, grad)
        if cb.status == "not_enqueued":
            cb.commit()
        cb.wait_until_completed()
        assert cb.status == "completed" and cb.error is None
        # both kernels now hold the same updated weights
        wf = run_encoded(device, lambda c: fwd.export_weights_and_biases(c))
        wg = run_encoded(device, lambda c: grad.export_weights_and_biases(c))
        np.testing.assert_array_equal(wf.weights, wg.weights)
        np.testing.assert_array_equal(wf.biases, wg.biases)
    return losses


def check_losses(losses: list[float], lp: dict[str, np.ndarray]) -> None:
    sim = simulated_losses(lp)
    np.testing.assert_allclose(losses, sim, rtol=1e-3, err_msg="loss curve differs from the oracle")
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.3 * losses[0], losses


def test_apply_update_gpu_style_hook(device: Any, rng: np.random.Generator) -> None:
    lp = loop_problem(rng)
    seen: list[Any] = []

    def update_with_command_buffer(self: Any, cb: Any, gradient_state: Any, source_state: Any):
        assert isinstance(source_state, convt.WeightsAndBiasesState)
        seen.append(gradient_state)
        convt.OptimizerSGD(LOOP_LR).encode(cb, gradient_state, source_state)
        return source_state

    source = _recording_source(
        _descriptor(2, 3, 3, 3, (2, 2)),
        lp["w0"].copy(),
        lp["b0"].copy(),
        update_with_command_buffer=update_with_command_buffer,
    )
    losses = train(device, lp, source)
    assert len(seen) == LOOP_STEPS
    check_losses(losses, lp)
    np.testing.assert_array_equal(source.w, lp["w0"])  # the GPU path never touches the source


def test_apply_update_gpu_hook_first_step_exact(device: Any, rng: np.random.Generator) -> None:
    """One step: the source state is the kernel's W'; the reloaded weights are W' - lr*dW."""
    lp = loop_problem(rng)
    captured: list[Any] = []

    def update_with_command_buffer(self: Any, cb: Any, gradient_state: Any, source_state: Any):
        assert isinstance(source_state, convt.WeightsAndBiasesState)
        captured.append(gradient_state)
        convt.OptimizerSGD(0.5).encode(cb, gradient_state, source_state)
        return source_state

    source = _recording_source(
        _descriptor(2, 3, 3, 3, (2, 2)),
        lp["w0"].copy(),
        lp["b0"].copy(),
        update_with_command_buffer=update_with_command_buffer,
    )
    fwd = convt.ConvolutionTranspose(device, source)
    grad = convt.ConvolutionTransposeGradient(device, source)
    x_img = convt.Image(lp["x"])
    dy = rng.uniform(-1, 1, (4, 2, 11, 11)).astype(np.float32)
    _, state = run_encoded(device, lambda cb: fwd.encode(cb, x_img, destination_state=True))

    def encode(cb: Any) -> None:
        grad.encode(cb, convt.Image(dy), x_img, state)
        convt.apply_data_source_update(cb, fwd, state, grad)

    run_encoded(device, encode)
    _, dw_ref, db_ref = R.conv_transpose_mps_backward(dy, lp["x"], lp["w0"], 2, 1, 1, 0, (6, 6))
    new_w = sgd_expected(lp["w0"], dw_ref, 0.5)
    assert len(captured) == 1
    for kernel in (fwd, grad):
        exported = run_encoded(device, lambda cb, k=kernel: k.export_weights_and_biases(cb))
        assert_close(W(exported, new_w.shape), new_w, FP32_TOL, "reloaded weights")
        assert_close(exported.biases, -0.5 * db_ref, FP32_TOL, "reloaded biases")


def test_apply_update_cpu_style_hook(device: Any, rng: np.random.Generator) -> None:
    lp = loop_problem(rng)
    calls: list[int] = []

    def update_with_gradient_state(self: Any, gradient_state: Any, source_state: Any) -> bool:
        calls.append(1)
        self.w = (self.w - LOOP_LR * gradient_state.gradient_for_weights).astype(np.float32)
        self.b = (self.b - LOOP_LR * gradient_state.gradient_for_biases).astype(np.float32)
        return True

    source = _recording_source(
        _descriptor(2, 3, 3, 3, (2, 2)),
        lp["w0"].copy(),
        lp["b0"].copy(),
        update_with_gradient_state=update_with_gradient_state,
    )
    losses = train(device, lp, source)
    assert len(calls) == LOOP_STEPS
    check_losses(losses, lp)
    assert not np.array_equal(source.w, lp["w0"])


def test_apply_update_cpu_hook_sees_finished_gradients(
    device: Any, rng: np.random.Generator
) -> None:
    """The CPU hook runs after the command buffer completed: it reads the right gradients;
    returning True reloads both kernels from the data source, False reloads nothing."""
    lp = loop_problem(rng)
    log: list[str] = []
    result = {"value": True}

    def update_with_gradient_state(self: Any, gradient_state: Any, source_state: Any) -> bool:
        log.append("cpu")
        self.seen_dw = np.array(gradient_state.gradient_for_weights)
        self.seen_db = np.array(gradient_state.gradient_for_biases)
        self.w = np.zeros_like(self.w)
        self.b = np.full_like(self.b, 0.5)
        return result["value"]

    source = _recording_source(
        _descriptor(2, 3, 3, 3, (2, 2)),
        lp["w0"].copy(),
        lp["b0"].copy(),
        update_with_gradient_state=update_with_gradient_state,
    )
    fwd = convt.ConvolutionTranspose(device, source)
    grad = convt.ConvolutionTransposeGradient(device, source)
    x_img = convt.Image(lp["x"])
    dy = rng.uniform(-1, 1, (4, 2, 11, 11)).astype(np.float32)
    _, dw_ref, db_ref = R.conv_transpose_mps_backward(dy, lp["x"], lp["w0"], 2, 1, 1, 0, (6, 6))

    for value in (False, True):
        result["value"] = value
        log.clear()
        _, state = run_encoded(device, lambda cb: fwd.encode(cb, x_img, destination_state=True))
        cb = convt.CommandBuffer(device)
        grad.encode(cb, convt.Image(dy), x_img, state)
        convt.apply_data_source_update(cb, fwd, state, grad)
        assert cb.status == "completed", "the CPU path commits and waits"
        assert log == ["cpu"]
        assert_close(source.seen_dw, dw_ref, FP32_TOL, "dW seen by the CPU hook")
        assert_close(source.seen_db, db_ref, FP32_TOL, "dB seen by the CPU hook")
        exported = run_encoded(device, lambda c: fwd.export_weights_and_biases(c))
        if value:  # reloaded from the data source
            np.testing.assert_array_equal(W(exported, lp["w0"].shape), np.zeros_like(lp["w0"]))
            np.testing.assert_array_equal(exported.biases, [0.5, 0.5])
        else:
            np.testing.assert_array_equal(W(exported, lp["w0"].shape), lp["w0"])
        source.w = lp["w0"].copy()  # restore for the next round (kernels reload only on True)
        source.b = lp["b0"].copy()


def test_apply_update_gpu_hook_none_falls_back_to_cpu_hook(
    device: Any, rng: np.random.Generator
) -> None:
    """Contract: GPU-style hook first; when it returns None the CPU-style hook (if any) runs after
    the command buffer was committed and waited, and True reloads both kernels. (Spec §2.3 calls
    nil "no update"; the contract's fall-through is what is tested.)"""
    lp = loop_problem(rng)
    log: list[str] = []

    def update_with_command_buffer(self: Any, cb: Any, gradient_state: Any, source_state: Any):
        log.append("gpu")
        return None

    def update_with_gradient_state(self: Any, gradient_state: Any, source_state: Any) -> bool:
        log.append("cpu")
        self.seen_dw = np.array(gradient_state.gradient_for_weights)
        self.w = np.zeros_like(self.w)
        return True

    source = _recording_source(
        _descriptor(2, 3, 3, 3, (2, 2)),
        lp["w0"].copy(),
        lp["b0"].copy(),
        update_with_command_buffer=update_with_command_buffer,
        update_with_gradient_state=update_with_gradient_state,
    )
    fwd = convt.ConvolutionTranspose(device, source)
    grad = convt.ConvolutionTransposeGradient(device, source)
    x_img = convt.Image(lp["x"])
    dy = rng.uniform(-1, 1, (4, 2, 11, 11)).astype(np.float32)
    _, state = run_encoded(device, lambda cb: fwd.encode(cb, x_img, destination_state=True))
    cb = convt.CommandBuffer(device)
    grad.encode(cb, convt.Image(dy), x_img, state)
    convt.apply_data_source_update(cb, fwd, state, grad)
    assert log == ["gpu", "cpu"]
    assert cb.status == "completed", "the CPU path commits and waits"
    _, dw_ref, _ = R.conv_transpose_mps_backward(dy, lp["x"], lp["w0"], 2, 1, 1, 0, (6, 6))
    assert_close(source.seen_dw, dw_ref, FP32_TOL, "dW seen by the CPU hook")
    for kernel in (fwd, grad):
        exported = run_encoded(device, lambda c, k=kernel: k.export_weights_and_biases(c))
        np.testing.assert_array_equal(W(exported, lp["w0"].shape), np.zeros_like(lp["w0"]))


def test_apply_update_without_hooks_changes_nothing(device: Any, rng: np.random.Generator) -> None:
    """A data source with no update hook: nothing is updated (a TypeError naming the hooks is an
    acceptable answer too)."""
    p = problem(rng)
    source = make_data_source(p["w"], p["b"], stride=STRIDE, kernel_weights_dtype="float32")
    fwd = convt.ConvolutionTranspose(device, source)
    grad = convt.ConvolutionTransposeGradient(device, source)
    x_img, dst, dy_img = images(p)
    state = fwd.result_state(x_img, destination_image=dst)
    cb = convt.CommandBuffer(device)
    grad.encode(cb, dy_img, x_img, state)
    try:
        convt.apply_data_source_update(cb, fwd, state, grad)
    except TypeError as e:
        assert "update_with" in str(e)
    if cb.status == "not_enqueued":
        cb.commit()
    cb.wait_until_completed()
    exported = run_encoded(device, lambda c: fwd.export_weights_and_biases(c))
    np.testing.assert_array_equal(W(exported, p["w"].shape), p["w"])


LIFETIME_SCRIPT = """
import gc, sys
import numpy as np
import convt
sys.path.insert(0, {tests!r})
from _helpers import build_transpose_pair
dev = [d for d in convt.devices() if d.kind == {kind!r}][0]
rng = np.random.default_rng(0)
w = rng.uniform(-0.5, 0.5, (4, 3, 2, 3)).astype(np.float32)
x = convt.Image(rng.uniform(-1, 1, (2, 3, 4, 5)).astype(np.float32))
dy = convt.Image(rng.uniform(-1, 1, (2, 4, 8, 6)).astype(np.float32))
fwd, grad = build_transpose_pair(dev, w, None, stride=(2, 1), kernel_weights_dtype="float32")
for step in range(20):
    cb = convt.CommandBuffer(dev)
    dst = convt.Image(np.zeros((2, 4, 8, 6), np.float32))
    fwd.reload_weights_and_biases(cb, convt.WeightsAndBiasesState(w * 0.5, None))
    _, state = fwd.encode(cb, x, destination_image=dst, destination_state=True)
    grad.encode(cb, dy, x, state)
    opt_target = convt.WeightsAndBiasesState(w.copy(), np.zeros(4, np.float32))
    convt.OptimizerSGD(0.1).encode(cb, state, opt_target)
    del state, opt_target, dst  # only the command buffer refers to them now
    gc.collect()
    junk = [np.ones(64, np.float32) for _ in range(200)]  # reuse the freed memory
    cb.commit()
    cb.wait_until_completed()
    assert cb.status == "completed", cb.error
print("ok")
"""


def test_command_buffer_keeps_encoded_objects_alive(device: Any) -> None:
    """States, weight states and images encoded into a command buffer must stay valid until it
    completes even when Python drops its references (MPS command buffers retain their
    resources). Run in a subprocess so that a use-after-free fails this test, not the session."""
    import os
    import subprocess
    import sys

    tests = os.path.dirname(os.path.abspath(__file__))
    script = LIFETIME_SCRIPT.format(tests=tests, kind=device.kind)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, (
        f"exit code {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    )
