#!/usr/bin/env bash
# Installs, from Debian 12 packages, whatever the build and tests need and the
# machine lacks. Safe to run again: it installs nothing when all is present.
set -euo pipefail

packages=(build-essential cmake pkg-config git
          libnng-dev nng-utils libsqlite3-dev sqlite3
          libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
          libconfig-dev libcmocka-dev
          clang libclang-rt-14-dev openssl)  # fuzz targets; test certificates

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo=sudo
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
