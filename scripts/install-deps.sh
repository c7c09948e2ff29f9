#!/usr/bin/env bash
# Installs, from Debian 12 packages, whatever the build and tests need and the
# machine lacks. Safe to run again: it installs nothing when all is present.
# With --test (scripts/test.sh) it also installs what only the tests need.
set -euo pipefail

packages=(build-essential cmake pkg-config git
          libnng-dev nng-utils libsqlite3-dev sqlite3
          libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
          libconfig-dev libcmocka-dev
          libpq-dev postgresql        # the PostgreSQL store (and its test clusters)
          libjansson-dev
          python3 python3-protobuf libnng1  # loyalty-svc, the participant in Python
          libsystemd-dev              # sd_notify for the Type=notify units (packaging/)
          dpkg-dev groff-base man-db systemd  # cpack -G DEB (dpkg-shlibdeps) and its tests
          clang libclang-rt-14-dev openssl)  # fuzz targets; test certificates

# Only for the test suite (scripts/test.sh passes --test), never for the demo:
# a real browser for the dashboard test (tests/observability), which skips
# itself when chromium cannot be installed.
test_packages=(chromium)
with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

missing=()
optional=()
if [ $with_tests -eq 1 ]; then
  for p in "${test_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || optional+=("$p")
  done
fi
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#optional[@]} -gt 0 ]; then
  echo "install-deps: installing for the tests: ${optional[*]}"
  $sudo apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null ||
    echo "install-deps: could not install ${optional[*]}; the browser test will skip, and scripts/test.sh fail" >&2
fi
