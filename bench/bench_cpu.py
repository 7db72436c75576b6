"""CPU benchmark of convt against PyTorch over the suite in ``shapes.py`` (issue 5).

For every suite shape it times convt's forward (a ``convt.ConvTranspose1d/2d`` layer, weights
prepared once, called with a preallocated ``out=``) and backward (the same layer's
``backward``, all three gradients) against PyTorch's
``torch.nn.functional.conv_transpose{1,2}d`` and ``aten.convolution_backward`` (all three
gradients), in one process, interleaved: convt and torch repetitions alternate, and which of
the two goes first alternates too. It reports the median time, GFLOP/s, % of a measured fp32
peak proxy (a large matmul) and the ratio torch time / convt time, plus the per-call overhead
of a tiny layer and the process's peak RSS.

    PYTHONPATH=python python bench/bench_cpu.py                    # whole suite, N=8, 2 threads
    PYTHONPATH=python python bench/bench_cpu.py --markdown         # ... and update RESULTS.md
    PYTHONPATH=python python bench/bench_cpu.py --shapes dcgan_g2 vae_dec --repeats 2 --warmup 1

Optional: ``tqdm`` (progress bar), ``matplotlib`` (the PNG plot), ``threadpoolctl`` (numpy's
BLAS joins torch's in the peak proxy); ``pip install ".[bench,torch]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import convt
import numpy as np
from shapes import SUITE, Shape

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the comparison is skipped without torch
    torch = None
    F = None

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH_DIR / "out" / "cpu.json"
DEFAULT_RESULTS = BENCH_DIR / "RESULTS.md"
SECTION_TITLE = "## CPU (issue 5)"
SECTION_RE = re.compile(r"^## CPU \(issue 5\)$")


def section_title(meta: dict) -> str:
    """'## CPU (issue 5)' for the headline setting (N=8, 2 threads, float32); other settings
    get their own section, named by what differs."""
    differs = []
    if meta["batch"] != 8:
        differs.append(f"N={meta['batch']}")
    if meta["threads"] != 2:
        differs.append(_plural(meta["threads"], "thread"))
    if meta["dtype"] != "float32":
        differs.append(meta["dtype"])
    if meta.get("layout", "NCHW") != "NCHW":
        differs.append(meta["layout"])
    return SECTION_TITLE + (": " + ", ".join(differs) if differs else "")


NEXT_SECTION_RE = re.compile(r"^## ")
AVX2_FLOP_PER_CYCLE = 32  # fp32: 2 FMA units x 8 lanes x 2 FLOP
REL_TOL = {"float32": 1e-4, "float16": 2e-2}  # beyond this the result check is flagged

Thunk = Callable[[], object]


# --------------------------------------------------------------------------------------------
# Machine description and peak


@dataclass
class Machine:
    """What ``lscpu`` (or, for the clock only, /proc/cpuinfo) says about this machine."""

    model: str
    cores: int
    sockets: int
    threads_per_core: int
    mhz: float | None
    mhz_source: str
    hypervisor: str | None = None

    def theoretical_gflops(self, threads: int) -> float | None:
        """AVX2 fp32 peak of ``min(threads, cores)`` cores: cores x GHz x 32 FLOP/cycle."""
        if self.mhz is None:
            return None
        return min(threads, self.cores) * self.mhz / 1e3 * AVX2_FLOP_PER_CYCLE


def read_machine() -> Machine:
    """Parses ``lscpu``; a clock missing there is taken from /proc/cpuinfo, labelled as such."""
    fields: dict[str, str] = {}
    try:
        text = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True, env={**os.environ, "LC_ALL": "C"}
        ).stdout
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
    except (OSError, subprocess.CalledProcessError):
        pass

    def number(key: str, default: int) -> int:
        try:
            return int(fields[key])
        except (KeyError, ValueError):
            return default

    model = fields.get("Model name", platform.processor() or "unknown")
    sockets = number("Socket(s)", 1)
    per_socket = number("Core(s) per socket", 0)
    cores = per_socket * sockets if per_socket else (os.cpu_count() or 1)
    mhz, source = None, "not available (lscpu gives no clock)"
    for key in ("CPU max MHz", "CPU MHz"):
        with contextlib.suppress(KeyError, ValueError):
            mhz, source = float(fields[key]), f"lscpu '{key}'"
            break
    if mhz is None and (m := re.search(r"@\s*([\d.]+)\s*GHz", model)):
        mhz, source = float(m.group(1)) * 1e3, "lscpu model name"
    if mhz is None:
        with contextlib.suppress(OSError, ValueError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("cpu MHz"):
                    mhz = float(line.partition(":")[2])
                    source = "/proc/cpuinfo 'cpu MHz' (lscpu gives no clock; nominal, not boost)"
                    break
    threads_per_core = number("Thread(s) per core", 1)
    hypervisor = fields.get("Hypervisor vendor")
    return Machine(model, cores, sockets, threads_per_core, mhz, source, hypervisor)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` for the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _matmul_gflops(mm: Thunk, size: int, repeats: int) -> float:
    mm()  # warm-up
    return 2.0 * size**3 / min(_timed(mm) for _ in range(repeats)) / 1e9


def measure_peak(threads: int, size: int, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a ``size``^3 fp32 matmul on ``threads`` threads, per available BLAS.

    torch.mm runs with torch.set_num_threads; numpy's matmul when threadpoolctl can limit its
    BLAS (else only without torch, its threads then uncontrolled). Each is the best of
    ``repeats`` calls; the best of them all is the measured peak proxy.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = np.empty((size, size), dtype=np.float32)
    results: dict[str, float] = {}
    if torch is not None:
        at, bt, ct = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        with torch_threads(threads):
            results["torch.mm"] = _matmul_gflops(lambda: torch.mm(at, bt, out=ct), size, repeats)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=threads):
            results["numpy.matmul (threadpoolctl)"] = _matmul_gflops(
                lambda: np.matmul(a, b, out=c), size, repeats
            )
    elif not results:
        results["numpy.matmul (threads NOT controlled)"] = _matmul_gflops(
            lambda: np.matmul(a, b, out=c), size, repeats
        )
    return results


# --------------------------------------------------------------------------------------------
# Timing


def _timed(fn: Thunk) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection in the middle of a timed region."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


SETTLE_SLICE_S = 0.005  # one look at the process's CPU time
SETTLE_IDLE_SHARE = 0.1  # idle: less than this share of one core used during a slice
SETTLE_IDLE_SLICES = 2  # idle slices in a row that count as settled
SETTLE_MAX_S = 0.5


def settle() -> float:
    """Waits until this process's threads are idle; returns the seconds waited.

    torch's OpenMP workers keep spinning after each torch call (about 10 ms of CPU time on the
    2-core dev VM), on the cores the next call needs: there, convt's dcgan_g2 forward took
    13-14 ms alone or 10+ ms after a torch call, and 18-25 ms right after one. Waiting for the
    process to go idle before every timed call measures each library without the other's
    leftovers.
    """
    start = time.perf_counter()
    idle = 0
    while idle < SETTLE_IDLE_SLICES and time.perf_counter() - start < SETTLE_MAX_S:
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(SETTLE_SLICE_S)
        busy = time.process_time() - cpu >= SETTLE_IDLE_SHARE * (time.perf_counter() - wall)
        idle = 0 if busy else idle + 1
    return time.perf_counter() - start


PRIME_S = 0.010  # untimed calls before each settled timed call: at least this long, at least one
PRIME_MAX_CALLS = 50


def prime(fn: Thunk, seconds: float = PRIME_S) -> None:
    """Calls ``fn`` (untimed) until ``seconds`` have passed: at least once, at most
    PRIME_MAX_CALLS times.

    On the 2-core KVM dev VM, a call made within a few milliseconds of an idle pause ran slower
    than in a loop even after one untimed call: convt's dcgan_out forward took 1.45-7.9 ms
    (median about 1.9) timed after one priming call, 1.40-1.8 ms (median 1.44) after 10 ms of
    them; torch's took 2.8-5.9 ms either way (its OpenMP workers spin for several ms after each
    call, which keeps them going).
    """
    start = time.perf_counter()
    for _ in range(PRIME_MAX_CALLS):
        fn()
        if time.perf_counter() - start >= seconds:
            break


def interleave(
    fns: Mapping[str, Thunk],
    warmup: int,
    repeats: int,
    settled: bool = True,
    prime_s: float = PRIME_S,
) -> dict[str, list[float]]:
    """Runs the functions in turn, ``warmup`` untimed then ``repeats`` timed rounds.

    Each round runs every function once; the order rotates from round to round, so that no
    function always runs right after the same other one. With ``settled``, every timed call
    follows a wait for the process to go idle (``settle``) and then untimed calls of the same
    function for ``prime_s`` seconds (at least one call; ``prime``), so it is measured as in a
    loop of its own calls: warm caches and threads, none of the other library's threads still
    running. (Timed straight after the wait, calls ran slower than in a loop: dil2's forward
    took 7.75 ms against 4.2 ms.) Returns seconds per call, per name.
    """
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    with gc_paused():
        for i in range(warmup + repeats):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                if settled:
                    settle()
                    prime(fns[name], prime_s)
                t = _timed(fns[name])
                if i >= warmup:
                    samples[name].append(t)
    return samples


# --------------------------------------------------------------------------------------------
# Cases


# The ops timed per shape: the backward whole (dX, dW and dB in one call, as training runs it),
# then its two GEMMs alone, whose % of peak the issue's goals name one by one.
OPS = ("forward", "backward", "grad_input", "grad_weight")


@dataclass
class Case:
    """Callables for one shape: per op (OPS), per implementation."""

    ops: dict[str, dict[str, Thunk]]
    flops: dict[str, float]
    rel_err: dict[str, float | None]


def _rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|, in float64."""
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = max(float(np.abs(want64).max(initial=0.0)), 1e-30)
    return float(np.abs(got64 - want64).max(initial=0.0)) / scale


