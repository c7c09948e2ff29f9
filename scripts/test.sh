#!/usr/bin/env bash
# Installs what is missing, then builds and runs the whole test suite three
# times: as shipped (warnings are errors), under AddressSanitizer +
# UndefinedBehaviorSanitizer, and with clang and SAGA_FUZZ=ON, where ctest
# also runs each libFuzzer target for SAGA_FUZZ_SECONDS (default 20).
# Exits non-zero when anything fails, and when any test was skipped (a skip
# is not a pass; SAGA_ALLOW_SKIPS=1 lets a developer without, say, chromium
# go on, never CI).
#
# The suite runs as on a stock Debian 12, whatever this machine's settings:
# as root, the builds and tests run in a private mount namespace whose
# /etc/hosts is Debian's own (localhost is 127.0.0.1 *and* ::1), with the
# soft descriptor limit of a service (1024).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SAGA_STOCK_ENV:-}" ]; then
  bash scripts/install-deps.sh --test  # --test: also chromium, for the dashboard test
  if [ "$(id -u)" -eq 0 ]; then
    hosts=$(mktemp /tmp/saga-stock-hosts.XXXXXX)
    trap 'rm -f "$hosts"' EXIT
    cat >"$hosts" <<'HOSTS'
127.0.0.1	localhost
127.0.1.1	debian

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
HOSTS
    chmod 644 "$hosts"
    echo "==> running as on a stock Debian 12: its /etc/hosts (localhost = 127.0.0.1 and ::1), ulimit -Sn 1024"
    SAGA_STOCK_ENV=1 unshare --mount --propagation private -- bash -c \
      'mount --bind "$1" /etc/hosts && ulimit -Sn 1024 && exec bash scripts/test.sh' _ "$hosts"
    exit 0
  fi
  echo "==> not root: running with this machine's /etc/hosts and descriptor limit"
fi

jobs=$(nproc)
run_suite() { # $1 = build dir, rest = cmake options
  local dir=$1; shift
  cmake -S . -B "$dir" -DSAGA_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 600) | tee "$dir/ctest.log"
  if grep -q '(Skipped)' "$dir/ctest.log" && [ "${SAGA_ALLOW_SKIPS:-0}" != 1 ]; then
    echo "==> tests were skipped in $dir (see above): a skip is not a pass" >&2
    exit 1
  fi
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
  ctest --output-on-failure -R '^fuzz_') | tee build-fuzz/ctest.log
if grep -q '(Skipped)' build-fuzz/ctest.log; then
  echo "==> fuzz tests were skipped (see above)" >&2
  exit 1
fi
echo "==> all tests passed in the three builds"
