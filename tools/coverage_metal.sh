#!/usr/bin/env bash
# Line coverage of the Metal backend (cpp/src/metal) and the simulation (cpp/src/mslsim) under
# the test suite's metal-sim tests: a --coverage build in a scratch directory, the tests run
# against it, gcov's summary per file. Takes ~10 minutes on 2 cores (unoptimised build).
#   tools/coverage_metal.sh [scratch-dir]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
cmake -S "$root" -B "$work/build" -G Ninja -DCONVT_PYTHON=ON -DCONVT_MSLSIM=ON \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS="--coverage -O0" >/dev/null
cmake --build "$work/build"
rm -rf "$work/pkg" && mkdir -p "$work/pkg"
cp -r "$root/python/convt" "$work/pkg/"
rm -f "$work"/pkg/convt/_core*.so
cp "$work"/build/_core*.so "$work/pkg/convt/"
(cd "$root" && PYTHONPATH="$work/pkg" python -m pytest -q tests -p no:cacheprovider \
  --ignore=tests/test_cpp_example.py -k "metal-sim or sim_strictness")
cd "$work/build"
for src in metal/metal_backend.cpp mslsim/runtime.cpp mslsim/facade.cpp; do
  gcov -n -o "CMakeFiles/convt.dir/cpp/src/$src.gcda" "$root/cpp/src/$src" |
    grep -A1 "File '$root/cpp/src/$src'"
done