def build_case(
    shape: Shape,
    batch: int,
    dtype: np.dtype,
    with_torch: bool,
    seed: int,
    check: bool = True,
    layout: str = "NCHW",
) -> Case:
    """Prepares inputs, convt layer and torch tensors for ``shape``; with ``check``, runs both
    once and compares their results. ``layout`` "NHWC": convt's arrays keep channels last
    (NLC for 1-D shapes) and torch's tensors are channels_last (2-D) or the same NLC memory
    seen as NCL (1-D: torch has no channels-last format for 3-D tensors)."""
    dims = len(shape.size)
    last = layout == "NHWC"
    layer_cls = convt.ConvTranspose2d if dims == 2 else convt.ConvTranspose1d
    layer = layer_cls(
        shape.cin,
        shape.cout,
        shape.k,
        stride=shape.s,
        padding=shape.p,
        output_padding=shape.op,
        groups=shape.groups,
        bias=True,
        dilation=shape.dilation,
        dtype=dtype,
        seed=seed,
        layout=("NHWC" if dims == 2 else "NLC") if last else None,
    )
    rng = np.random.default_rng(seed)

    def laid_out(a: np.ndarray) -> np.ndarray:  # channels moved last, contiguous there
        return np.ascontiguousarray(np.moveaxis(a, 1, -1)) if last else a

    x = laid_out(
        rng.standard_normal((batch, shape.cin, *shape.size), dtype=np.float32).astype(dtype)
    )
    size = shape.output_size()
    out = np.empty((batch, *size, shape.cout) if last else (batch, shape.cout, *size), dtype)
    grad_out = rng.standard_normal(out.shape, dtype=np.float32).astype(dtype)
    weight = layer.weight
    geometry = (shape.s, shape.p, shape.op, shape.groups, shape.dilation)

    def convt_forward() -> object:
        return layer(x, out=out)

    # Preallocated gradients, written in place as the forward's out= (a training loop keeps its
    # buffers; a fresh 32 MB dX is page-faulted in on every call).
    grads = (np.empty_like(x), np.empty(weight.shape, dtype), np.empty(shape.cout, dtype))

    def convt_backward() -> object:  # the layer's weights, prepared once, as in the forward
        return layer.backward(x, grad_out, out=grads)

    def convt_grad_input() -> object:
        return layer.backward(x, grad_out, (True, False, False), out=(grads[0], None, None))[0]

    def convt_grad_weight() -> object:
        return layer.backward(x, grad_out, (False, True, False), out=(None, grads[1], None))[1]

    macs = shape.macs(batch)
    case = Case(
        ops={
            "forward": {"convt": convt_forward},
            "backward": {"convt": convt_backward},
            "grad_input": {"convt": convt_grad_input},
            "grad_weight": {"convt": convt_grad_weight},
        },
        # dX + dW for the backward (dB ignored)
        flops={"forward": 2.0 * macs, "backward": 2.0 * 2.0 * macs}
        | {op: 2.0 * macs for op in ("grad_input", "grad_weight")},
        rel_err={op: None for op in OPS},
    )
    convt_grads = None
    if check:
        convt_forward()
        convt_grads = convt_backward()
    if not with_torch:
        return case

    def tensor(a: np.ndarray) -> Any:
        return torch.from_numpy(np.array(a, dtype=np.float32))  # a writable fp32 copy

    def image(a: np.ndarray) -> Any:  # a convt image array as torch's (N, C, ...) tensor
        if not last:
            return tensor(a)
        t = tensor(a).movedim(-1, 1)  # the same channels-last memory
        return t.contiguous(memory_format=torch.channels_last) if dims == 2 else t

    def as_convt(t: Any) -> np.ndarray:  # a torch image result in convt's layout
        a = t.numpy()
        return np.moveaxis(a, 1, -1) if last else a

    xt, wt, bt, gyt = image(x), tensor(weight), tensor(layer.bias), image(grad_out)
    conv = F.conv_transpose2d if dims == 2 else F.conv_transpose1d

    def torch_forward() -> object:
        return conv(xt, wt, bt, *geometry)

    aten = getattr(torch.ops.aten, "convolution_backward", None)
    if aten is not None:
        stride, padding, output_padding, dilation = (
            [v] * dims for v in (shape.s, shape.p, shape.op, shape.dilation)
        )

        def torch_grads(mask: list[bool]) -> Callable[[], Any]:
            return lambda: aten(
                gyt,
                xt,
                wt,
                [shape.cout],
                stride,
                padding,
                dilation,
                True,
                output_padding,
                shape.groups,
                mask,
            )

        torch_backward = torch_grads([True, True, True])
        torch_grad_input = torch_grads([True, False, False])
        torch_grad_weight = torch_grads([False, True, False])
    else:  # autograd on a graph built once, outside the timed region
        leaves = [t.clone().requires_grad_(True) for t in (xt, wt, bt)]
        graph = conv(*leaves, *geometry)

        def torch_backward() -> object:
            return torch.autograd.grad(graph, leaves, gyt, retain_graph=True)

        def torch_grad_input() -> object:
            return torch.autograd.grad(graph, leaves[:1], gyt, retain_graph=True)

        def torch_grad_weight() -> object:
            return torch.autograd.grad(graph, leaves[1:2], gyt, retain_graph=True)

    case.ops["forward"]["torch"] = torch_forward
    case.ops["backward"]["torch"] = torch_backward
    case.ops["grad_input"]["torch"] = torch_grad_input
    case.ops["grad_weight"]["torch"] = torch_grad_weight
    if convt_grads is None:
        return case
    case.rel_err["forward"] = _rel_err(out, as_convt(torch_forward()))
    dx_want, dw_want, db_want = torch_backward()
    case.rel_err["backward"] = max(
        _rel_err(got, want)
        for got, want in zip(convt_grads, (as_convt(dx_want), dw_want.numpy(), db_want.numpy()))
    )
    for op, got, fn in (
        ("grad_input", convt_grads[0], torch_grad_input),
        ("grad_weight", convt_grads[1], torch_grad_weight),
    ):  # the one gradient asked for: the first tensor of torch's result
        want = next(t for t in fn() if t is not None and t.numel())
        case.rel_err[op] = _rel_err(got, as_convt(want) if op == "grad_input" else want.numpy())
    return case


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class OpResult:
    """One shape and op: timings (seconds per call) and derived figures."""

    shape: str
    op: str
    flops: float
    convt_s: list[float]
    torch_s: list[float] | None
    rel_err: float | None
    peak_gflops: float

    @property
    def convt_median(self) -> float:
        return statistics.median(self.convt_s)

    @property
    def torch_median(self) -> float | None:
        return statistics.median(self.torch_s) if self.torch_s else None

    @property
    def ratio(self) -> float | None:
        """torch time / convt time: above 1, convt is faster."""
        t = self.torch_median
        return None if t is None else t / self.convt_median

    def gflops(self, seconds: float | None) -> float | None:
        return None if seconds is None else self.flops / seconds / 1e9

    def pct_peak(self, seconds: float | None) -> float | None:
        g = self.gflops(seconds)
        return None if g is None else 100.0 * g / self.peak_gflops

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "op": self.op,
            "flops": self.flops,
            "convt_ms": self.convt_median * 1e3,
            "torch_ms": None if self.torch_median is None else self.torch_median * 1e3,
            "ratio_torch_over_convt": self.ratio,
            "convt_gflops": self.gflops(self.convt_median),
            "torch_gflops": self.gflops(self.torch_median),
            "convt_pct_peak": self.pct_peak(self.convt_median),
            "torch_pct_peak": self.pct_peak(self.torch_median),
            "max_rel_err_vs_torch": self.rel_err,
            "convt_samples_ms": [t * 1e3 for t in self.convt_s],
            "torch_samples_ms": None if self.torch_s is None else [t * 1e3 for t in self.torch_s],
        }


