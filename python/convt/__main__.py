"""``python -m convt``: the main job, a realistic decoder layer on the default device.

Runs a DCGAN-style generator upsampling layer (512 -> 256 channels, 8x8 -> 16x16, kernel 4,
stride 2, padding 1) on a batch of 8, prints the device, shapes and time, and checks the result
against an independent float64 NumPy computation of the same transposed convolution.
"""

from __future__ import annotations

import time

import numpy as np

import convt


def reference(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Scatter form in float64: every input pixel adds w * x into the output window."""
    n, cin, h, wd = x.shape
    _, cout, k, _ = w.shape
    full = np.zeros((n, cout, (h - 1) * stride + k, (wd - 1) * stride + k))
    xd, wdbl = x.astype(np.float64), w.astype(np.float64)
    for ky in range(k):
        for kx in range(k):
            contrib = np.einsum("nchw,cd->ndhw", xd, wdbl[:, :, ky, kx])
            full[
                :,
                :,
                ky : ky + (h - 1) * stride + 1 : stride,
                kx : kx + (wd - 1) * stride + 1 : stride,
            ] += contrib
    hout, wout = full.shape[2] - 2 * padding, full.shape[3] - 2 * padding
    return full[:, :, padding : padding + hout, padding : padding + wout] + b[None, :, None, None]


def main() -> None:
    rng = np.random.default_rng(0)
    device = convt.default_device()
    layer = convt.ConvTranspose2d(
        512, 256, kernel_size=4, stride=2, padding=1, device=device, seed=0
    )
    x = rng.standard_normal((8, 512, 8, 8), dtype=np.float32)
    out = layer(x)  # warm-up, and the buffer reused below
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        layer(x, out=out)
        times.append(time.perf_counter() - t0)
    ref = reference(x, layer.weight, layer.bias, stride=2, padding=1)
    err = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
    flops = 2 * x.size * 256 * 16
    median = sorted(times)[len(times) // 2]
    print(f"convt {convt.__version__} on {device.name}")
    print(f"layer: {layer}")
    print(f"input {x.shape} -> output {out.shape}")
    print(f"median time {median * 1e3:.2f} ms ({flops / median / 1e9:.1f} GFLOP/s)")
    print(f"max relative error vs float64 reference: {err:.2e}")
    if not err < 1e-5:
        raise SystemExit("FAILED: result does not match the reference")
    print("OK")


if __name__ == "__main__":
    main()
