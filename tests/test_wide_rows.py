"""Wide destination rows with few output channels: the shapes (e.g. FSRCNN, DCGAN's output layer)
where a backend may run its GEMM along the row instead of across channels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import reference as R
from _helpers import FP32_TOL, assert_close, from_nchw


@pytest.mark.parametrize("cout, groups", [(1, 1), (3, 1), (7, 1), (6, 2)])
@pytest.mark.parametrize(
    "stride, k, pad, dilation", [(1, 3, 1, 1), (2, 4, 1, 1), (3, 9, 4, 1), (2, 3, 2, 2)]
)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_functional_wide_rows(
    device: Any,
    rng: np.random.Generator,
    cout: int,
    groups: int,
    stride: int,
    k: int,
    pad: int,
    dilation: int,
    layout: str,
) -> None:
    import convt

    cin = 5 * groups
    x = rng.standard_normal((2, cin, 3, 37)).astype(np.float32)
    w = rng.standard_normal((cin, cout // groups, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    op = stride - 1 if stride > 1 else 0
    ref = R.conv_transpose_torch_ref(x, w, b, stride, pad, op, groups, dilation)
    got = convt.conv_transpose2d(
        from_nchw(x, layout), w, b, stride, pad, op, groups, dilation, layout=layout, device=device
    )
    got = got if layout == "NCHW" else np.moveaxis(got, -1, 1)
    assert_close(got, ref, FP32_TOL, f"cout={cout} groups={groups} stride={stride} k={k}")


def test_mps_wide_rows_with_neuron_clip_and_offsets(device: Any, rng: np.random.Generator) -> None:
    import convt

    desc = convt.ConvolutionDescriptor(
        4, 4, 6, 3, neuron=convt.NeuronDescriptor(convt.NeuronType.tanh, a=0.5, b=2.0)
    )
    desc.stride_in_pixels_x = desc.stride_in_pixels_y = 2
    w = rng.standard_normal((3, 4, 4, 6)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    kernel = convt.ConvolutionTranspose(
        device,
        convt.ArrayDataSource(desc, w, bias, kernel_weights_data_type=convt.DataType.float32),
    )
    kernel.kernel_offset_x, kernel.kernel_offset_y = 1, 0
    kernel.clip_rect = convt.Region(2, 1, 0, 60, 4, 1)
    kernel.destination_feature_channel_offset = 1
    x = rng.standard_normal((1, 6, 4, 40)).astype(np.float32)
    dst = np.full((1, 5, 8, 80), np.nan, np.float32)
    cb = convt.CommandBuffer(device)
    kernel.encode(cb, convt.Image(x), destination_image=convt.Image(dst))
    cb.commit()
    cb.wait_until_completed()
    ref = R.conv_transpose_mps(
        x,
        w,
        bias,
        stride=2,
        T=(0, 1),
        dst_hw=(8, 80),
        clip=(2, 1, 0, 60, 4, 1),
        dst_c_offset=1,
        neuron=R.Neuron("tanh", a=0.5, b=2.0),
        dst=np.full((1, 5, 8, 80), np.nan),
    )
    written = ~np.isnan(ref)
    assert np.array_equal(written, ~np.isnan(dst)), "written region"
    assert_close(dst[written], ref[written], FP32_TOL, "MPS wide rows")


@pytest.mark.parametrize("cout, groups", [(1, 1), (3, 1), (6, 2)])
@pytest.mark.parametrize("stride, k, pad, dilation", [(1, 3, 1, 1), (3, 9, 4, 1), (2, 3, 2, 2)])
def test_backward_wide_rows(
    device: Any,
    rng: np.random.Generator,
    cout: int,
    groups: int,
    stride: int,
    k: int,
    pad: int,
    dilation: int,
) -> None:
    import convt

    cin = 5 * groups
    x = rng.standard_normal((2, cin, 3, 37)).astype(np.float32)
    w = rng.standard_normal((cin, cout // groups, k, k)).astype(np.float32)
    op = stride - 1 if stride > 1 else 0
    y_shape = R.conv_transpose_torch_ref(x, w, None, stride, pad, op, groups, dilation).shape
    g = rng.standard_normal(y_shape).astype(np.float32)
    refs = R.conv_transpose_torch_backward(g, x, w, stride, pad, op, groups, dilation)
    got = convt.conv_transpose2d_backward(g, x, w, stride, pad, op, groups, dilation, device=device)
    for name, a, b in zip(("grad_input", "grad_weight", "grad_bias"), got, refs):
        assert_close(a, b, FP32_TOL, f"{name} cout={cout} stride={stride} k={k}")
