# Sourced by the packaging tests (tests/packaging/*.sh): a private temp dir,
# the programs they start, and the clean-up of both on any exit, failure
# included.
set -euo pipefail
PKG_TMP=$(mktemp -d /tmp/saga-pkg-test.XXXXXX)
PKG_PIDS=()
pkg_cleanup() {
  local p
  for p in "${PKG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PKG_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$PKG_TMP"
}
trap pkg_cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# pkg_install BUILD_DIR PREFIX: cmake --install of the build into PREFIX.
pkg_install() { cmake --install "$1" --prefix "$2" >"$PKG_TMP/install.log" || {
  cat "$PKG_TMP/install.log" >&2; fail "cmake --install into $2"; }; }
# wait_for_admin URL SAGACTL PID: until sagactl stats answers (60 s at most)
# while sagad (PID) runs; otherwise print the logs (*.log in the temp dir or
# its run/) and fail.
wait_for_admin() {
  local i
  for i in $(seq 600); do
    "$2" --url "$1" stats >/dev/null 2>&1 && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  cat "$PKG_TMP"/*.log "$PKG_TMP"/run/*.log >&2 2>/dev/null || true
  fail "sagad never answered on $1"
}
