#!/usr/bin/env bash
# Checks the CPU GEMM micro-kernel (tools/check_micro_kernel.cpp) outside the Python module.
#   tools/check_micro_kernel.sh native  # this machine's kernel (AVX2 or portable) and the portable
#   tools/check_micro_kernel.sh arm64   # the NEON kernel and the portable one, cross-compiled for
#                                       # arm64 and run under qemu-aarch64 (Debian packages
#                                       # g++-aarch64-linux-gnu and qemu-user), after compiling
#                                       # every CPU and core source for arm64; exit 77 without them
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sources=(tools/check_micro_kernel.cpp cpp/src/cpu/micro_kernel.cpp)
flags=(-std=c++17 -O2 -Wall -Icpp/include)
case "${1:-native}" in
  native)
    "${CXX:-c++}" "${flags[@]}" "${sources[@]}" -o "$out/check"
    "$out/check"
    CONVT_CPU_ISA=portable "$out/check"
    ;;
  arm64)
    if ! command -v aarch64-linux-gnu-g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
      echo "needs aarch64-linux-gnu-g++ and qemu-aarch64 (apt-get install g++-aarch64-linux-gnu qemu-user)" >&2
      exit 77
    fi
    # Every CPU-backend and core source compiles for arm64 (syntax only; no arm64 Python here).
    for f in cpp/src/cpu/*.cpp cpp/src/core/*.cpp; do
      aarch64-linux-gnu-g++ -std=c++17 -fsyntax-only -Wall -Werror -Icpp/include "$f"
    done
    aarch64-linux-gnu-g++ "${flags[@]}" -static "${sources[@]}" -o "$out/check"
    qemu-aarch64 "$out/check"
    CONVT_CPU_ISA=portable qemu-aarch64 "$out/check"
    ;;
  *)
    echo "usage: $0 [native|arm64]" >&2
    exit 2
    ;;
esac
