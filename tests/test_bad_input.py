"""One test per rejected input: the right exception type and a message naming the parameter.

Each MPS-style case builds, encodes and waits inside ``pytest.raises`` so that the check does not
depend on whether the error is raised at construction, at a setter or at encode time.
"""

from __future__ import annotations

from typing import Any

import convt
import numpy as np
import pytest
from _helpers import poison, run_encoded

IN_CH, OUT_CH, K = 2, 3, 3


def weights(
    out_ch: int = OUT_CH, k_h: int = K, k_w: int = K, ig: int = IN_CH, dtype: Any = np.float32
) -> np.ndarray:
    return np.linspace(-1, 1, out_ch * k_h * k_w * ig).reshape(out_ch, k_h, k_w, ig).astype(dtype)


def source(channels: int = IN_CH, dtype: Any = np.float32) -> np.ndarray:
    return np.linspace(-1, 1, channels * 16).reshape(1, channels, 4, 4).astype(dtype)


def make_conv(
    device: Any,
    desc: Any | None = None,
    w: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    **source_kw: Any,
) -> Any:
    desc = desc or convt.ConvolutionDescriptor(K, K, IN_CH, OUT_CH)
    w = weights() if w is None else w
    return convt.ConvolutionTranspose(device, convt.ArrayDataSource(desc, w, bias, **source_kw))


def encode_manual(device: Any, conv: Any, src: np.ndarray, dst: np.ndarray | None = None) -> Any:
    dst = (
        poison(np.empty((src.shape[0], conv.output_feature_channels, 4, 4), src.dtype))
        if dst is None
        else dst
    )
    src_img, dst_img = convt.Image(src), convt.Image(dst)
    return run_encoded(device, lambda cb: conv.encode(cb, src_img, destination_image=dst_img))


def encode_auto(device: Any, conv: Any, src: np.ndarray) -> Any:
    src_img = convt.Image(src)
    return run_encoded(device, lambda cb: conv.encode(cb, src_img))


X = np.linspace(-1, 1, 2 * 16).reshape(1, 2, 4, 4).astype(np.float32)
W_TORCH = np.linspace(-1, 1, 2 * 3 * 9).reshape(2, 3, 3, 3).astype(np.float32)
B_TORCH = np.array([0.1, 0.2, 0.3], np.float32)


def ct2d(
    device: Any,
    x: np.ndarray = X,
    w: np.ndarray = W_TORCH,
    b: np.ndarray | None = B_TORCH,
    **kw: Any,
) -> np.ndarray:
    return convt.conv_transpose2d(x, w, b, device=device, **kw)


# ---- positive controls: the unmodified inputs are accepted ------------------------------------


def test_valid_baselines(device: Any) -> None:
    assert ct2d(device).shape == (1, 3, 6, 6)
    conv = make_conv(device)
    assert encode_manual(device, conv, source()).array.shape == (1, 3, 4, 4)
    assert encode_auto(device, conv, source()).array.shape == (1, 3, 4, 4)


