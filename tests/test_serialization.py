"""Serialization (spec §7.4, contract "Serialization"): every listed property survives bytes,
file and pickle round trips with bitwise identical results; truncated, corrupted and foreign
bytes raise ValueError and never crash (hypothesis fuzz)."""

from __future__ import annotations

import pickle
from typing import Any, Callable

import convt
import numpy as np
import pytest
import reference as R
from _helpers import DESCRIPTOR_FIELDS, encode_data_gradient, make_data_source, poison, run_encoded
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

PREFIX = "convt serialized data"

# ---------------------------------------------------------------------------------------------
# A layer with every property away from its default
# ---------------------------------------------------------------------------------------------

O_CH, KH, KW, IG, G = 6, 3, 2, 2, 2  # I = 4
I_CH = IG * G
STRIDE, DILATION = (2, 3), (1, 2)  # (y, x)


def configured_pair(device: Any, kernel_weights: str) -> tuple[Any, Any]:
    rng = np.random.default_rng(99)
    f = np.float32
    w = rng.uniform(-0.5, 0.5, (O_CH, KH, KW, IG)).astype(f)
    b = rng.uniform(-0.5, 0.5, O_CH).astype(f)
    bn = R.BatchNorm(
        mean=rng.uniform(-0.5, 0.5, O_CH).astype(f),
        variance=rng.uniform(0.5, 2.0, O_CH).astype(f),
        gamma=rng.uniform(0.5, 1.5, O_CH).astype(f),
        beta=rng.uniform(-0.5, 0.5, O_CH).astype(f),
        epsilon=1e-3,
    )
    neuron = R.Neuron("prelu", data=rng.uniform(-0.5, 0.5, O_CH).astype(f))
    source = make_data_source(
        w,
        b,
        stride=STRIDE,
        dilation=DILATION,
        groups=G,
        neuron=neuron,
        bn=bn,
        kernel_weights_dtype=kernel_weights,
        label="decoder.up1",
    )
    fwd = convt.ConvolutionTranspose(device, source)
    fwd.kernel_offset_x, fwd.kernel_offset_y = 1, -2
    fwd.offset = (-1, 2, 1)
    fwd.clip_rect = convt.Region(1, 2, 1, 7, 6, 1)
    fwd.padding = convt.Padding(
        convt.PaddingMethod.SIZE_FULL
        | convt.PaddingMethod.ALIGN_TOP_LEFT
        | convt.PaddingMethod.ADD_REMAINDER_TO_BOTTOM_LEFT
    )
    if kernel_weights == "float16":
        fwd.accumulator_precision = convt.AccumulatorPrecision.half
    fwd.source_feature_channel_offset = 1
    fwd.source_feature_channel_max_count = 5
    fwd.destination_feature_channel_offset = 2
    grad = convt.ConvolutionTransposeGradient(device, source)
    grad.gradient_option = convt.GradientOption.weights_and_bias
    return fwd, grad


FORWARD_PROPERTIES = (
    "label",
    "kernel_offset_x",
    "kernel_offset_y",
    "offset",
    "clip_rect",
    "edge_mode",
    "accumulator_precision",
    "source_feature_channel_offset",
    "source_feature_channel_max_count",
    "destination_feature_channel_offset",
    "weights_data_type",
    "input_feature_channels",
    "output_feature_channels",
    "groups",
    "kernel_width",
    "kernel_height",
    "stride_in_pixels_x",
    "stride_in_pixels_y",
    "dilation_rate_x",
    "dilation_rate_y",
)
GRADIENT_PROPERTIES = (
    "label",
    "gradient_option",
    "weights_data_type",
    "source_gradient_feature_channels",
    "source_image_feature_channels",
)


def round_trip(how: str, kernel: Any, device: Any, tmp_path: Any) -> Any:
    cls = type(kernel)
    if how == "bytes":
        data = kernel.to_bytes()
        assert isinstance(data, bytes) and len(data) > 0
        return cls.from_bytes(data, device=device)
    if how == "file":
        path = str(tmp_path / "layer.convt")
        kernel.save(path)
        return cls.load(path, device=device)
    return pickle.loads(pickle.dumps(kernel))


