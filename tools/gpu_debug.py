"""Smallest CUDA-device run (debugging aid for tools/gpu_tests.sh)."""

import numpy as np

import convt

with open("/proc/self/maps") as maps:
    print(sorted({line.split()[-1] for line in maps if "stdc++" in line or "gcc_s" in line}))

rng = np.random.default_rng(0)
x = rng.standard_normal((2, 7, 5, 6), dtype=np.float32)
w = rng.standard_normal((7, 3, 3, 3), dtype=np.float32)
print("cpu", convt.conv_transpose2d(x, w, stride=2, device="cpu").sum(), flush=True)
d = convt.Device("cuda")
print("device", d.name, flush=True)
y = convt.conv_transpose2d(x, w, stride=2, device=d)
print("cuda", y.sum(), flush=True)
