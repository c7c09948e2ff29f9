#!/usr/bin/env bash
# `cpack -G DEB` builds the saga package, and it works from its installed
# paths: the package is extracted into a clean root (dpkg-deb -x); its
# control data is checked (Depends holds the runtime libraries, every one
# satisfied here; postinst creates the saga user; /etc files are conffiles);
# every program in it answers --version; then the demo runs on it exactly
# as the units would run it (their ExecStart lines, the packaged sagad.cfg,
# example saga and seeds), with only /usr, /etc/saga, /run/saga and
# /var/lib/saga moved under the test's directory: one saga COMPLETES and one
# whose payment is refused is COMPENSATED.
# Usage: check-deb.sh BUILD_DIR VERSION
source "$(dirname "$0")/common.sh"
build=$1 version=$2
(cd "$PKG_TMP" && cpack --config "$build/CPackConfig.cmake" -G DEB -B "$PKG_TMP/out" \
  >"$PKG_TMP/cpack.log" 2>&1) || { cat "$PKG_TMP/cpack.log" >&2; fail "cpack -G DEB"; }
deb=$(ls "$PKG_TMP"/out/saga_"$version"_*.deb) || fail "no saga_${version}_*.deb"

depends=$(dpkg-deb -f "$deb" Depends)
for lib in libnng1 libsqlite3-0 libprotobuf-c1 libconfig9 libsystemd0 adduser; do
  case ", $depends," in *", $lib"[\ ,]*) ;; *) fail "Depends lacks $lib: $depends" ;; esac
done
# Every dependency (with its version bound) is satisfied on this machine.
IFS=',' read -ra deps <<<"$depends"
for d in "${deps[@]}"; do
  d=$(echo "$d" | xargs)
  pkg=${d%% *}
  have=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) || fail "dependency $pkg is not installed"
  if [[ $d =~ \((\>=)\ ([^\)]*)\) ]]; then
    dpkg --compare-versions "$have" ge "${BASH_REMATCH[2]}" || fail "$pkg $have is older than $d"
  fi
done
dpkg-deb -e "$deb" "$PKG_TMP/control"
grep -qx /etc/saga/sagad.cfg "$PKG_TMP/control/conffiles" || fail "sagad.cfg is not a conffile"
grep -q 'adduser --system' "$PKG_TMP/control/postinst" || fail "postinst does not create the saga user"
sh -n "$PKG_TMP/control/postinst" && sh -n "$PKG_TMP/control/postrm" || fail "maintainer script syntax"

root=$PKG_TMP/root
mkdir "$root"
dpkg-deb -x "$deb" "$root"
for f in usr/bin/sagad usr/bin/sagactl usr/lib/libsaga_participant.so.0 usr/include/saga/participant.h \
  usr/lib/pkgconfig/saga-participant.pc usr/lib/systemd/system/sagad.service \
  usr/lib/systemd/system/saga-participant@.service usr/share/man/man8/sagad.8 \
  usr/share/saga/proto/saga.proto etc/saga/sagad.cfg etc/saga/sagas/order_fulfillment.cfg; do
  [ -e "$root/$f" ] || fail "the package lacks /$f"
done
for p in "$root"/usr/bin/*; do
  out=$("$p" --version) || fail "$(basename "$p") --version failed"
  [ "$out" = "$(basename "$p") $version" ] || fail "$(basename "$p") --version says '$out'"
done
pc_cflags=$(PKG_CONFIG_PATH=$root/usr/lib/pkgconfig pkg-config --cflags saga-participant)
pc_include=${pc_cflags#-I}
[ -f "${pc_include%% *}/saga/participant.h" ] ||
  fail "the packaged pkg-config file does not find its headers"

# The units' own command lines, on paths moved under the test's directory.
run=$PKG_TMP/run state=$PKG_TMP/state
mkdir -m 700 "$run" "$state"
relocate() {
  sed -e "s|/usr/bin/|$root/usr/bin/|g" -e "s|/run/saga|$run|g" -e "s|/var/lib/saga|$state|g" \
    -e "s|/etc/saga|$root/etc/saga|g"
}
cp "$root/etc/saga/sagad.cfg" "$PKG_TMP/sagad.cfg.packaged"
relocate <"$PKG_TMP/sagad.cfg.packaged" >"$root/etc/saga/sagad.cfg"
participant_cmd=$(sed -n 's/^ExecStart=//p' "$root/usr/lib/systemd/system/saga-participant@.service")
sagad_cmd=$(sed -n 's/^ExecStart=//p' "$root/usr/lib/systemd/system/sagad.service")
for svc in order payment inventory shipping; do
  cmd=$(echo "$participant_cmd" | sed -e "s/%i/$svc/g" -e 's/\$SAGA_PARTICIPANT_ARGS//' | relocate)
  # shellcheck disable=SC2086 # the unit's command line, split as systemd does
  $cmd --seed "$root/usr/share/saga/seeds/$svc.cfg" 2>>"$PKG_TMP/$svc.log" &
  PKG_PIDS+=($!)
done
# shellcheck disable=SC2086
$(echo "$sagad_cmd" | relocate) 2>>"$PKG_TMP/sagad.log" &
PKG_PIDS+=($!)
ctl=$root/usr/bin/sagactl
url="ipc://$run/sagad.ipc"
wait_for_admin "$url" "$ctl" $!
logs() { cat "$PKG_TMP"/*.log >&2; }
state1=$("$ctl" --url "$url" start order_fulfillment --key deb-1 --wait customer=alice \
  sku=WIDGET-1 quantity=2 amount=2500 destination=paris) || { logs; fail "saga 1: $state1"; }
[ "$(tail -n1 <<<"$state1")" = COMPLETED ] || { logs; fail "saga 1 ended $state1"; }
rc=0
state2=$("$ctl" --url "$url" start order_fulfillment --key deb-2 --wait customer=carol \
  sku=WIDGET-1 quantity=1 amount=90000 destination=paris) || rc=$?
[ "$rc" = 3 ] && grep -qx COMPENSATED <<<"$state2" || { logs; fail "saga 2 ended $state2 (exit $rc)"; }
[ -f "$state/sagad.db" ] && [ -f "$state/payment.db" ] || fail "databases not where the units put them"
echo "PASS: $(basename "$deb") (Depends: $depends) runs the demo from its installed paths"