# ---- non-positive geometry --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("stride", 0),
        ("stride", -1),
        ("stride", (1, 0)),
        ("dilation", 0),
        ("dilation", -2),
        ("groups", 0),
        ("groups", -1),
    ],
)
def test_functional_rejects_nonpositive(device: Any, name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        ct2d(device, **{name: value})


@pytest.mark.parametrize(
    "field, value",
    [
        ("stride_in_pixels_x", 0),
        ("stride_in_pixels_y", -1),
        ("dilation_rate_x", 0),
        ("dilation_rate_y", -1),
        ("groups", 0),
        ("groups", -2),
    ],
)
def test_descriptor_rejects_nonpositive(device: Any, field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field.split("_")[0]):
        desc = convt.ConvolutionDescriptor(K, K, IN_CH, OUT_CH)
        setattr(desc, field, value)
        encode_manual(device, make_conv(device, desc), source())


@pytest.mark.parametrize("k_w, k_h", [(0, 3), (3, 0), (-1, 3), (3, -2)])
def test_descriptor_rejects_nonpositive_kernel(device: Any, k_w: int, k_h: int) -> None:
    with pytest.raises(ValueError, match="kernel"):
        desc = convt.ConvolutionDescriptor(k_w, k_h, IN_CH, OUT_CH)
        w = weights(k_h=max(k_h, 0), k_w=max(k_w, 0))
        encode_manual(device, make_conv(device, desc, w), source())


@pytest.mark.parametrize("in_ch, out_ch", [(0, 3), (2, 0)])
def test_descriptor_rejects_zero_channels(device: Any, in_ch: int, out_ch: int) -> None:
    with pytest.raises(ValueError, match="channels"):
        desc = convt.ConvolutionDescriptor(K, K, in_ch, out_ch)
        encode_manual(
            device, make_conv(device, desc, weights(out_ch=out_ch, ig=in_ch)), source(max(in_ch, 1))
        )


def test_functional_rejects_empty_kernel(device: Any) -> None:
    with pytest.raises(ValueError, match="weight|kernel"):
        ct2d(device, w=np.zeros((2, 3, 0, 3), np.float32))


def test_layer_rejects_nonpositive_kernel(device: Any) -> None:
    with pytest.raises(ValueError, match="kernel"):
        convt.ConvTranspose2d(2, 3, 0, device=device)


# ---- groups ----------------------------------------------------------------------------------


def test_functional_channels_not_divisible_by_groups(device: Any) -> None:
    x = np.zeros((1, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="groups"):
        ct2d(device, x=x, w=np.zeros((3, 2, 3, 3), np.float32), b=None, groups=2)


@pytest.mark.parametrize("in_ch, out_ch", [(3, 4), (4, 3)])
def test_descriptor_channels_not_divisible_by_groups(device: Any, in_ch: int, out_ch: int) -> None:
    with pytest.raises(ValueError, match="groups"):
        desc = convt.ConvolutionDescriptor(K, K, in_ch, out_ch)
        desc.groups = 2
        w = weights(out_ch=out_ch, ig=max(in_ch // 2, 1))
        encode_manual(device, make_conv(device, desc, w), source(in_ch))


def test_layer_channels_not_divisible_by_groups(device: Any) -> None:
    with pytest.raises(ValueError, match="groups"):
        convt.ConvTranspose2d(3, 4, 3, groups=2, device=device)


# ---- weights and bias ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 3, 3, 3), (4, 3, 3, 2), (3, 2, 3, 2), (3, 3, 3)])
def test_data_source_weight_shape(device: Any, shape: tuple) -> None:
    with pytest.raises(ValueError, match="weight"):
        encode_manual(device, make_conv(device, w=np.zeros(shape, np.float32)), source())


def test_data_source_weight_dtype(device: Any) -> None:
    with pytest.raises(TypeError, match="weight"):
        encode_manual(device, make_conv(device, w=weights(dtype=np.int32)), source())


def test_data_source_bias_shape(device: Any) -> None:
    with pytest.raises(ValueError, match="bias"):
        encode_manual(device, make_conv(device, bias=np.zeros(OUT_CH + 1, np.float32)), source())


def test_data_source_bias_dtype(device: Any) -> None:
    with pytest.raises(TypeError, match="bias"):
        encode_manual(device, make_conv(device, bias=np.zeros(OUT_CH, np.int32)), source())


def test_uint8_linear_needs_ranges(device: Any) -> None:
    with pytest.raises(ValueError, match="ranges"):
        conv = make_conv(
            device, w=weights(dtype=np.uint8), quantization=convt.QuantizationType.linear
        )
        encode_manual(device, conv, source())


def test_uint8_lookup_table_length(device: Any) -> None:
    with pytest.raises(ValueError, match="lookup_table"):
        conv = make_conv(
            device,
            w=weights(dtype=np.uint8),
            quantization=convt.QuantizationType.lookup_table,
            lookup_table=np.zeros(255, np.float32),
        )
        encode_manual(device, conv, source())


@pytest.mark.parametrize("shape", [(3, 3, 3, 3), (2, 3, 3), (2, 3, 3, 3, 1)])
def test_functional_weight_shape(device: Any, shape: tuple) -> None:
    with pytest.raises(ValueError, match="weight"):
        ct2d(device, w=np.zeros(shape, np.float32))


def test_functional_weight_dtype(device: Any) -> None:
    with pytest.raises(TypeError, match="weight"):
        ct2d(device, w=W_TORCH.astype(np.int32))


def test_functional_bias_shape(device: Any) -> None:
    with pytest.raises(ValueError, match="bias"):
        ct2d(device, b=np.zeros(4, np.float32))


def test_functional_bias_dtype(device: Any) -> None:
    with pytest.raises(TypeError, match="bias"):
        ct2d(device, b=np.zeros(3, np.int64))


def test_layer_load_weights_shape(device: Any) -> None:
    layer = convt.ConvTranspose2d(2, 3, 3, device=device)
    with pytest.raises(ValueError, match="weight"):
        layer.load_weights(np.zeros((3, 2, 3, 3), np.float32))


# ---- destination and clip --------------------------------------------------------------------


def test_destination_too_small_for_channel_offset(device: Any) -> None:
    conv = make_conv(device)
    conv.destination_feature_channel_offset = 2
    dst = poison(np.empty((1, OUT_CH + 1, 4, 4), np.float32))  # needs dfo + O = 5 channels
    with pytest.raises(ValueError, match="destination"):
        encode_manual(device, conv, source(), dst)


def test_destination_with_too_few_channels(device: Any) -> None:
    dst = poison(np.empty((1, OUT_CH - 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="destination"):
        encode_manual(device, make_conv(device), source(), dst)


@pytest.mark.parametrize("clip", [(4, 0, 0, 2, 2, 1), (0, 9, 0, 2, 2, 1), (0, 0, 3, 4, 4, 1)])
def test_clip_rect_outside_destination(device: Any, clip: tuple) -> None:
    conv = make_conv(device)
    with pytest.raises(ValueError, match="clip"):
        conv.clip_rect = convt.Region(*clip)
        encode_manual(device, conv, source())


# ---- aliasing --------------------------------------------------------------------------------


def test_destination_is_source(device: Any) -> None:
    desc = convt.ConvolutionDescriptor(K, K, 3, 3)
    conv = make_conv(device, desc, weights(out_ch=3, ig=3))
    src = source(3)
    with pytest.raises(ValueError, match="destination"):
        encode_manual(device, conv, src, src)


def test_destination_overlaps_source(device: Any) -> None:
    desc = convt.ConvolutionDescriptor(K, K, 3, 3)
    conv = make_conv(device, desc, weights(out_ch=3, ig=3))
    base = source(6)
    with pytest.raises(ValueError, match="destination"):
        encode_manual(device, conv, base[:, :3], base[:, 2:5])


def test_out_is_x(device: Any) -> None:
    x = X.copy()
    w = np.ones((2, 2, 1, 1), np.float32)
    with pytest.raises(ValueError, match="out"):
        convt.conv_transpose2d(x, w, out=x, device=device)


def test_out_overlaps_x(device: Any) -> None:
    base = np.zeros((1, 4, 4, 4), np.float32)
    w = np.ones((2, 2, 1, 1), np.float32)
    with pytest.raises(ValueError, match="out"):
        convt.conv_transpose2d(base[:, :2], w, out=base[:, 1:3], device=device)


# ---- output_padding --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stride, dilation, output_padding", [(2, 1, 2), (1, 1, 1), (2, 3, 3), ((2, 1), 1, (0, 1))]
)
def test_output_padding_too_large(
    device: Any, stride: Any, dilation: Any, output_padding: Any
) -> None:
    with pytest.raises(ValueError, match="output_padding"):
        ct2d(device, stride=stride, dilation=dilation, output_padding=output_padding)


def test_output_padding_too_large_1d(device: Any) -> None:
    with pytest.raises(ValueError, match="output_padding"):
        convt.conv_transpose1d(
            X[:, :, 0], W_TORCH[:, :, 0], stride=2, output_padding=2, device=device
        )


def test_layer_output_padding_too_large(device: Any) -> None:
    with pytest.raises(ValueError, match="output_padding"):
        layer = convt.ConvTranspose2d(2, 3, 3, stride=2, output_padding=2, device=device)
        layer(X)


def test_layer_output_size_out_of_range(device: Any) -> None:
    layer = convt.ConvTranspose2d(2, 3, 3, stride=2, device=device)  # 4 -> 9 .. 10
    with pytest.raises(ValueError, match="output_size"):
        layer(X, output_size=(12, 9))


# ---- array rank and dtype --------------------------------------------------------------------


def test_functional_2d_wrong_ndim(device: Any) -> None:
    with pytest.raises(ValueError, match=r"\bx\b"):
        ct2d(device, x=X[0])


def test_functional_1d_wrong_ndim(device: Any) -> None:
    with pytest.raises(ValueError, match=r"\bx\b"):
        convt.conv_transpose1d(X, W_TORCH[:, :, 0], device=device)


def test_functional_x_channels_mismatch(device: Any) -> None:
    with pytest.raises(ValueError, match=r"weight|\bx\b|channels"):
        ct2d(device, x=np.zeros((1, 3, 4, 4), np.float32))


def test_image_wrong_ndim() -> None:
    with pytest.raises(ValueError, match="array"):
        convt.Image(np.zeros((2, 4, 4), np.float32))


def test_functional_non_float_x(device: Any) -> None:
    with pytest.raises(TypeError, match=r"\bx\b"):
        ct2d(device, x=X.astype(np.int32))


def test_image_non_float_array() -> None:
    with pytest.raises(TypeError, match="array|dtype"):
        convt.Image(np.zeros((1, 2, 4, 4), np.int32))


@pytest.mark.parametrize("layout", ["NWHC", "nchw?", ""])
def test_bad_layout(device: Any, layout: str) -> None:
    with pytest.raises(ValueError, match="layout"):
        ct2d(device, layout=layout)
    with pytest.raises(ValueError, match="layout"):
        convt.Image(source(), layout=layout)


def test_unknown_device_kind() -> None:
    with pytest.raises(ValueError, match="kind|device"):
        convt.Device(kind="no-such-backend")


# ---- read-only out ---------------------------------------------------------------------------


def test_read_only_out(device: Any) -> None:
    out = np.zeros((1, 3, 6, 6), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        ct2d(device, out=out)


@pytest.mark.parametrize("shape, dtype", [((1, 3, 6, 5), np.float32), ((1, 3, 6, 6), np.float16)])
def test_out_wrong_shape_or_dtype(device: Any, shape: tuple, dtype: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="out"):
        ct2d(device, out=np.zeros(shape, dtype))


# ---- encode-time checks ----------------------------------------------------------------------


def test_fp32_kernel_weights_with_half_accumulator(device: Any) -> None:
    conv = make_conv(device, kernel_weights_data_type=convt.DataType.float32)
    with pytest.raises(ValueError, match="accumulator|kernel_weights"):
        conv.accumulator_precision = convt.AccumulatorPrecision.half
        encode_manual(device, conv, source())


def test_clamp_edge_mode(device: Any) -> None:
    conv = make_conv(device)
    with pytest.raises(ValueError, match="edge"):
        conv.edge_mode = convt.EdgeMode.clamp
        encode_manual(device, conv, source())


@pytest.mark.parametrize(
    "channels, offset, max_count",
    [(IN_CH - 1, 0, None), (IN_CH + 1, 2, None), (IN_CH + 2, 0, IN_CH - 1)],
)
def test_source_channel_slice_too_small(
    device: Any, channels: int, offset: int, max_count: int | None
) -> None:
    conv = make_conv(device)
    with pytest.raises(ValueError, match="source"):
        conv.source_feature_channel_offset = offset
        if max_count is not None:
            conv.source_feature_channel_max_count = max_count
        encode_manual(device, conv, source(channels))


def test_auto_encode_checks_source_channels(device: Any) -> None:
    with pytest.raises(ValueError, match="source"):
        encode_auto(device, make_conv(device), source(IN_CH - 1))


def test_error_leaves_object_usable(device: Any) -> None:
    """A rejected encode does not poison the kernel object for the next, valid one."""
    conv = make_conv(device)
    with pytest.raises(ValueError):
        encode_manual(device, conv, source(IN_CH - 1))
    assert encode_manual(device, conv, source()).array.shape == (1, OUT_CH, 4, 4)
