"""GPU benchmark of convt's CUDA device against PyTorch/cuDNN over the suite in ``shapes.py``
(issue 6).

For every suite shape, batch (1 and 8) and precision (fp32 strict: TF32 off on both sides; fp16)
it times, in one process and interleaved:

- forward: a ``convt.ConvTranspose1d/2d`` layer (weights prepared once) on CUDA tensors with a
  preallocated ``out=`` (DLPack, no copies) against ``torch.nn.functional.conv_transpose{1,2}d``;
- backward (dX + dW + dB): the layer's ``backward`` (weights prepared once) against
  ``aten.convolution_backward`` with all three outputs; convt finishes dW/dB on the GPU, into
  CUDA tensors allocated like x (no host round trip).

Each call is bracketed by its own CUDA events on the legacy default stream (both libraries run
there); inputs rotate among enough copies to exceed twice the L2 cache; the median of the
repetitions after a warm-up is reported, with TFLOP/s and the ratio torch time / convt time.

    python bench/bench_gpu.py --json out.json --section out.md     # on a CUDA machine
    python bench/bench_gpu.py --shapes dcgan_g2 --batches 8 --precisions fp32 --repeats 20
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import SUITE, Shape  # noqa: E402

SECTION_TITLE = "## CUDA (issue 6)"


def _torch():
    import torch

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm per shape
    return torch


def time_interleaved(
    fns: dict[str, Callable[[int], Any]], warmup: int, repeats: int
) -> dict[str, float]:
    """Median milliseconds per call of each fn(i) (i picks the rotated input), alternating."""
    torch = _torch()
    for i in range(warmup):
        for fn in fns.values():
            fn(i)
    torch.cuda.synchronize()
    events = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fns[name](r)
            end.record()
            events[name].append((start, end))
    torch.cuda.synchronize()
    return {n: statistics.median(s.elapsed_time(e) for s, e in ev) for n, ev in events.items()}


def bench_case(
    shape: Shape, batch: int, precision: str, warmup: int, repeats: int, l2_bytes: int
) -> dict[str, Any]:
    import convt

    torch = _torch()
    F = torch.nn.functional
    dev = convt.Device("cuda")
    dtype = torch.float32 if precision == "fp32" else torch.float16
    np_dtype = np.float32 if precision == "fp32" else np.float16
    rng = np.random.default_rng(0)
    one_d = len(shape.size) == 1
    kernel = (shape.k,) * len(shape.size)
    w_np = (rng.standard_normal((shape.cin, shape.cout // shape.groups, *kernel)) * 0.05).astype(
        np_dtype
    )
    b_np = rng.standard_normal(shape.cout).astype(np_dtype)
    out_size = shape.output_size()
    in_bytes = batch * shape.cin * math.prod(shape.size) * np.dtype(np_dtype).itemsize
    out_bytes = batch * shape.cout * math.prod(out_size) * np.dtype(np_dtype).itemsize
    copies = int(min(64, max(2, math.ceil(2 * l2_bytes / (in_bytes + out_bytes)))))
    xs = [
        torch.randn((batch, shape.cin, *shape.size), device="cuda", dtype=dtype)
        for _ in range(copies)
    ]
    gys = [
        torch.randn((batch, shape.cout, *out_size), device="cuda", dtype=dtype)
        for _ in range(copies)
    ]
    outs = [torch.empty_like(g) for g in gys]
    w, b = torch.from_numpy(w_np).cuda(), torch.from_numpy(b_np).cuda()
    geo = dict(stride=shape.s, padding=shape.p, output_padding=shape.op, groups=shape.groups)
    geo["dilation"] = shape.dilation
    Layer = convt.ConvTranspose1d if one_d else convt.ConvTranspose2d
    layer = Layer(shape.cin, shape.cout, shape.k, dtype=np_dtype, device=dev, **geo)
    layer.load_weights(w_np, b_np)
    torch_fwd = F.conv_transpose1d if one_d else F.conv_transpose2d

    # Correctness of what is timed, against cuDNN in float64 on the same inputs.
    ref = torch_fwd(xs[0].double(), w.double(), b.double(), **geo)
    got = layer(xs[0], out=outs[0])
    err = float((got.double() - ref).abs().max() / ref.abs().max())

    def c_fwd(i: int) -> None:
        layer(xs[i % copies], out=outs[i % copies])

    def t_fwd(i: int) -> None:
        torch_fwd(xs[i % copies], w, b, **geo)

    def c_bwd(i: int) -> None:
        layer.backward(xs[i % copies], gys[i % copies])

    def t_bwd(i: int, mask=(True, True, True)) -> None:
        torch.ops.aten.convolution_backward(
            gys[i % copies], xs[i % copies], w, [shape.cout],
            [shape.s] * len(kernel), [shape.p] * len(kernel), [shape.dilation] * len(kernel),
            True, [shape.op] * len(kernel), shape.groups, list(mask),
        )  # fmt: skip

    def c_dx(i: int) -> None:
        layer.backward(xs[i % copies], gys[i % copies], (True, False, False))

    def t_dx(i: int) -> None:
        t_bwd(i, (True, False, False))

    fwd = time_interleaved({"convt": c_fwd, "torch": t_fwd}, warmup, repeats)
    bwd = time_interleaved({"convt": c_bwd, "torch": t_bwd}, max(2, warmup // 2), repeats)
    dx = time_interleaved({"convt": c_dx, "torch": t_dx}, warmup, repeats)
    flops = 2 * shape.macs(batch)
    return {
        "shape": shape.name,
        "batch": batch,
        "precision": precision,
        "gflop": flops / 1e9,
        "rel_err_fwd": err,
        "copies": copies,
        "fwd_ms": fwd,
        "bwd_ms": bwd,
        "dx_ms": dx,
        "dx_ratio": dx["torch"] / dx["convt"],
        "fwd_ratio": fwd["torch"] / fwd["convt"],
        "bwd_ratio": bwd["torch"] / bwd["convt"],
        "fwd_tflops": {k: flops / (v * 1e9) for k, v in fwd.items()},
        "bwd_tflops": {k: 2 * flops / (v * 1e9) for k, v in bwd.items()},
    }


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        SECTION_TITLE,
        "",
        f"Card: {meta['card']} (driver {meta['driver']}), torch {meta['torch']}, cuDNN "
        f"{meta['cudnn']}; {meta['date']}. Command: `{meta['command']}`. Median of "
        f"{meta['repeats']} event-timed calls after {meta['warmup']} warm-up calls, inputs rotated "
        "past 2x L2. fp32 is strict (TF32 off on both sides). Ratio = torch time / convt time "
        "(> 1: convt faster). Backward = dX + dW + dB (convt's layer backward, all on the GPU: "
        "dW/dB finished there into CUDA tensors).",
        "",
        "| shape | N | prec | GFLOP | fwd convt ms | fwd torch ms | fwd ratio | convt TFLOP/s "
        "| bwd convt ms | bwd torch ms | bwd ratio | dX convt ms | dX torch ms | dX ratio "
        "| fwd rel err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['batch']} | {r['precision']} | {r['gflop']:.2f} "
            f"| {r['fwd_ms']['convt']:.3f} | {r['fwd_ms']['torch']:.3f} | {r['fwd_ratio']:.2f} "
            f"| {r['fwd_tflops']['convt']:.2f} | {r['bwd_ms']['convt']:.3f} "
            f"| {r['bwd_ms']['torch']:.3f} | {r['bwd_ratio']:.2f} | {r['dx_ms']['convt']:.3f} "
            f"| {r['dx_ms']['torch']:.3f} | {r['dx_ratio']:.2f} | {r['rel_err_fwd']:.1e} |"
        )
    lines.append("")
    for prec in sorted({r["precision"] for r in rows}):
        for batch in sorted({r["batch"] for r in rows}):
            sel = [r for r in rows if r["precision"] == prec and r["batch"] == batch]
            if sel:
                lines.append(
                    f"- {prec}, N={batch}: geomean ratio forward "
                    f"{geomean([r['fwd_ratio'] for r in sel]):.2f}, backward "
                    f"{geomean([r['bwd_ratio'] for r in sel]):.2f}, dX alone "
                    f"{geomean([r['dx_ratio'] for r in sel]):.2f} over {len(sel)} shapes."
                )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="*", default=[s.name for s in SUITE])
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--precisions", nargs="*", default=["fp32", "fp16"])
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--section", type=Path, help="write the RESULTS.md section to this file")
    ap.add_argument("--markdown", type=Path, help="replace the CUDA section of this RESULTS.md")
    args = ap.parse_args(argv)
    torch = _torch()
    props = torch.cuda.get_device_properties(0)
    l2 = int(getattr(props, "L2_cache_size", 50 << 20))
    try:
        from tqdm import tqdm
    except ImportError:  # optional

        def tqdm(it, **_):
            return it

    todo = [
        (s, n, p)
        for s in SUITE
        if s.name in args.shapes
        for n in args.batches
        for p in args.precisions
    ]
    rows = []
    for shape, batch, prec in tqdm(todo, desc="bench_gpu"):
        row = bench_case(shape, batch, prec, args.warmup, args.repeats, l2)
        rows.append(row)
        print(
            f"{shape.name:12s} N={batch} {prec}: fwd convt {row['fwd_ms']['convt']:.3f} ms "
            f"torch {row['fwd_ms']['torch']:.3f} ms ({row['fwd_ratio']:.2f}x)  bwd convt "
            f"{row['bwd_ms']['convt']:.3f} torch {row['bwd_ms']['torch']:.3f} "
            f"({row['bwd_ratio']:.2f}x)  err {row['rel_err_fwd']:.1e}",
            flush=True,
        )
    import subprocess

    driver = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    meta = {
        "card": props.name,
        "driver": driver,
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/bench_gpu.py " + " ".join(argv or sys.argv[1:]),
        "repeats": args.repeats,
        "warmup": args.warmup,
    }
    section = markdown(rows, meta)
    print(section)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if args.section:
        args.section.write_text(section)
    if args.markdown:
        import re

        from bench_cpu import write_markdown

        write_markdown(args.markdown, section, re.compile(r"^## CUDA\b"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
