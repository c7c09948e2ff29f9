#!/usr/bin/env bash
# A participant built out of tree against an installed saga, as a user would:
# `cmake --install` into a temp prefix, then tiny/greeter.c compiled with
# `pkg-config --cflags --libs saga-participant` alone (PKG_CONFIG_PATH into
# the prefix), run by the installed sagad: a saga through it COMPLETES, its
# effect is in its database once, and the program's own log_init/kv_set/...
# never replace the library's (greeter.c aborts if they are called).
# Usage: check-out-of-tree.sh BUILD_DIR SOURCE_DIR [EXTRA_CFLAGS]
source "$(dirname "$0")/common.sh"
build=$1 src=$2 extra=${3:-}
prefix=$PKG_TMP/prefix
pkg_install "$build" "$prefix"

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
flags=$(pkg-config --cflags --libs saga-participant) || fail "pkg-config saga-participant"
case "$flags" in *"$prefix"*) ;; *) fail "pkg-config flags do not name the prefix: $flags" ;; esac
# shellcheck disable=SC2086 # word splitting of the flags is the point
cc -std=c11 -Wall -Wextra -Werror $extra -o "$PKG_TMP/greeter" "$src/tests/packaging/tiny/greeter.c" \
  $flags -Wl,-rpath,"$prefix/lib" || fail "the greeter does not build with pkg-config's flags"
needed=$(readelf -d "$PKG_TMP/greeter")
grep -q 'NEEDED.*libsaga_participant.so.0' <<<"$needed" ||
  fail "the greeter is not linked to libsaga_participant.so.0"

run=$PKG_TMP/run
mkdir -m 700 "$run" "$run/sagas"
cp "$src/tests/packaging/tiny/greeting.cfg" "$run/sagas/"
"$PKG_TMP/greeter" "ipc://$run/greeter.ipc" "$run/greeter.db" 2>"$run/greeter.log" &
PKG_PIDS+=($!)
cat >"$run/sagad.cfg" <<CFG
admin_url = "ipc://$run/sagad.ipc";
database = "$run/sagad.db";
sagas_dir = "$run/sagas";
participants = { greeter = "ipc://$run/greeter.ipc"; };
CFG
"$prefix/bin/sagad" --config "$run/sagad.cfg" 2>"$run/sagad.log" &
PKG_PIDS+=($!)
ctl="$prefix/bin/sagactl"
wait_for_admin "ipc://$run/sagad.ipc" "$ctl" "${PKG_PIDS[-1]}"
state=$("$ctl" --url "ipc://$run/sagad.ipc" start greeting --key g-1 --wait name=world) || {
  cat "$run/greeter.log" "$run/sagad.log" >&2; fail "the saga did not complete: $state"; }
[ "$(tail -n1 <<<"$state")" = COMPLETED ] || fail "saga state: $state"
rows=$(sqlite3 "$run/greeter.db" "SELECT count(*) || ' ' || text FROM greetings")
[ "$rows" = "1 hello world" ] || fail "greeter's database holds '$rows'"
echo "PASS: out-of-tree greeter, linked with: $flags"
