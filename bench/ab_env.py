"""In-process A/B: one suite shape and op timed under several environment settings, in turns.

    PYTHONPATH=python python bench/ab_env.py SHAPE OP [SETTING ...] [--threads 2] [--batch 8]
        [--rounds 16]

A SETTING is ``VAR=VALUE[,VAR=VALUE...]``; the empty string is the environment without any of
the variables named. The code under test must read its switch at each call (a temporary
``getenv`` choosing between the old and the new code of a change, say; CONVT_CPU_WINOGRAD is
read once and will not do), so that every setting runs in one process, on the same buffers.
Two worker processes of two builds are not comparable on a shared VM: an A/A run of
byte-identical builds read 1.4-1.6x on a memory-bound op (bench/RESULTS.md, session 13).
Prints each setting's median time (ms) over the rounds and the median of its per-round ratios
to the first setting.
"""

from __future__ import annotations

import argparse
import os
import time

import convt
import numpy as np
from bench_cpu import OPS, build_case
from shapes import SUITE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("shape", choices=[s.name for s in SUITE])
    ap.add_argument("op", choices=OPS)
    ap.add_argument("settings", nargs="*", default=[""])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--calls", type=int, default=5, help="timed calls a turn (median taken)")
    a = ap.parse_args()
    sh = next(s for s in SUITE if s.name == a.shape)
    convt.set_num_threads(a.threads)
    case = build_case(sh, a.batch, np.dtype(np.float32), with_torch=False, seed=0, check=False)
    run = case.ops[a.op]["convt"]
    parsed = [dict(kv.split("=", 1) for kv in s.split(",") if kv) for s in a.settings]
    names = {k for p in parsed for k in p}
    times: list[list[float]] = [[] for _ in parsed]
    for r in range(a.rounds):
        order = range(len(parsed)) if r % 2 == 0 else reversed(range(len(parsed)))
        for i in order:
            for k in names:
                os.environ.pop(k, None)
            os.environ.update(parsed[i])
            run()  # one untimed call under the new setting
            ts = []
            for _ in range(a.calls):
                t = time.perf_counter()
                run()
                ts.append(time.perf_counter() - t)
            times[i].append(float(np.median(ts)))
    for k in names:
        os.environ.pop(k, None)
    base = np.array(times[0])
    print(f"{a.shape} {a.op}, {a.threads} threads, N={a.batch}, {a.rounds} rounds:")
    for s, t in zip(a.settings, times):
        ratio = float(np.median(np.array(t) / base))
        print(f"  [{s or 'default'}] {1e3 * float(np.median(t)):.3f} ms, {ratio:.3f}x")


if __name__ == "__main__":
    main()
