#!/usr/bin/env python3
"""Feeds corrupt serialized kernels to ``from_bytes`` and reports what happened.

    python tools/fuzz_deserialize.py [--cases 100000] [--seed 1] [--chunk 2000] [--device cpu]

(convt is imported as installed, or from PYTHONPATH=python in a development tree.)

Inputs are mutations of valid ``to_bytes()`` blobs of several kernels (forward and gradient,
float32/float16/uint8 weights, batch norm, PReLU): bit flips, byte overwrites, truncations,
insertions, deletions, extreme values written over length/count fields, splices of two blobs and
random bytes. Half of the mutated blobs get their header fixed up afterwards (payload size and
CRC-32 recomputed), so the payload parser itself is reached instead of the checksum.

Each chunk of cases runs in a child process with a timeout, so a crash (signal) or a hang is
detected and attributed to its chunk; the chunk is then replayed case by case to name the input.
A loaded kernel is also run once on a small image (a manual encode), since a kernel that loads but
then reads out of bounds is as bad as a crash. Outcomes: ``rejected`` (ValueError naming the
serialized data), ``loaded+ran``, ``loaded, encode refused`` (ValueError from encode), and the
failures: ``wrong exception``, ``crash``, ``hang``. The exit status is 1 if any failure occurred.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import struct
import subprocess
import sys
import time
import zlib

HEADER = 8 + 4 + 4 + 8 + 4  # magic, version, kind, payload size, CRC-32
EXTREMES = [0, 1, 2, 3, 255, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**62, 2**63 - 1,
            2**63, 2**64 - 1]  # fmt: skip
PREFIX = "convt serialized data"


def make_blobs() -> list[tuple[str, bytes]]:
    """(kind, to_bytes()) for a set of differently configured kernels."""
    import convt
    import numpy as np

    rng = np.random.default_rng(0)
    dev = convt.Device("cpu")
    blobs = []
    for variant in range(6):
        desc = convt.ConvolutionDescriptor(3, 2, 4, 6)
        desc.groups = 2 if variant % 2 else 1
        desc.stride_in_pixels_x = 2
        desc.dilation_rate_y = 1 + variant % 3
        ig = 4 // desc.groups
        w = rng.uniform(-1, 1, (6, 2, 3, ig)).astype(np.float32)
        extra: dict = {}
        if variant == 2:
            w = w.astype(np.float16)
        if variant == 3:
            w = rng.integers(0, 256, w.shape).astype(np.uint8)
            extra = {
                "quantization": convt.QuantizationType.linear,
                "ranges": np.tile(np.array([-1, 1], np.float32), (6, 1)),
            }
        if variant == 4:
            desc.fused_neuron_descriptor = convt.NeuronDescriptor(
                convt.NeuronType.prelu, data=rng.uniform(-1, 1, 6).astype(np.float32)
            )
            ones = np.ones(6, np.float32)
            desc.set_batch_normalization_parameters_for_inference(ones, ones, ones, ones, 1e-3)
        if variant == 5:
            extra = {"kernel_weights_data_type": convt.DataType.float32}
        bias = rng.uniform(-1, 1, 6).astype(np.float32) if variant != 1 else None
        source = convt.ArrayDataSource(desc, w, bias, label=f"variant {variant}", **extra)
        fwd = convt.ConvolutionTranspose(dev, source)
        fwd.offset = (variant - 2, 1, 0)
        fwd.clip_rect = convt.Region(0, 1, 0, 5, 4, 1)
        fwd.destination_feature_channel_offset = variant % 2
        blobs.append(("forward", fwd.to_bytes()))
        if variant != 3:  # the gradient kernel refuses uint8 weights
            blobs.append(("gradient", convt.ConvolutionTransposeGradient(dev, source).to_bytes()))
    return blobs


def fix_header(data: bytearray) -> bytearray:
    """Makes the header consistent with the (mutated) payload: size and CRC-32."""
    if len(data) >= HEADER:
        payload = bytes(data[HEADER:])
        data[16:24] = struct.pack("<Q", len(payload))
        data[24:28] = struct.pack("<I", zlib.crc32(payload))
    return data


def mutate(rnd: random.Random, blobs: list[tuple[str, bytes]]) -> tuple[str, str, bytes]:
    """(kind, operation, corrupt bytes) for one case."""
    kind, blob = blobs[rnd.randrange(len(blobs))]
    data = bytearray(blob)
    n = len(data)
    op = rnd.choice(
        ["flip", "bytes", "truncate", "insert", "delete", "integer", "integer", "splice", "random"]
    )
    lo = HEADER if rnd.random() < 0.8 else 0  # mostly the payload, sometimes the header
    if op == "flip":
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(lo, n)] ^= 1 << rnd.randrange(8)
    elif op == "bytes":
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(lo, n)] = rnd.randrange(256)
    elif op == "truncate":
        data = data[: rnd.randrange(n)]
    elif op == "insert":
        pos = rnd.randrange(lo, n + 1)
        data[pos:pos] = rnd.randbytes(rnd.randint(1, 16))
    elif op == "delete":
        pos = rnd.randrange(lo, n)
        del data[pos : pos + rnd.randint(1, 16)]
    elif op == "integer":  # an extreme value over what may be a length, count or size field
        width = rnd.choice([1, 4, 8, 8])
        pos = rnd.randrange(lo, max(lo + 1, n - width))
        if width == 8 and rnd.random() < 0.7:
            pos -= (pos - lo) % 4  # fields are 4-byte aligned in the payload
        value = rnd.choice(EXTREMES + [rnd.randrange(1 << (8 * width))]) % (1 << (8 * width))
        data[pos : pos + width] = value.to_bytes(width, "little")
    elif op == "splice":
        _, other = blobs[rnd.randrange(len(blobs))]
        data = data[: rnd.randrange(n + 1)] + bytearray(other[rnd.randrange(len(other) + 1) :])
    else:
        data = bytearray(rnd.randbytes(rnd.randint(0, 600)))
        if rnd.random() < 0.5:  # a valid magic, version and kind, random payload
            data[:16] = blob[:16]
    fixed = op != "random" and rnd.random() < 0.5
    if fixed:
        data = fix_header(data)
    return kind, op + ("+header-fixed" if fixed else ""), bytes(data)


def run_case(kind: str, data: bytes, dev) -> str:
    """Loads one input (and runs the kernel if it loads); returns the outcome."""
    import convt
    import numpy as np

    cls = convt.ConvolutionTranspose if kind == "forward" else convt.ConvolutionTransposeGradient
    try:
        kernel = cls.from_bytes(data, device=dev)
    except ValueError as e:
        return "rejected" if str(e).startswith(PREFIX) else f"wrong exception: ValueError {e}"
    except Exception as e:  # noqa: BLE001 - any other type is a finding
        return f"wrong exception: {type(e).__name__}: {e}"
    try:
        if kind == "forward":
            channels = kernel.source_feature_channel_offset + kernel.input_feature_channels
            out_ch = kernel.destination_feature_channel_offset + kernel.output_feature_channels
            if channels > 256 or out_ch > 256:
                return "loaded, too large to run"
            x = np.ones((1, channels, 3, 3), np.float32)
            dst = np.zeros((1, out_ch, 5, 5), np.float32)
            cb = convt.CommandBuffer(dev)
            kernel.encode(cb, convt.Image(x), destination_image=convt.Image(dst))
            cb.commit()
            cb.wait_until_completed()
        else:  # a forward kernel over the loaded weights makes the state the gradient needs
            if kernel.input_feature_channels > 256 or kernel.output_feature_channels > 256:
                return "loaded, too large to run"
            fwd = convt.ConvolutionTranspose(dev, kernel.data_source)
            x = convt.Image(np.ones((1, kernel.input_feature_channels, 3, 3), np.float32))
            dst = convt.Image(np.zeros((1, kernel.output_feature_channels, 5, 5), np.float32))
            state = fwd.result_state(x, destination_image=dst)
            cb = convt.CommandBuffer(dev)
            kernel.encode(cb, convt.Image(np.ones_like(dst.array)), x, state)
            cb.commit()
            cb.wait_until_completed()
        return "loaded+ran"
    except ValueError:
        return "loaded, encode refused"
    except Exception as e:  # noqa: BLE001
        return f"wrong exception on encode: {type(e).__name__}: {e}"


def child(seed: int, start: int, count: int, device: str) -> None:
    """Runs cases [start, start+count) and prints one JSON line of outcome counts."""
    import convt

    dev = convt.Device(device)
    blobs = make_blobs()
    counts: collections.Counter = collections.Counter()
    failures = []
    for i in range(start, start + count):
        kind, op, data = mutate(random.Random(f"{seed}:{i}"), blobs)
        outcome = run_case(kind, data, dev)
        counts[outcome if not outcome.startswith("wrong") else "wrong exception"] += 1
        counts[f"op {op}"] += 1
        if outcome.startswith("wrong"):
            failures.append({"case": i, "op": op, "outcome": outcome[:300]})
    print(json.dumps({"counts": counts, "failures": failures}), flush=True)


def run_chunk(args, start: int, count: int) -> tuple[dict | None, str]:
    cmd = [sys.executable, __file__, "--child", str(start), str(count)]
    cmd += ["--seed", str(args.seed), "--device", args.device]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return None, "hang"
    if p.returncode != 0:
        return None, f"crash (exit {p.returncode}): {p.stderr.strip()[-300:]}"
    return json.loads(p.stdout.strip().splitlines()[-1]), ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per chunk")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=1, help="chunks run at once")
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.seed, args.child[0], args.child[1], args.device)
        return 0

    from concurrent.futures import ThreadPoolExecutor

    t0 = time.time()
    totals: collections.Counter = collections.Counter()
    failures: list = []
    starts = list(range(0, args.cases, args.chunk))
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [
            (s, pool.submit(run_chunk, args, s, min(args.chunk, args.cases - s))) for s in starts
        ]
        for s, fut in futures:
            result, problem = fut.result()
            if result is None:  # replay the chunk one case at a time to name the input
                for i in range(s, min(s + args.chunk, args.cases)):
                    one, why = run_chunk(args, i, 1)
                    if one is None:
                        totals[why.split(" ")[0]] += 1
                        failures.append({"case": i, "outcome": why})
                    else:
                        totals.update(one["counts"])
                        failures += one["failures"]
                continue
            totals.update(result["counts"])
            failures += result["failures"]
            done = s + args.chunk
            print(f"  {min(done, args.cases)} / {args.cases} cases", file=sys.stderr, flush=True)
    outcomes = {k: v for k, v in totals.items() if not k.startswith("op ")}
    ops = {k[3:]: v for k, v in totals.items() if k.startswith("op ")}
    n = sum(outcomes.values())
    print(f"deserialization fuzz: {n} cases, seed {args.seed}, device {args.device}, "
          f"{time.time() - t0:.0f} s")  # fmt: skip
    for name, count in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {name:28s} {count:7d}")
    print("  mutations: " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))
    for f in failures[:20]:
        print(f"  FAILURE {f}")
    bad = sum(v for k, v in outcomes.items() if k.startswith(("wrong", "crash", "hang")))
    print(f"failures: {bad}")
    return 1 if bad or n != args.cases else 0


if __name__ == "__main__":
    sys.exit(main())
