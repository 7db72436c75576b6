"""convt.conv_transpose1d/2d (fp32) against torch.nn.functional (float64) on random configs."""

from __future__ import annotations

from typing import Any

import convt
import numpy as np
import pytest
from _helpers import FP32_TOL, assert_close, random_torch_geometry, torch_kwargs

torch = pytest.importorskip("torch")
F = torch.nn.functional

N_CASES = 60


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", range(N_CASES))
def test_conv_transpose2d_matches_torch(device: Any, case: int, use_bias: bool) -> None:
    rng = np.random.default_rng([41, case, use_bias])
    g = random_torch_geometry(rng)
    x = rng.standard_normal((g["n"], g["cin"], *g["hw"])).astype(np.float32)
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], *g["k"])).astype(np.float32)
    b = rng.standard_normal(g["cout"]).astype(np.float32) if use_bias else None
    kw = torch_kwargs(g)
    got = convt.conv_transpose2d(x, w, b, device=device, **kw)
    want = F.conv_transpose2d(
        torch.from_numpy(x).double(),
        torch.from_numpy(w).double(),
        None if b is None else torch.from_numpy(b).double(),
        **kw,
    ).numpy()
    assert_close(got, want, FP32_TOL, str(g))


@pytest.mark.parametrize("case", range(N_CASES // 2))
def test_conv_transpose1d_matches_torch(device: Any, case: int) -> None:
    rng = np.random.default_rng([42, case])
    g = random_torch_geometry(rng, one_d=True)
    x = rng.standard_normal((g["n"], g["cin"], g["hw"][1])).astype(np.float32)
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], g["k"][1])).astype(np.float32)
    b = rng.standard_normal(g["cout"]).astype(np.float32)
    kw = torch_kwargs(g, one_d=True)
    got = convt.conv_transpose1d(x, w, b, device=device, **kw)
    want = F.conv_transpose1d(
        torch.from_numpy(x).double(),
        torch.from_numpy(w).double(),
        torch.from_numpy(b).double(),
        **kw,
    ).numpy()
    assert_close(got, want, FP32_TOL, str(g))


@pytest.mark.parametrize("case", range(10))
def test_layer_matches_torch_module(device: Any, case: int) -> None:
    """ConvTranspose2d with weights loaded from a torch module gives the module's output."""
    rng = np.random.default_rng([43, case])
    g = random_torch_geometry(rng)
    kw = torch_kwargs(g)
    torch.manual_seed(case)
    module = torch.nn.ConvTranspose2d(g["cin"], g["cout"], tuple(g["k"]), bias=True, **kw).double()
    layer = convt.ConvTranspose2d(g["cin"], g["cout"], tuple(g["k"]), device=device, **kw)
    layer.load_weights(
        module.weight.detach().numpy().astype(np.float32),
        module.bias.detach().numpy().astype(np.float32),
    )
    x = rng.standard_normal((g["n"], g["cin"], *g["hw"])).astype(np.float32)
    # The module is float64; compare against the fp32-rounded weights it was given.
    module.weight.data = module.weight.data.float().double()
    module.bias.data = module.bias.data.float().double()
    want = module(torch.from_numpy(x).double()).detach().numpy()
    assert_close(layer(x), want, FP32_TOL, str(g))