@dataclass
class Report:
    """Everything one run measured, plus how it was run."""

    meta: dict[str, Any]
    results: list[OpResult] = field(default_factory=list)
    overhead_us: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: float = 0.0
    rss_apart: dict[str, float] = field(default_factory=dict)

    def geomean(self, op: str) -> float | None:
        ratios = [r.ratio for r in self.results if r.op == op and r.ratio is not None]
        if not ratios:
            return None
        return math.exp(sum(math.log(v) for v in ratios) / len(ratios))

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "results": [r.to_json() for r in self.results],
            "geomean_ratio_torch_over_convt": {op: self.geomean(op) for op in OPS},
            "overhead_us_per_call": self.overhead_us,
            "peak_rss_mib": self.peak_rss_mib,
            "peak_rss_mib_apart": self.rss_apart,
        }


def measure_overhead(
    with_torch: bool,
    dtype: np.dtype,
    warmup: int,
    repeats: int,
    calls: int,
    settled: bool,
    prime_s: float = PRIME_S,
) -> dict[str, float]:
    """Microseconds per call on a tiny layer (8->8, 4x4 input, k4 s2 p1, N=1), interleaved."""
    layer = convt.ConvTranspose2d(8, 8, 4, stride=2, padding=1, dtype=dtype, seed=0)
    x = np.random.default_rng(0).standard_normal((1, 8, 4, 4), dtype=np.float32).astype(dtype)
    w, b = layer.weight, layer.bias
    out = np.empty((1, 8, 8, 8), dtype=dtype)

    def loop(fn: Thunk) -> Thunk:
        def run() -> None:
            for _ in range(calls):
                fn()

        return run

    fns: dict[str, Thunk] = {
        "convt.conv_transpose2d": loop(lambda: convt.conv_transpose2d(x, w, b, 2, 1, out=out)),
        "convt layer call": loop(lambda: layer(x, out=out)),
    }
    if with_torch:
        xt, wt, bt = (torch.from_numpy(np.array(a, dtype=np.float32)) for a in (x, w, b))
        fns["torch F.conv_transpose2d"] = loop(lambda: F.conv_transpose2d(xt, wt, bt, 2, 1))
    samples = interleave(fns, warmup, repeats, settled, prime_s)
    return {name: statistics.median(s) / calls * 1e6 for name, s in samples.items()}


