#!/usr/bin/env python3
"""Generates the launch glue for MSL kernels (run by CMake, never by hand).

For every `kernel void NAME(...)` entry point in the given .metal files (after the C
preprocessor, so macro-made entry points count) it emits a wrapper that maps the kernel's
arguments (buffers by their [[buffer(n)]] index, built-ins by attribute) and calls it:

- target `sim`: a host function over convt_sim::ThreadArgs, plus the name -> function table
  behind convt_sim::find_kernel() (the MSL simulation);
- target `cuda`: an `extern "C" __global__` function over ConvtCudaLaunch
  (cpp/src/cuda/launch.h), plus the table behind convt_cuda_find_kernel().

    gen_glue.py --target sim|cuda --cpp CXX --include DIR --out glue.cpp file.metal...
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ENTRY = re.compile(r"\bkernel\s+void\s+(\w+)\s*\(")
PARAM = re.compile(
    r"^(?P<type>.*?)\s*(?P<name>\w+)\s*\[\[\s*(?P<attr>\w+)\s*(?:\((?P<arg>\d+)\))?\s*\]\]$"
)
VECTOR_BUILTINS = {
    "threadgroup_position_in_grid",
    "thread_position_in_threadgroup",
    "thread_position_in_grid",
    "threads_per_threadgroup",
    "threadgroups_per_grid",
}
SCALAR_BUILTINS = {
    "thread_index_in_threadgroup",
    "thread_index_in_simdgroup",
    "simdgroup_index_in_threadgroup",
}


def preprocess(cpp: str, include: str, path: Path) -> str:
    cmd = [
        cpp,
        "-E",
        "-P",
        "-x",
        "c++",
        "-std=c++17",
        f"-I{include}",
        str(path),
    ]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def entry_points(text: str) -> list[tuple[str, list[str]]]:
    """(name, [parameter text]) of each kernel, splitting parameters at depth-0 commas."""
    found = []
    for m in ENTRY.finditer(text):
        depth, params, cur = 1, [], ""
        for ch in text[m.end() :]:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    break
            if ch == "," and depth == 1:
                params.append(cur)
                cur = ""
            else:
                cur += ch
        params.append(cur)
        found.append((m.group(1), [p for p in params if p.strip()]))
    return found


def parse(param: str, kernel: str) -> tuple[str, str, str | None]:
    m = PARAM.match(" ".join(param.split()))
    if not m:
        sys.exit(
            f"gen_glue: {kernel}: cannot read parameter {param.strip()!r} (needs an attribute)"
        )
    return m["type"].strip(), m["attr"], m["arg"]


# CUDA expressions for the built-ins; `tg` is the threadgroup position including the launch's
# chunk offset, `lid` the thread's linear index in its threadgroup.
CUDA_BUILTINS = {
    "threadgroup_position_in_grid": "tg",
    "thread_position_in_threadgroup": "make_uint3(threadIdx.x, threadIdx.y, threadIdx.z)",
    "thread_position_in_grid": (
        "make_uint3(tg.x * blockDim.x + threadIdx.x, tg.y * blockDim.y + threadIdx.y, "
        "tg.z * blockDim.z + threadIdx.z)"
    ),
    "threads_per_threadgroup": "make_uint3(blockDim.x, blockDim.y, blockDim.z)",
    "threadgroups_per_grid": "make_uint3(a.grid[0], a.grid[1], a.grid[2])",
    "thread_index_in_threadgroup": "lid",
    "thread_index_in_simdgroup": "(lid % 32u)",
    "simdgroup_index_in_threadgroup": "(lid / 32u)",
}


def cuda_argument(param: str, kernel: str) -> str:
    ptype, attr, arg = parse(param, kernel)
    if attr == "buffer":
        if ptype.endswith("&"):
            return f"*reinterpret_cast<{ptype[:-1].strip()}*>(a.bytes)"
        return f"({ptype})a.buffers[{arg}]"
    if attr in CUDA_BUILTINS:
        expr = CUDA_BUILTINS[attr]
        if attr in VECTOR_BUILTINS and not ptype.endswith("3"):
            return f"{expr}.x"
        return expr
    sys.exit(f"gen_glue: {kernel}: attribute [[{attr}]] has no CUDA mapping")


def argument(param: str, kernel: str) -> str:
    ptype, attr, arg = parse(param, kernel)
    if attr == "buffer":
        if ptype.endswith("&"):
            return f"*({ptype[:-1].strip()}*)a.buffers[{arg}]"
        return f"({ptype})a.buffers[{arg}]"
    if attr in VECTOR_BUILTINS:
        if ptype.endswith("3"):
            return f"uint3{{a.{attr}.x, a.{attr}.y, a.{attr}.z}}"
        return f"a.{attr}.x"
    if attr in SCALAR_BUILTINS:
        return f"a.{attr}"
    sys.exit(f"gen_glue: {kernel}: attribute [[{attr}]] is not simulated")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=("sim", "cuda"), default="sim")
    ap.add_argument("--cpp", required=True, help="C++ compiler used as the preprocessor")
    ap.add_argument("--include", required=True, help="directory of the kernel headers")
    ap.add_argument("--out", required=True)
    ap.add_argument("sources", nargs="+")
    args = ap.parse_args()

    mapper = cuda_argument if args.target == "cuda" else argument
    entries: list[tuple[str, list[str]]] = []
    for src in args.sources:
        text = preprocess(args.cpp, args.include, Path(src))
        for name, params in entry_points(text):
            entries.append((name, [mapper(p, name) for p in params]))
    if not entries:
        sys.exit("gen_glue: no kernel entry points found")
    if args.target == "cuda":
        Path(args.out).write_text(cuda_glue(entries, args.sources))
        return

    out = [
        "// Generated by tools/gen_glue.py from the .metal sources. Do not edit.",
        '#include "prelude_host.h"',
    ]
    out += [f'#include "{Path(s).resolve()}"' for s in args.sources]
    out += ["", "#include <cstring>", "", "namespace {", ""]
    for name, call in entries:
        out.append(f"void glue_{name}(const convt_sim::ThreadArgs& a) {{")
        out.append(f"    {name}({', '.join(call)});")
        out.append("}")
    out += [
        "",
        "struct Entry {",
        "    const char* name;",
        "    convt_sim::KernelEntry entry;",
        "};",
        "",
    ]
    out.append("const Entry kEntries[] = {")
    out += [f'    {{"{name}", glue_{name}}},' for name, _ in entries]
    out += ["};", "", "}  // namespace", "", "namespace convt_sim {", ""]
    out += [
        "KernelEntry find_kernel(const std::string& name) {",
        "    for (const Entry& e : kEntries)",
        "        if (name == e.name) return e.entry;",
        "    return nullptr;",
        "}",
        "",
        "std::vector<std::string> kernel_names() {",
        "    std::vector<std::string> names;",
        "    for (const Entry& e : kEntries) names.emplace_back(e.name);",
        "    return names;",
        "}",
        "",
        "}  // namespace convt_sim",
        "",
    ]
    Path(args.out).write_text("\n".join(out))


def cuda_glue(entries: list[tuple[str, list[str]]], sources: list[str]) -> str:
    out = [
        "// Generated by tools/gen_glue.py --target cuda from the .metal sources. Do not edit.",
        '#include "prelude_cuda.h"',
    ]
    out += [f'#include "{Path(s).resolve()}"' for s in sources]
    out += ['#include "launch.h"', "", "#include <string.h>", ""]
    for name, call in entries:
        out += [
            f'extern "C" __global__ void convt_cuda_{name}(const __grid_constant__ '
            "ConvtCudaLaunch a) {",
            "    const uint lid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * "
            "threadIdx.z);",
            "    if (lid < CONVT_FC_COUNT) convt_fc_values[lid] = a.constants[lid];",
            "    __syncthreads();",
            "    const uint3 tg = make_uint3(blockIdx.x + a.group_offset[0], "
            "blockIdx.y + a.group_offset[1], blockIdx.z + a.group_offset[2]);",
            "    (void)tg;",
            f"    {name}({', '.join(call)});",
            "}",
            "",
        ]
    out += ["namespace {", "", "struct Entry {", "    const char* name;", "    const void* fn;"]
    out += ["};", "", "const Entry kEntries[] = {"]
    out += [f'    {{"{name}", (const void*)convt_cuda_{name}}},' for name, _ in entries]
    out += ["};", "", "}  // namespace", ""]
    out += [
        "const void* convt_cuda_find_kernel(const char* name) {",
        "    for (const Entry& e : kEntries)",
        "        if (strcmp(name, e.name) == 0) return e.fn;",
        "    return nullptr;",
        "}",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    main()
