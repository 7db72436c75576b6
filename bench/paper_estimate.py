"""Paper roofline of convt's Metal kernels on an Apple GPU (no Mac is available to measure).

For each suite shape and kernel (forward, dX, dW) it counts FLOPs (2 x multiply-adds) and the
compulsory DRAM bytes (fp32: read the inputs once, write the output once), and bounds the time
by max(FLOPs / peak, bytes / bandwidth). Figures: Apple M2, 10-core GPU, as published by Apple
(3.6 TFLOP/s fp32, 100 GB/s unified memory).

    python bench/paper_estimate.py >> bench/RESULTS.md
"""

from __future__ import annotations

import math

from shapes import SUITE

PEAK_FLOPS = 3.6e12
BANDWIDTH = 100e9
BATCH = 8
ITEM = 4  # fp32


def main() -> None:
    print(f"### Paper estimate: Metal kernels on Apple M2 (10-core GPU), N={BATCH}, fp32\n")
    print(
        "Peak 3.6 TFLOP/s fp32, 100 GB/s (Apple's published M2 figures); ridge point "
        f"{PEAK_FLOPS / BANDWIDTH:.0f} FLOP/byte. Bound = max(FLOPs/peak, bytes/bandwidth).\n"
    )
    print("| shape | kernel | GFLOP | MB moved | FLOP/byte | bound | roofline time (us) |")
    print("|---|---|---|---|---|---|---|")
    for s in SUITE:
        x = BATCH * s.cin * math.prod(s.size)
        y = BATCH * s.cout * math.prod(s.output_size())
        w = s.cin * (s.cout // s.groups) * s.k ** len(s.size)
        flops = 2 * s.macs(BATCH)
        for kernel, elements in (("forward", x + w + y), ("dX", y + w + x), ("dW", x + y + w)):
            nbytes = elements * ITEM
            t_compute, t_memory = flops / PEAK_FLOPS, nbytes / BANDWIDTH
            bound = "compute" if t_compute >= t_memory else "memory"
            print(
                f"| {s.name} | {kernel} | {flops / 1e9:.3f} | {nbytes / 1e6:.2f} | "
                f"{flops / nbytes:.1f} | {bound} | {max(t_compute, t_memory) * 1e6:.1f} |"
            )


if __name__ == "__main__":
    main()