def run_shape(
    shape: Shape,
    args: argparse.Namespace,
    dtype: np.dtype,
    with_torch: bool,
    peak: float,
    progress: Progress,
    index: int,
) -> list[OpResult]:
    """Every op (OPS) of one shape, convt and torch interleaved; arrays die on return."""
    case = build_case(shape, args.batch, dtype, with_torch, args.seed + index, layout=args.layout)
    results = []
    for op, fns in case.ops.items():
        progress.step(f"{shape.name} {op}")
        samples = interleave(
            fns, args.warmup, args.repeats, not args.no_settle, args.prime_ms / 1e3
        )
        err = case.rel_err[op]
        if err is not None and err > REL_TOL[args.dtype]:
            print(f"\nWARNING: {shape.name} {op}: max rel err vs torch {err:.2e}", file=sys.stderr)
        results.append(
            OpResult(
                shape.name, op, case.flops[op], samples["convt"], samples.get("torch"), err, peak
            )
        )
    return results


RSS_RUNS = ("none", "convt", "torch")


def rss_child(args: argparse.Namespace) -> int:
    """``--rss-child RUN``: builds every case of the suite (convt's and torch's inputs both, as
    the timed run holds them), runs RUN's every op twice per shape ("none": nothing)
    and prints this process's peak RSS as JSON."""
    dtype = np.dtype(args.dtype)
    convt.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    shapes = [s for s in SUITE if args.shapes is None or s.name in args.shapes]
    for index, shape in enumerate(shapes):
        case = build_case(
            shape, args.batch, dtype, torch is not None, args.seed + index, False, args.layout
        )
        for fns in case.ops.values():
            fn = fns.get(args.rss_child)
            if fn is not None:
                fn()
                fn()
        del case
    print(json.dumps({"run": args.rss_child, "peak_rss_mib": peak_rss_mib(own=True)}))
    return 0


