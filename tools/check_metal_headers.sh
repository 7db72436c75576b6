#!/usr/bin/env bash
# Compile the Metal backend (cpp/src/metal/*.cpp) against Apple's REAL metal-cpp headers with
# clang in -fsyntax-only mode. On Linux the backend is built against the simulation's facade
# (cpp/src/mslsim/facade/), which could hide an API mismatch; this check cannot.
#
# The headers come from the pinned macOS wheel of mlx-metal (mlx/include/metal_cpp/), downloaded
# here and never committed; Apple's system headers that metal-cpp includes are replaced by the
# parse-only stand-ins in tools/metal_cpp_stubs/.
#
# Usage: tools/check_metal_headers.sh [FILE.cpp ...]   (default: every cpp/src/metal/*.cpp)
# Environment:
#   CONVT_METAL_CPP_CACHE  directory that keeps the wheel between runs (default: a temp dir)
#   CLANGXX                the clang++ to use (default: clang++)
#   PYTHON                 the Python whose pip downloads the wheel (default: python3)
# Needs: clang++, and pip (only when the wheel is not cached yet). Installs nothing.
set -euo pipefail

readonly PKG=mlx-metal VERSION=0.32.4 PLATFORM=macosx_14_0_arm64
readonly WHEEL=mlx_metal-0.32.4-py3-none-macosx_14_0_arm64.whl
readonly SHA256=8019b2db622599267d66cc168b2f0dbf5af929790a6c3b3913e00eabc42a7947
readonly PREFIX=mlx/include/metal_cpp/

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STUBS="$ROOT/tools/metal_cpp_stubs"
CLANGXX="${CLANGXX:-clang++}"
PYTHON="${PYTHON:-python3}"

fail() {
    echo "check_metal_headers: FAILED: $*" >&2
    exit 1
}

command -v "$CLANGXX" >/dev/null 2>&1 ||
    fail "'$CLANGXX' not found. Install clang, e.g. 'apt-get install -y clang' (Debian/Ubuntu), or set CLANGXX."
"$CLANGXX" --version 2>/dev/null | grep -qi clang ||
    fail "'$CLANGXX' is not clang (metal-cpp needs clang's -fblocks). Set CLANGXX to a clang++."
command -v "$PYTHON" >/dev/null 2>&1 || fail "'$PYTHON' not found (needed to verify and unpack the wheel)."

WORK="$(mktemp -d "${TMPDIR:-/tmp}/convt-metal-cpp.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

sha256_of() {
    "$PYTHON" -c 'import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())' "$1"
}

# 1. The pinned wheel: from the cache if it is there and intact, downloaded otherwise.
CACHE="${CONVT_METAL_CPP_CACHE:-$WORK/wheel}"
mkdir -p "$CACHE"
wheel="$CACHE/$WHEEL"
if [ -f "$wheel" ] && [ "$(sha256_of "$wheel")" != "$SHA256" ]; then
    echo "check_metal_headers: cached $wheel has the wrong sha256; downloading it again" >&2
    rm -f "$wheel"
fi
if [ ! -f "$wheel" ]; then
    "$PYTHON" -m pip --version >/dev/null 2>&1 ||
        fail "pip is not available to '$PYTHON'; cannot download $PKG==$VERSION (or put $WHEEL in \$CONVT_METAL_CPP_CACHE)."
    echo "check_metal_headers: downloading $PKG==$VERSION ($PLATFORM wheel) into $CACHE"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform "$PLATFORM" "$PKG==$VERSION" -d "$CACHE" ||
        fail "could not download $PKG==$VERSION"
    [ -f "$wheel" ] || fail "pip did not produce $wheel"
fi
actual="$(sha256_of "$wheel")"
[ "$actual" = "$SHA256" ] ||
    fail "sha256 mismatch for $wheel: expected $SHA256, got $actual"
echo "check_metal_headers: $WHEEL sha256 OK ($SHA256)"

# 2. Only mlx/include/metal_cpp/ out of the wheel.
"$PYTHON" - "$wheel" "$WORK/x" "$PREFIX" <<'EOF' || fail "could not extract metal-cpp from the wheel"
import sys, zipfile
wheel, dest, prefix = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith(prefix) and ".." not in m.split("/")]
    if not members:
        sys.exit(f"no {prefix} in {wheel}")
    z.extractall(dest, members)
EOF
METAL_CPP="$WORK/x/$PREFIX"
for h in Foundation/Foundation.hpp Metal/Metal.hpp; do
    [ -f "$METAL_CPP/$h" ] || fail "the wheel has no $PREFIX$h"
done

# 3. clang++ -fsyntax-only on each translation unit.
cd "$ROOT"
if [ "$#" -gt 0 ]; then
    files=("$@")
else
    shopt -s nullglob
    files=(cpp/src/metal/*.cpp)
    shopt -u nullglob
    [ "${#files[@]}" -gt 0 ] || fail "no cpp/src/metal/*.cpp to check"
fi

# CONVT_HAS_METALLIB: also check the macOS-only path that loads a prebuilt convt.metallib.
flags=(-std=c++17 -fsyntax-only -fblocks -I"$STUBS" -I"$METAL_CPP" -I cpp/include -I metal
       -iquote cpp/src/metal -DCONVT_HAS_METALLIB=1)
# metal-cpp's NS::Object::sendMessage knows x86 and __arm64__ (Apple's spelling) only; on an
# aarch64 Linux host, say __arm64__ as Apple's compiler would for the real target.
if "$CLANGXX" -dM -E -x c++ /dev/null | grep -q '^#define __aarch64__ ' &&
   ! "$CLANGXX" -dM -E -x c++ /dev/null | grep -q '^#define __arm64__ '; then
    flags+=(-D__arm64__=1)
fi

echo "check_metal_headers: $("$CLANGXX" --version | head -n1)"
echo "check_metal_headers: headers: metal-cpp from $PKG $VERSION, stubs from tools/metal_cpp_stubs"
failed=()
for f in "${files[@]}"; do
    [ -f "$f" ] || fail "no such file: $f"
    echo "check_metal_headers: $CLANGXX ${flags[*]} $f"
    if "$CLANGXX" "${flags[@]}" "$f"; then
        echo "check_metal_headers:   ok   $f"
    else
        echo "check_metal_headers:   FAIL $f" >&2
        failed+=("$f")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    fail "${#failed[@]} of ${#files[@]} file(s) do not compile against the real metal-cpp headers: ${failed[*]}"
fi
echo "check_metal_headers: PASSED: ${#files[@]} file(s) compile against the real metal-cpp headers: ${files[*]}"
