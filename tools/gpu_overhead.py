"""Per-call host cost of convt's CUDA path on a tiny layer, piece by piece (debugging aid)."""

import time

import convt
import torch

dev = convt.Device("cuda")
layer = convt.ConvTranspose2d(8, 8, 3, stride=2, padding=1, device=dev, seed=0)
x = torch.randn(1, 8, 4, 4, device="cuda")
out = layer(x)


def per_call(fn, n=2000):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e6


print(f"layer(x, out=out)        {per_call(lambda: layer(x, out=out)):7.1f} us")
print(f"x.__dlpack__(stream=1)   {per_call(lambda: x.__dlpack__(stream=1)):7.1f} us")
print(f"x.__dlpack__()           {per_call(lambda: x.__dlpack__()):7.1f} us")
print(f"x.__dlpack_device__()    {per_call(lambda: x.__dlpack_device__()):7.1f} us")
w3 = torch.ones(8, 8, 3, 3, device="cuda")
torch_call = per_call(lambda: torch.nn.functional.conv_transpose2d(x, w3, stride=2, padding=1))
print(f"torch conv_transpose2d   {torch_call:7.1f} us")