def assert_same_properties(a: Any, b: Any, names: tuple[str, ...]) -> None:
    for name in names:
        assert getattr(a, name) == getattr(b, name), name


def assert_same_descriptor(a: Any, b: Any) -> None:
    da, db = a.descriptor, b.descriptor
    for name in DESCRIPTOR_FIELDS:
        assert getattr(da, name) == getattr(db, name), f"descriptor.{name}"
    na, nb = da.fused_neuron_descriptor, db.fused_neuron_descriptor
    assert na.type == nb.type == convt.NeuronType.prelu
    assert (na.a, na.b, na.c) == (nb.a, nb.b, nb.c)
    np.testing.assert_array_equal(np.asarray(na.data), np.asarray(nb.data))


def forward_results(device: Any, fwd: Any) -> np.ndarray:
    """Manual path with the kernel's stored geometry into a poisoned destination."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (3, 1 + I_CH + 1, 4, 5)).astype(np.float32)
    dst = poison(np.empty((2, 2 + O_CH + 1, 9, 11), np.float32))
    run_encoded(
        device, lambda cb: fwd.encode(cb, convt.Image(x), destination_image=convt.Image(dst))
    )
    return dst


def gradient_results(device: Any, fwd: Any, grad: Any) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, (3, 1 + I_CH + 1, 4, 5)).astype(np.float32)
    dy = rng.uniform(-1, 1, (2, 2 + O_CH + 1, 9, 11)).astype(np.float32)
    dst = convt.Image(np.zeros(dy.shape, np.float32))
    state = fwd.result_state(convt.Image(x), destination_image=dst)
    dx = encode_data_gradient(device, grad, dy, x, state)
    return dx, np.array(state.gradient_for_weights), np.array(state.gradient_for_biases)


@pytest.mark.parametrize("how", ["bytes", "file", "pickle"])
@pytest.mark.parametrize("kernel_weights", ["float16", "float32"])
def test_round_trip(device: Any, tmp_path: Any, how: str, kernel_weights: str) -> None:
    fwd, grad = configured_pair(device, kernel_weights)
    fwd2 = round_trip(how, fwd, device, tmp_path)
    grad2 = round_trip(how, grad, device, tmp_path)
    assert type(fwd2) is type(fwd) and type(grad2) is type(grad)
    assert fwd2 is not fwd and grad2 is not grad
    assert fwd2.label == "decoder.up1"
    assert fwd2.weights_data_type == getattr(convt.DataType, kernel_weights)
    assert_same_properties(fwd, fwd2, FORWARD_PROPERTIES)
    assert fwd2.padding.padding_method == fwd.padding.padding_method == 0x20 | 1 | 8
    assert_same_descriptor(fwd, fwd2)
    assert_same_properties(grad, grad2, GRADIENT_PROPERTIES)
    assert grad2.gradient_option == convt.GradientOption.weights_and_bias

    np.testing.assert_array_equal(forward_results(device, fwd2), forward_results(device, fwd))
    assert np.isfinite(forward_results(device, fwd)).any()
    # weights and biases: exported W' and bias' are identical
    for a, b in ((fwd, fwd2), (grad, grad2)):
        ea = run_encoded(device, lambda cb, k=a: k.export_weights_and_biases(cb))
        eb = run_encoded(device, lambda cb, k=b: k.export_weights_and_biases(cb))
        np.testing.assert_array_equal(ea.weights, eb.weights)
        np.testing.assert_array_equal(ea.biases, eb.biases)
    for g in (grad, grad2):
        g.gradient_option = convt.GradientOption.all
    got = gradient_results(device, fwd2, grad2)
    want = gradient_results(device, fwd, grad)
    for name, a, b in zip(("dX", "dW", "dB"), got, want):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert np.abs(want[1]).max() > 0
    # auto-sizing after the load behaves identically too (it rewrites the offsets on both)
    x = convt.Image(np.random.default_rng(9).uniform(-1, 1, (1, 5, 3, 4)).astype(np.float32))
    for k in (fwd, fwd2):
        k.destination_feature_channel_offset = 0
        k.clip_rect = convt.Region.no_clip()
        k.offset = (0, 0, 0)
    a = run_encoded(device, lambda cb: fwd.encode(cb, x))
    b = run_encoded(device, lambda cb: fwd2.encode(cb, x))
    np.testing.assert_array_equal(a.array, b.array)
    assert (fwd.offset, fwd.kernel_offset_x) == (fwd2.offset, fwd2.kernel_offset_x)


def test_round_trip_default_and_clamp_edge_mode(device: Any, tmp_path: Any) -> None:
    w = np.ones((1, 1, 1, 1), np.float32)
    fwd = convt.ConvolutionTranspose(device, make_data_source(w))
    fwd2 = convt.ConvolutionTranspose.from_bytes(fwd.to_bytes(), device=device)
    assert_same_properties(fwd, fwd2, FORWARD_PROPERTIES)
    assert fwd2.clip_rect == convt.Region.no_clip()
    assert fwd2.padding.padding_method == fwd.padding.padding_method
    assert fwd2.descriptor.fused_neuron_descriptor is None or (
        fwd2.descriptor.fused_neuron_descriptor.type == convt.NeuronType.none
    )
    fwd.edge_mode = convt.EdgeMode.clamp
    fwd3 = round_trip("file", fwd, device, tmp_path)
    assert fwd3.edge_mode == convt.EdgeMode.clamp


def test_unpickling_keeps_the_device_kind(device: Any) -> None:
    fwd, grad = configured_pair(device, "float16")
    fwd2 = pickle.loads(pickle.dumps(fwd))
    assert fwd2.device.kind == device.kind
    grad2 = pickle.loads(pickle.dumps(grad))
    assert isinstance(grad2, convt.ConvolutionTransposeGradient)
    assert grad2.device.kind == device.kind


def test_from_bytes_rejects_wrong_types(device: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        convt.ConvolutionTranspose.from_bytes("not bytes", device=device)


# ---------------------------------------------------------------------------------------------
# Truncation at every length; foreign data
# ---------------------------------------------------------------------------------------------


def small_pair(device: Any) -> tuple[Any, Any]:
    w = np.arange(12, dtype=np.float32).reshape(2, 2, 1, 3) / 10.0
    source = make_data_source(w, np.array([0.5, -0.5], np.float32), stride=2)
    return convt.ConvolutionTranspose(device, source), convt.ConvolutionTransposeGradient(
        device, source
    )


def expect_value_error(load: Callable[[bytes], Any], data: bytes, what: str) -> None:
    with pytest.raises(ValueError) as info:
        load(data)
    assert str(info.value).startswith(PREFIX), f"{what}: message {info.value!s:.80}"


@pytest.mark.parametrize("kind", ["forward", "gradient"])
def test_truncated_at_every_length(device: Any, kind: str) -> None:
    fwd, grad = small_pair(device)
    kernel = fwd if kind == "forward" else grad
    cls = type(kernel)
    data = kernel.to_bytes()
    assert cls.from_bytes(data, device=device) is not None
    for length in range(len(data)):
        expect_value_error(lambda d: cls.from_bytes(d, device=device), data[:length], f"{length}")


FOREIGN = [
    b"",
    b"\x00",
    b"convt",
    b"\x89PNG\r\n\x1a\n" + bytes(64),
    pickle.dumps({"weights": [1, 2, 3]}),
    np.arange(100, dtype=np.float32).tobytes(),
    bytes(range(256)) * 4,
    b"\xff" * 1000,
]


@pytest.mark.parametrize("index", range(len(FOREIGN)))
def test_foreign_bytes(device: Any, index: int) -> None:
    for cls in (convt.ConvolutionTranspose, convt.ConvolutionTransposeGradient):
        expect_value_error(lambda d, c=cls: c.from_bytes(d, device=device), FOREIGN[index], "")


def test_load_missing_or_foreign_file(device: Any, tmp_path: Any) -> None:
    path = tmp_path / "foreign.bin"
    path.write_bytes(b"hello world" * 10)
    with pytest.raises(ValueError, match=f"^{PREFIX}"):
        convt.ConvolutionTranspose.load(str(path), device=device)
    with pytest.raises((OSError, ValueError)):
        convt.ConvolutionTranspose.load(str(tmp_path / "missing.convt"), device=device)


# ---------------------------------------------------------------------------------------------
# Fuzz: corrupted bytes either raise ValueError or load a kernel that runs without crashing
# ---------------------------------------------------------------------------------------------

_CACHE: dict[str, Any] = {}


def _blobs() -> dict[str, Any]:
    if not _CACHE:
        dev = convt.default_device()
        fwd, grad = small_pair(dev)
        x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 3, 3)).astype(np.float32)
        dst = convt.Image(np.zeros((1, 2, 6, 6), np.float32))
        _CACHE.update(
            device=dev,
            forward=fwd.to_bytes(),
            gradient=grad.to_bytes(),
            state=fwd.result_state(convt.Image(x), destination_image=dst),
            x=x,
        )
    return _CACHE


EXTREMES = [0, 1, 255, 2**15, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1]


@st.composite
def corrupted(draw: Any) -> tuple[str, bytes]:
    blobs = _blobs()
    kind = draw(st.sampled_from(["forward", "gradient"]))
    data = bytearray(blobs[kind])
    op = draw(
        st.sampled_from(
            ["flip", "bytes", "insert", "delete", "truncate", "integer", "splice", "foreign"]
        )
    )
    n = len(data)
    if op == "flip":
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, n - 1))] ^= 1 << draw(st.integers(0, 7))
    elif op == "bytes":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, n - 1))] = draw(st.integers(0, 255))
    elif op == "insert":
        pos = draw(st.integers(0, n))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    elif op == "delete":
        pos = draw(st.integers(0, n - 1))
        del data[pos : pos + draw(st.integers(1, 16))]
    elif op == "truncate":
        data = data[: draw(st.integers(0, n - 1))]
    elif op == "integer":  # an extreme value over a length/size/count field
        width = draw(st.sampled_from([1, 2, 4, 8]))
        pos = draw(st.integers(0, max(0, n - width)))
        value = draw(st.sampled_from(EXTREMES)) % (1 << (8 * width))
        data[pos : pos + width] = value.to_bytes(width, draw(st.sampled_from(["little", "big"])))
    elif op == "splice":  # the start of one kind's bytes with the end of the other's
        other = blobs["gradient" if kind == "forward" else "forward"]
        cut = draw(st.integers(0, n))
        data = data[:cut] + other[draw(st.integers(0, len(other))) :]
    else:
        data = bytearray(draw(st.binary(max_size=400)))
    return kind, bytes(data)


def _exercise(kind: str, kernel: Any) -> None:
    """Run a loaded kernel on small images (manual path: no auto-sizing allocation)."""
    blobs = _blobs()
    dev = blobs["device"]
    try:
        if kind == "forward":
            channels = min(kernel.source_feature_channel_offset + kernel.input_feature_channels, 64)
            out_ch = kernel.destination_feature_channel_offset + kernel.output_feature_channels
            x = np.ones((1, channels, 3, 3), np.float32)
            dst = np.zeros((1, min(out_ch, 64), 6, 6), np.float32)
            run_encoded(
                dev,
                lambda cb: kernel.encode(cb, convt.Image(x), destination_image=convt.Image(dst)),
            )
        else:
            dy = np.ones((1, 2, 6, 6), np.float32)
            run_encoded(
                dev,
                lambda cb: kernel.encode(
                    cb, convt.Image(dy), convt.Image(blobs["x"]), blobs["state"]
                ),
            )
        event(f"{kind}: loaded and ran")
    except ValueError:
        event(f"{kind}: loaded, encode refused")  # e.g. channel counts that do not fit


@settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(corrupted())
def test_fuzz_corrupted_bytes(case: tuple[str, bytes]) -> None:
    kind, data = case
    cls = convt.ConvolutionTranspose if kind == "forward" else convt.ConvolutionTransposeGradient
    try:
        kernel = cls.from_bytes(data, device=_blobs()["device"])
    except ValueError as e:
        assert str(e).startswith(PREFIX), str(e)[:100]
        event(f"{kind}: ValueError")
        return
    assert isinstance(kernel, cls)
    _exercise(kind, kernel)
