"""Run one suite shape's forward and dX on device `cuda` a few times, for a profiler (ncu) to
attach to: `ncu --kernel-name regex:narrow python tools/gpu_case.py fsrcnn_x3 --op forward`.

    python tools/gpu_case.py fcn8s_up8 --op dx --precision fp32 --batch 8 --calls 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_gpu import _torch  # noqa: E402
from shapes import SUITE  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=[s.name for s in SUITE])
    ap.add_argument("--op", choices=["forward", "dx"], default="forward")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--calls", type=int, default=3)
    args = ap.parse_args()
    import convt

    torch = _torch()
    shape = next(s for s in SUITE if s.name == args.shape)
    dtype = torch.float32 if args.precision == "fp32" else torch.float16
    np_dtype = np.float32 if args.precision == "fp32" else np.float16
    rng = np.random.default_rng(0)
    kernel = (shape.k,) * len(shape.size)
    w = (rng.standard_normal((shape.cin, shape.cout // shape.groups, *kernel)) * 0.05).astype(
        np_dtype
    )
    geo = dict(stride=shape.s, padding=shape.p, output_padding=shape.op, groups=shape.groups,
               dilation=shape.dilation)  # fmt: skip
    Layer = convt.ConvTranspose1d if len(shape.size) == 1 else convt.ConvTranspose2d
    layer = Layer(shape.cin, shape.cout, shape.k, dtype=np_dtype, device=convt.Device("cuda"),
                  **geo)  # fmt: skip
    layer.load_weights(w, rng.standard_normal(shape.cout).astype(np_dtype))
    x = torch.randn((args.batch, shape.cin, *shape.size), device="cuda", dtype=dtype)
    gy = torch.randn((args.batch, shape.cout, *shape.output_size()), device="cuda", dtype=dtype)
    out = torch.empty_like(gy)
    for _ in range(args.calls):
        if args.op == "forward":
            layer(x, out=out)
        else:
            layer.backward(x, gy, (True, False, False))
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
