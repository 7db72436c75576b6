"""Adjoint identity <convT(x), y> == <x, conv(y)>: convT by convt (fp32), conv by the oracle."""

from __future__ import annotations

from typing import Any

import convt
import numpy as np
import pytest
import reference as R
from _helpers import random_torch_geometry, torch_kwargs

N_CASES = 60


@pytest.mark.parametrize("one_d", [False, True], ids=["2d", "1d"])
@pytest.mark.parametrize("case", range(N_CASES))
def test_adjoint_identity(device: Any, case: int, one_d: bool) -> None:
    rng = np.random.default_rng([31, case, one_d])
    g = random_torch_geometry(rng, one_d)
    x = rng.standard_normal((g["n"], g["cin"], *g["hw"])).astype(np.float32)
    w = rng.standard_normal((g["cin"], g["cout"] // g["groups"], *g["k"])).astype(np.float32)
    if one_d:
        t = convt.conv_transpose1d(
            x[:, :, 0], w[:, :, 0], None, device=device, **torch_kwargs(g, one_d=True)
        )
        t = np.asarray(t, np.float64)[:, :, None, :]
    else:
        t = np.asarray(
            convt.conv_transpose2d(x, w, None, device=device, **torch_kwargs(g)), np.float64
        )
    y = rng.standard_normal(t.shape)
    c = R.conv2d_ref(
        y,
        w,
        stride=tuple(g["s"]),
        padding=tuple(g["p"]),
        dilation=tuple(g["d"]),
        groups=g["groups"],
        out_hw=tuple(g["hw"]),
    )
    lhs = float(np.sum(t * y))
    rhs = float(np.sum(x.astype(np.float64) * c))
    scale = float(np.sum(np.abs(x.astype(np.float64) * c)))  # size of the terms summed
    assert abs(lhs - rhs) <= 1e-5 * max(scale, 1e-30), (g, lhs, rhs)
