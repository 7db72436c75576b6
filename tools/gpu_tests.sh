#!/usr/bin/env bash
# On a CUDA machine: build the Python module with the CUDA backend, run the test harness on
# device `cuda`, and (with --sanitize) the kernels under compute-sanitizer. Logs go to $OUT
# (or ./gpu-out). Used through the device tool; see bench/RESULTS.md for what it found.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
BUILD=${BUILD:-/tmp/convt-cuda-build}
# The system compiler, when there is one: a private toolchain's libstdc++ can clash with the one
# the Python process (torch) has loaded.
# (Seen on the lent H100/H200 image: nvcc's default host compiler /opt/gcc/bin/g++ made CMake link
# a static libstdc++ into the module, whose ostream then crashed.)
CXX_ARGS=()
if [ -x /usr/bin/g++ ]; then
  export CUDAHOSTCXX=/usr/bin/g++ CXX=/usr/bin/g++
  CXX_ARGS=(-DCMAKE_CXX_COMPILER=/usr/bin/g++ -DCMAKE_CUDA_HOST_COMPILER=/usr/bin/g++)
fi
cmake -S . -B "$BUILD" -G Ninja -DCONVT_PYTHON=ON -DCONVT_CUDA=ON -DCONVT_MSLSIM=OFF "${CXX_ARGS[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v python3)" \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
ninja -C "$BUILD" >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
ln -sf "$BUILD"/_core*.so python/convt/
grep -o "[^ ]*stdc++[^ ]*\|/opt/gcc[^ ]*" "$BUILD/build.ninja" | sort | uniq -c | head
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
export PYTHONPATH=$PWD/python PYTHONUNBUFFERED=1
python3 -c "import convt; print(convt.devices(), [d.name for d in convt.devices()])"
status=0
if [ "${1:-}" != "--sanitize-only" ]; then
  python3 -m pytest -q -p no:cacheprovider -k "cuda or dlpack" tests ${PYTEST_ARGS:-} 2>&1 \
    | tee "$OUT/pytest-cuda.log" | tail -25
  status=${PIPESTATUS[0]}
fi
if [ "${1:-}" = "--sanitize" ] || [ "${1:-}" = "--sanitize-only" ]; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
      python3 -m pytest -q -p no:cacheprovider -x -k "cuda" ${SANITIZE_TESTS:-tests/test_sweep.py} \
      >"$OUT/sanitizer-$tool.log" 2>&1
    echo "compute-sanitizer $tool: exit $? ($(grep -E 'ERROR SUMMARY' "$OUT/sanitizer-$tool.log" | tail -1))"
    tail -3 "$OUT/sanitizer-$tool.log"
  done
fi
exit $status
