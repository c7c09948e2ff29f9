#!/usr/bin/env bash
# Installs what is missing, then builds and runs the whole test suite twice:
# once as shipped (warnings are errors) and once under AddressSanitizer +
# UndefinedBehaviorSanitizer. Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

jobs=$(nproc)
run_suite() { # $1 = build dir, rest = cmake options
  local dir=$1; shift
  cmake -S . -B "$dir" -DSAGA_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 600)
}

echo "==> release build, warnings as errors"
run_suite build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "==> AddressSanitizer + UndefinedBehaviorSanitizer build"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DSAGA_SANITIZE=ON
echo "==> all tests passed in both builds"
