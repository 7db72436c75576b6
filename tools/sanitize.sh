#!/usr/bin/env bash
# Builds convt with sanitizers (CMakePresets.json) into its own build dir and runs a test subset
# under it. Findings are counted from the log; the script fails if there is any.
#
#   tools/sanitize.sh address [pytest args]   ASan + UBSan (preset "asan", _build-asan/)
#   tools/sanitize.sh thread  [pytest args]   ThreadSanitizer (preset "tsan", _build-tsan/)
#
# Without pytest args a default subset runs (below). JOBS=n sets the build parallelism (1).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-address}
shift || true
case "$mode" in
  address)
    preset=asan
    runtime="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
    default_tests=(tests/test_bad_input.py tests/test_bad_input_corpus.py tests/test_limits.py
                   tests/test_serialization.py tests/test_nonfinite.py tests/test_float16.py
                   tests/test_threads.py tests/test_zero_copy.py tests/test_properties.py
                   tests/test_gradients.py tests/test_states.py tests/test_wide_rows.py
                   tests/test_worked_examples.py tests/test_sweep.py tests/test_cpu_paths.py)
    ;;
  thread)
    preset=tsan
    runtime="$(gcc -print-file-name=libtsan.so)"
    # The cpu device only: metal-sim runs kernel threads as ucontext fibers, and GCC 12's
    # ThreadSanitizer crashes inside __tsan_switch_to_fiber when told about them (and reports
    # nonsense when not told), so it is not checked here.
    default_tests=(tests/test_threads.py tests/test_limits.py -k "not metal-sim")
    ;;
  *)
    echo "usage: $0 address|thread [pytest args]" >&2
    exit 2
    ;;
esac
build="_build-$preset"

# The interpreter itself, not a wrapper script (pyenv shims are bash, which must not get the
# sanitizer runtime preloaded).
py=$(python3 -c "import sys; print(sys.executable)")
"$py" -c "import pybind11" 2>/dev/null || { echo "pip install pybind11 first" >&2; exit 2; }
cmake --preset "$preset" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" >/dev/null
nice ninja -C "$build" -j"${JOBS:-1}" _core

# A package directory whose extension is the sanitized one (the sources are linked, not copied).
pkg="$build/py/convt"
mkdir -p "$pkg"
for f in python/convt/*.py; do ln -sf "$PWD/$f" "$pkg/"; done
ln -sf "$PWD/$(ls "$build"/_core*.so)" "$pkg/"

log="$build/sanitize-$mode.log"
# Reports go to files: pytest captures fd 2, so a report from a passing test would be lost.
reports="$PWD/$build/reports"
rm -rf "$reports"
mkdir -p "$reports"
tests=("$@")
[ ${#tests[@]} -eq 0 ] && tests=("${default_tests[@]}")
echo "== $mode sanitizer: ${tests[*]} (log: $log)"
set +e
# detect_leaks=0: CPython and numpy keep allocations alive at exit by design; tests/test_leaks.py
# checks convt's own growth instead. Python's allocator is bypassed so ASan sees every block.
env LD_PRELOAD="$runtime" PYTHONPATH="$build/py" PYTHONMALLOC=malloc \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0:log_path=$reports/asan" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan" \
  TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:suppressions=$PWD/tools/tsan.supp:print_suppressions=1:log_path=$reports/tsan" \
  CONVT_HYPOTHESIS_PROFILE="${CONVT_HYPOTHESIS_PROFILE:-ci}" \
  "$py" -m pytest -q -p no:cacheprovider "${tests[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
findings=$(cat "$log" "$reports"/* 2>/dev/null |
  grep -cE "ERROR: AddressSanitizer|runtime error:|WARNING: ThreadSanitizer" || true)
suppressed=$(cat "$reports"/* 2>/dev/null | grep -E "^ *[0-9]+ race:" || true)
[ -n "$suppressed" ] && echo "== suppressed (tools/tsan.supp): $suppressed"
[ "$findings" -eq 0 ] || cat "$reports"/* 2>/dev/null | head -200
echo "== $mode sanitizer: pytest exit status $status, findings $findings"
[ "$status" -eq 0 ] && [ "$findings" -eq 0 ]
