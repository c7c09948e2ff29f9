#!/usr/bin/env bash
# Installs what is missing, then builds and runs the whole test suite three
# times: as shipped (warnings are errors), under AddressSanitizer +
# UndefinedBehaviorSanitizer, and with clang and SAGA_FUZZ=ON, where ctest
# also runs each libFuzzer target for SAGA_FUZZ_SECONDS (default 20).
# Exits non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test  # --test: also chromium, for the dashboard test

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
echo "==> fuzz targets (clang, libFuzzer + ASan + UBSan), ${SAGA_FUZZ_SECONDS:-20} s each"
cmake -S . -B build-fuzz -DSAGA_WERROR=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
  -DSAGA_FUZZ=ON -DSAGA_FUZZ_SECONDS="${SAGA_FUZZ_SECONDS:-20}" -DSAGA_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$jobs" --target fuzz_all
(cd build-fuzz && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -R '^fuzz_')
echo "==> all tests passed in the three builds"
