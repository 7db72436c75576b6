#!/usr/bin/env bash
# The long versions of the hardening checks (not run by CI):
#   1. tests/test_properties.py under the hypothesis "long" profile, with statistics;
#   2. tests/test_leaks.py with 10,000 calls per entry point on every device (metal-sim too);
#   3. tools/fuzz_deserialize.py with FUZZ_CASES (default 100,000) corrupt kernels.
# convt is imported as installed (PYTHONPATH=python for a development tree). Extra arguments go
# to the pytest run of step 1 (e.g. -k cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
report=${CONVT_HYPOTHESIS_REPORT:-$(mktemp -t convt-hypothesis-XXXX.json)}
echo "== 1. property tests, long profile (example counts: $report)"
CONVT_HYPOTHESIS_PROFILE=long CONVT_HYPOTHESIS_REPORT="$report" \
  python3 -m pytest -q -s -p no:cacheprovider --hypothesis-show-statistics \
  tests/test_properties.py "$@"
echo "== 2. leaks, 10,000 calls per entry point on every device"
CONVT_SLOW_TESTS=1 python3 -m pytest -q -s -p no:cacheprovider tests/test_leaks.py
echo "== 3. deserialization fuzzing"
python3 tools/fuzz_deserialize.py --cases "${FUZZ_CASES:-100000}"