def measure_rss_apart(args: argparse.Namespace) -> dict[str, float]:
    """Peak RSS in MiB of a child process per run of RSS_RUNS (see rss_child)."""
    rss = {}
    for run in RSS_RUNS:
        command = [sys.executable, str(Path(__file__).resolve()), "--rss-child", run]
        command += ["--batch", str(args.batch), "--threads", str(args.threads)]
        command += ["--dtype", args.dtype, "--seed", str(args.seed), "--layout", args.layout]
        if args.shapes:
            command += ["--shapes", *args.shapes]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rss[run] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    return rss


def peak_rss_mib(own: bool = False) -> float:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, B on macOS).

    With ``own``, on Linux, the high-water mark of this process's own memory (VmHWM): a child's
    ru_maxrss starts at its parent's, since Linux keeps it across fork and exec."""
    if own:
        with contextlib.suppress(OSError, StopIteration, ValueError):
            with open("/proc/self/status") as status:
                line = next(x for x in status if x.startswith("VmHWM:"))
            return int(line.split()[1]) / 1024.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


# --------------------------------------------------------------------------------------------
# Progress


class Progress:
    """tqdm when installed (and wanted), else a one-line counter on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.count, self.enabled = total, 0, enabled
        self._bar = None
        if enabled:
            with contextlib.suppress(ImportError):
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit="case", file=sys.stderr, leave=False)

    def step(self, label: str) -> None:
        """Announces the case about to run (the previous one is done)."""
        if self._bar is not None:
            if self.count:
                self._bar.update(1)
            self._bar.set_description(label)
        elif self.enabled and sys.stderr.isatty():
            print(f"\r[{self.count + 1}/{self.total}] {label:<32}", end="", file=sys.stderr)
        elif self.enabled:
            print(f"[{self.count + 1}/{self.total}] {label}", file=sys.stderr)
        self.count += 1

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.close()
        elif self.enabled and sys.stderr.isatty():
            print(file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Output: text, Markdown, JSON, plot


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _plural(count: int | str, noun: str) -> str:
    return f"{count} {noun}{'' if int(count) == 1 else 's'}"


def markdown_section(report: Report) -> str:
    """The '## CPU' section of RESULTS.md for this run."""
    m = report.meta
    fp16 = m["dtype"] == "float16"
    torch_label = "torch (fp32)" if fp16 else "torch"
    mach, peak = m["machine"], m["peak"]
    lines = [
        section_title(m),
        "",
        "Generated by `bench/bench_cpu.py` (rerun it with `--markdown` to replace this section).",
        "",
        f"- Machine: {mach['model']} (lscpu model name), {_plural(mach['cores'], 'core')} "
        f"({_plural(mach['sockets'], 'socket')}, {mach['threads_per_core']} thread/core"
        + (f", {mach['hypervisor']} guest" if mach["hypervisor"] else "")
        + f"); load average (1/5/15 min) at start {m['loadavg_start']}, at end "
        f"{m['loadavg_end']}.",
        f"- Date: {m['date']}.",
        f"- Command: `{m['command']}`",
        f"- N={m['batch']}, threads={m['threads']} (convt.set_num_threads and "
        f"torch.set_num_threads), dtype {m['dtype']}, layout {m.get('layout', 'NCHW')}, median of "
        f"{_plural(m['repeats'], 'timed repeat')} after {_plural(m['warmup'], 'warm-up')}.",
        f"- convt {m['versions']['convt']}, torch {m['versions']['torch']}, numpy "
        f"{m['versions']['numpy']}, Python {m['versions']['python']}.",
        "- Measured peak proxy: "
        + ", ".join(
            f"{_plural(t, 'thread')} {peak['measured_gflops'][t]:.1f} GFLOP/s ("
            + ", ".join(f"{name} {g:.1f}" for name, g in each.items())
            + ")"
            for t, each in peak["measured_gflops_by_backend"].items()
        )
        + f"; the best matmul, {peak['method']}. Theoretical AVX2 peak, "
        f"{_plural(m['threads'], 'thread')}: "
        f"{_fmt(peak['theoretical_gflops'], '.1f')} GFLOP/s (cores x GHz x 32 fp32 FLOP/cycle; "
        f"clock from {mach['mhz_source']}). % of peak is of the measured proxy for "
        f"{_plural(m['threads'], 'thread')}.",
        "- GFLOP/s are nominal: forward 2 x MACs of Shape.macs (the scatter form, taps cropped "
        "by padding included, so an implementation that skips them can pass 100% of peak); "
        "backward computes dX and dW, 2 x 2 x MACs (dB not counted); grad_input (dX alone) "
        "and grad_weight (dW alone), 2 x MACs each.",
        "- convt forward: a ConvTranspose1d/2d layer (weights prepared once) called with a "
        "preallocated out=; convt backward: the same layer's backward() (all three gradients, "
        "into preallocated out= arrays; weights prepared once), grad_input and grad_weight the "
        "same call asking for that gradient alone. torch forward: F.conv_transpose{1,2}d; torch "
        f"backward: {m['torch_backward']} (all three gradients, or the one asked for).",
    ]
    if m.get("layout", "NCHW") != "NCHW":
        lines.append(
            "- Layout NHWC: convt's arrays keep channels last (NLC for 1-D shapes); torch's image "
            "tensors are channels_last (2-D shapes), or the same NLC memory seen as NCL (1-D: "
            "torch has no channels-last format for 3-D tensors)."
        )
    if m["with_torch"]:
        lines.append(
            "- Ratios are torch time / convt time (> 1: convt is faster), measured interleaved "
            "in one process (convt and torch repetitions alternate)."
        )
        lines.append(
            "- Before every timed call the bench waited for the process to go idle (torch's OpenMP "
            "workers spin for a while after each torch call, on the cores the next call needs), "
            + (
                f"then made untimed calls of the same function for {m['prime_ms']:g} ms (at least "
                "one)"
                if "prime_ms" in m
                else "then made one untimed call of the same function"
            )
            + ": each library is timed as in a loop of its own calls (`--no-settle` turns this "
            "off)."
            if m.get("settled")
            else "- Calls ran back to back (`--no-settle`): a call that follows a torch call "
            "shares the cores with torch's still-spinning OpenMP workers."
        )
        if fp16:
            lines.append(
                "- **fp16 run, report only**: convt runs float16 arrays, torch runs float32 "
                "(the ratio is torch fp32 / convt fp16); % of peak is of the fp32 peak; the "
                "error column compares convt fp16 with torch fp32."
            )
    else:
        lines.append("- torch not measured (not installed or --no-torch): no ratios.")
    if peak.get("warning"):
        lines.append(f"- **Warning**: {peak['warning']}")
    lines += [
        "",
        f"| shape | op | convt ms | {torch_label} ms | torch/convt | convt GFLOP/s | "
        f"{torch_label} GFLOP/s | convt % peak | {torch_label} % peak | max rel err |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.results:
        t = r.torch_median
        lines.append(
            f"| {r.shape} | {r.op} | {r.convt_median * 1e3:.2f} | "
            f"{_fmt(None if t is None else t * 1e3, '.2f')} | {_fmt(r.ratio, '.2f')} | "
            f"{r.gflops(r.convt_median):.1f} | {_fmt(r.gflops(t), '.1f')} | "
            f"{r.pct_peak(r.convt_median):.1f} | {_fmt(r.pct_peak(t), '.1f')} | "
            f"{_fmt(r.rel_err, '.1e')} |"
        )
    shapes = len({r.shape for r in report.results})
    lines += [
        "",
        f"Geomean torch/convt over {_plural(shapes, 'shape')}: "
        + ", ".join(f"{op} {_fmt(report.geomean(op), '.2f')}" for op in OPS)
        + ".",
        "",
        "Per-call overhead, tiny layer (8->8 channels, 4x4 input, k4 s2 p1, N=1; median of "
        f"{_plural(m['repeats'], 'sample')} of {_plural(m['overhead_calls'], 'call')}): "
        + ", ".join(f"{name} {us:.1f} us" for name, us in report.overhead_us.items())
        + ".",
        "",
        f"Peak RSS of the benchmark process: {report.peak_rss_mib:.0f} MiB.",
        "",
    ]
    if report.rss_apart:
        r = report.rss_apart
        lines[-1:-1] = [
            "Peak RSS apart (a child process each, holding the inputs of every shape run for "
            "both libraries; `none` runs nothing, the others run every shape's forward and "
            f"backward twice): none {r['none']:.0f} MiB, convt {r['convt']:.0f} MiB "
            f"(+{r['convt'] - r['none']:.0f}), torch {r['torch']:.0f} MiB "
            f"(+{r['torch'] - r['none']:.0f}).",
        ]
    return "\n".join(lines)


def write_markdown(path: Path, section: str, title_re: re.Pattern = SECTION_RE) -> str:
    """Replaces the section of ``path`` whose title matches ``title_re`` (default '## CPU', up
    to the next '## '), else appends it."""
    old = path.read_text().splitlines() if path.exists() else []
    start = next((i for i, line in enumerate(old) if title_re.match(line)), None)
    new = section.rstrip("\n").splitlines()
    if start is None:
        lines = old + ([""] if old and old[-1].strip() else []) + new
        action = "appended to"
    else:
        end = next(
            (i for i in range(start + 1, len(old)) if NEXT_SECTION_RE.match(old[i])), len(old)
        )
        lines = old[:start] + new + ([""] if end < len(old) else []) + old[end:]
        action = "replaced in"
    path.write_text("\n".join(lines) + "\n")
    return action


def write_plot(path: Path, report: Report) -> None:
    """Two panels: torch/convt ratio per shape, and % of peak per shape (forward, backward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r.shape for r in report.results))
    by = {(r.shape, r.op): r for r in report.results}
    ops = [op for op in OPS if any(k[1] == op for k in by)]
    xs = np.arange(len(shapes))
    m = report.meta
    fig, (ax_ratio, ax_peak) = plt.subplots(2, 1, figsize=(max(8, 0.9 * len(shapes) + 3), 8))
    fig.suptitle(
        f"convt vs torch, CPU: {m['machine']['model']}, N={m['batch']}, "
        f"threads={m['threads']}, {m['dtype']} ({m['date']})"
    )

    def values(op: str, get: Callable[[OpResult], float | None]) -> list[float]:
        out = []
        for s in shapes:
            r = by.get((s, op))
            v = None if r is None else get(r)
            out.append(math.nan if v is None else v)
        return out

    width = 0.8 / max(len(ops), 1)
    for i, op in enumerate(ops):
        bars = ax_ratio.bar(
            xs + (i - (len(ops) - 1) / 2) * width, values(op, lambda r: r.ratio), width, label=op
        )
        ax_ratio.bar_label(bars, fmt="%.2f", fontsize=7)
    ax_ratio.axhline(1.0, color="black", linewidth=0.8)
    ax_ratio.set_yscale("log")
    ax_ratio.set_ylabel("torch time / convt time (>1: convt faster)")
    ax_ratio.set_xticks(xs, shapes, rotation=30, ha="right")
    ax_ratio.legend()
    if not m["with_torch"]:
        ax_ratio.set_title("torch not measured")

    series = [(impl, op) for impl in ("convt", "torch") for op in ops]
    if not m["with_torch"]:
        series = [(impl, op) for impl, op in series if impl == "convt"]
    width = 0.8 / max(len(series), 1)
    for i, (impl, op) in enumerate(series):

        def get(r: OpResult, impl: str = impl) -> float | None:
            return r.pct_peak(r.convt_median if impl == "convt" else r.torch_median)

        ax_peak.bar(
            xs + (i - (len(series) - 1) / 2) * width, values(op, get), width, label=f"{impl} {op}"
        )
    ax_peak.set_ylabel(
        f"% of measured peak ({m['peak']['measured_gflops'][str(m['threads'])]:.0f} GFLOP/s)"
    )
    ax_peak.set_xticks(xs, shapes, rotation=30, ha="right")
    ax_peak.legend(ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_summary(report: Report) -> None:
    """A compact plain-text table on stdout."""
    print(
        f"\n{'shape':<12} {'op':<11} {'convt ms':>9} {'torch ms':>9} {'t/c':>6} "
        f"{'GFLOP/s':>8} {'%peak':>6} {'torch%':>6} {'relerr':>8}"
    )
    for r in report.results:
        t = r.torch_median
        print(
            f"{r.shape:<12} {r.op:<11} {r.convt_median * 1e3:>9.2f} "
            f"{_fmt(None if t is None else t * 1e3, '.2f'):>9} {_fmt(r.ratio, '.2f'):>6} "
            f"{r.gflops(r.convt_median):>8.1f} {r.pct_peak(r.convt_median):>6.1f} "
            f"{_fmt(r.pct_peak(t), '.1f'):>6} {_fmt(r.rel_err, '.1e'):>8}"
        )
    print(
        "geomean torch/convt: " + ", ".join(f"{op} {_fmt(report.geomean(op), '.2f')}" for op in OPS)
    )
    print(
        "overhead per call: " + ", ".join(f"{k} {v:.1f} us" for k, v in report.overhead_us.items())
    )
    print(f"peak RSS: {report.peak_rss_mib:.0f} MiB")
    if report.rss_apart:
        print(
            "peak RSS apart (MiB): "
            + ", ".join(f"{k} {v:.0f}" for k, v in report.rss_apart.items())
        )


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    names = [s.name for s in SUITE]
    p = argparse.ArgumentParser(
        description="Times convt against torch on the CPU over the suite in bench/shapes.py.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--shapes",
        nargs="+",
        metavar="NAME",
        choices=names,
        help=f"suite shapes to run (default: all): {' '.join(names)}",
    )
    p.add_argument("--batch", type=int, default=8, help="batch size N")
    p.add_argument("--threads", type=int, default=2, help="threads for convt and torch")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up repeats")
    p.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="convt's dtype; with float16 torch runs float32 (report only)",
    )
    p.add_argument(
        "--layout",
        choices=("NCHW", "NHWC"),
        default="NCHW",
        help="image layout: NHWC keeps channels last (NLC for 1-D shapes) for convt, and torch "
        "runs channels_last tensors",
    )
    p.add_argument("--no-torch", action="store_true", help="time convt alone")
    p.add_argument(
        "--no-settle",
        action="store_true",
        help="time each call right after the previous one, without waiting for the process's "
        "threads (torch's spinning OpenMP workers) to go idle",
    )
    p.add_argument(
        "--prime-ms",
        type=float,
        default=PRIME_S * 1e3,
        help="after the idle wait, untimed calls of the same function for this long (at least "
        "one) before each timed call",
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="JSON output path")
    p.add_argument(
        "--markdown",
        type=Path,
        nargs="?",
        const=DEFAULT_RESULTS,
        default=None,
        metavar="PATH",
        help="replace/append the '## CPU' section of PATH "
        f"(given alone: {DEFAULT_RESULTS.relative_to(BENCH_DIR.parent)})",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="PNG plot path; None: the --json path with .png (runs of other settings then keep "
        "their own plots)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the plot")
    p.add_argument("--overhead-calls", type=int, default=200, help="calls per overhead sample")
    p.add_argument("--peak-size", type=int, default=1536, help="matmul size for the peak proxy")
    p.add_argument("--seed", type=int, default=0, help="seed of inputs and weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-rss",
        action="store_true",
        help="skip the peak-RSS runs (convt alone, torch alone, in child processes)",
    )
    p.add_argument("--rss-child", choices=RSS_RUNS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("batch", "threads", "repeats", "overhead_calls", "peak_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def command_line() -> str:
    """The command as run (PYTHONPATH included when set)."""
    env = (
        f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} " if "PYTHONPATH" in os.environ else ""
    )
    return env + "python " + shlex.join(sys.argv)


def loadavg() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    return "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rss_child:
        return rss_child(args)
    dtype = np.dtype(args.dtype)
    with_torch = torch is not None and not args.no_torch
    shapes = [s for s in SUITE if args.shapes is None or s.name in args.shapes]
    machine = read_machine()
    load_start = loadavg()

    # Peak proxy, on 1 and on --threads threads.
    by_backend = {str(t): measure_peak(t, args.peak_size) for t in sorted({1, args.threads})}
    measured = {t: max(results.values()) for t, results in by_backend.items()}
    method = f"{args.peak_size}^3 fp32, best of 5 calls"
    theoretical = machine.theoretical_gflops(args.threads)
    print(
        f"machine: {machine.model}, {machine.cores} cores; clock {_fmt(machine.mhz, '.0f')} MHz "
        f"from {machine.mhz_source}"
    )
    for t, results in by_backend.items():
        each = ", ".join(f"{name} {g:.1f}" for name, g in results.items())
        print(f"measured peak proxy, {_plural(t, 'thread')}: {measured[t]:.1f} GFLOP/s ({each})")
    print(
        f"theoretical AVX2 fp32 peak, {_plural(args.threads, 'thread')}: "
        f"{_fmt(theoretical, '.1f')} GFLOP/s (cores x GHz x 32)"
    )
    peak = measured[str(args.threads)]
    warning = None
    if args.threads > 1 and peak < measured["1"]:
        warning = (
            f"the {args.threads}-thread peak proxy is below the 1-thread one: the machine was "
            "busy (or has fewer free cores than threads); absolute times and % of peak are "
            "unreliable, ratios less so"
        )
        print(f"WARNING: {warning}", file=sys.stderr)

    convt.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    torch_backward = "-"
    if with_torch:
        torch_backward = (
            "torch.ops.aten.convolution_backward"
            if hasattr(torch.ops.aten, "convolution_backward")
            else "torch.autograd.grad on a retained graph"
        )
    report = Report(
        meta={
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command_line(),
            "python_executable": sys.executable,
            "machine": vars(machine),
            "batch": args.batch,
            "threads": args.threads,
            "convt_threads": convt.get_num_threads(),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "settled": not args.no_settle,
            "prime_ms": args.prime_ms,
            "dtype": args.dtype,
            "layout": args.layout,
            "with_torch": with_torch,
            "torch_backward": torch_backward,
            "overhead_calls": args.overhead_calls,
            "shapes": [s.name for s in shapes],
            "versions": {
                "convt": convt.__version__,
                "torch": torch.__version__ if torch is not None else None,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
            "peak": {
                "method": method,
                "measured_gflops": measured,
                "measured_gflops_by_backend": by_backend,
                "theoretical_gflops": theoretical,
                "theoretical_formula": "min(threads, cores) x GHz x 32 fp32 FLOP/cycle (AVX2)",
                "used_for_pct": f"measured, {_plural(args.threads, 'thread')}",
                "warning": warning,
            },
            "loadavg_start": load_start,
        }
    )

    progress = Progress(2 * len(shapes) + 1, not args.no_progress)
    for index, shape in enumerate(shapes):
        report.results += run_shape(shape, args, dtype, with_torch, peak, progress, index)
    progress.step("overhead")
    report.overhead_us = measure_overhead(
        with_torch,
        dtype,
        args.warmup,
        args.repeats,
        args.overhead_calls,
        not args.no_settle,
        args.prime_ms / 1e3,
    )
    progress.close()
    report.meta["loadavg_end"] = loadavg()
    report.peak_rss_mib = peak_rss_mib()
    if with_torch and not args.no_rss:
        report.rss_apart = measure_rss_apart(args)

    print_summary(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    print(f"wrote {args.json}")
    if args.markdown is not None:
        title = section_title(report.meta)
        action = write_markdown(
            args.markdown, markdown_section(report), re.compile("^" + re.escape(title) + "$")
        )
        print(f"section '{title}' {action} {args.markdown}")
    if not args.no_plot:
        plot = args.plot if args.plot is not None else args.json.with_suffix(".png")
        try:
            write_plot(plot, report)
            print(f"wrote {plot}")
        except ImportError:
            print("matplotlib not installed: no plot (pip install matplotlib)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
