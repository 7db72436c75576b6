"""Weight-gradient timings on a CUDA machine: dW + dB alone (output_mask (False, True, True)), dX
alone and the whole backward of convt's layer, for each CONVT_GPU_DW mode, against cuDNN's, plus
the per-kernel CUDA time of one whole backward (torch.profiler). Used through the device tool to
pick gpu_launch.h's dW kernel selection; see bench/RESULTS.md.

    python tools/gpu_dw_bench.py --shapes dw_k4s2 fsrcnn_x3 --modes auto direct gemm
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_gpu import _torch, time_interleaved  # noqa: E402
from shapes import SUITE  # noqa: E402


def bench_shape(shape, args, torch, dev) -> None:
    import convt

    dtype = torch.float32 if args.precision == "fp32" else torch.float16
    np_dtype = np.float32 if args.precision == "fp32" else np.float16
    rng = np.random.default_rng(0)
    kernel = (shape.k,) * len(shape.size)
    w_np = rng.standard_normal((shape.cin, shape.cout // shape.groups, *kernel)) * 0.05
    w_np = w_np.astype(np_dtype)
    b_np = rng.standard_normal(shape.cout).astype(np_dtype)
    geo = dict(stride=shape.s, padding=shape.p, output_padding=shape.op, groups=shape.groups,
               dilation=shape.dilation)  # fmt: skip
    Layer = convt.ConvTranspose1d if len(shape.size) == 1 else convt.ConvTranspose2d
    layer = Layer(shape.cin, shape.cout, shape.k, dtype=np_dtype, device=dev, **geo)
    layer.load_weights(w_np, b_np)
    copies = 4
    xs = [torch.randn((args.batch, shape.cin, *shape.size), device="cuda", dtype=dtype)
          for _ in range(copies)]  # fmt: skip
    gys = [torch.randn((args.batch, shape.cout, *shape.output_size()), device="cuda",
                       dtype=dtype) for _ in range(copies)]  # fmt: skip
    w = torch.from_numpy(w_np).cuda()
    k = len(kernel)

    def cudnn(i: int, mask=(False, True, True), double: bool = False):
        x, gy, ww = xs[i % copies], gys[i % copies], w
        if double:
            x, gy, ww = x.double(), gy.double(), ww.double()
        return torch.ops.aten.convolution_backward(
            gy, x, ww, [shape.cout], [shape.s] * k, [shape.p] * k, [shape.dilation] * k, True,
            [shape.op] * k, shape.groups, list(mask),
        )  # fmt: skip

    fns = {
        "dw": lambda i: layer.backward(xs[i % copies], gys[i % copies], (False, True, True)),
        "bwd": lambda i: layer.backward(xs[i % copies], gys[i % copies]),
        "cudnn_dw": cudnn,
        "cudnn_bwd": lambda i: cudnn(i, (True, True, True)),
        "dx": lambda i: layer.backward(xs[i % copies], gys[i % copies], (True, False, False)),
        "cudnn_dx": lambda i: cudnn(i, (True, False, False)),
    }
    ref = cudnn(0, double=True)[1].cpu().numpy()
    for mode in args.modes:
        os.environ["CONVT_GPU_DW"] = mode
        ms = time_interleaved(fns, args.warmup, args.repeats)
        _, gw, _ = layer.backward(xs[0], gys[0], (False, True, True))
        gw = gw.double().cpu().numpy()  # a CUDA tensor: finished on the device
        err = float(np.abs(gw - ref).max() / np.abs(ref).max())
        print(
            f"{shape.name:11s} {mode:6s} dW+dB {ms['dw']:.3f} ms (cuDNN {ms['cudnn_dw']:.3f})"
            f"  backward {ms['bwd']:.3f} ms (cuDNN {ms['cudnn_bwd']:.3f}, "
            f"{ms['cudnn_bwd'] / ms['bwd']:.2f}x)  dX {ms['dx']:.3f} ms (cuDNN "
            f"{ms['cudnn_dx']:.3f})  dW rel err {err:.1e}",
            flush=True,
        )
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                layer.backward(xs[1], gys[1])
                torch.cuda.synchronize()
            for e in prof.key_averages():
                if e.device_time_total > 0:
                    print(f"    {e.key[:60]:60s} {e.device_time_total / 1e3:.3f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="*", default=["dw_k4s2", "fsrcnn_x3", "fcn8s_up8"])
    ap.add_argument("--modes", nargs="*", default=["auto"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--warmup", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--profile", action="store_true", help="per-kernel times of one backward")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    import convt

    torch = _torch()
    dev = convt.Device("cuda")
    print(f"# {args.label} {torch.cuda.get_device_name(0)} N={args.batch} {args.precision}")
    for shape in [s for s in SUITE if s.name in args.shapes]:
        bench_shape(shape, args, torch, dev)
    return 0


if __name__ == "__main__":
    sys.exit(main())
