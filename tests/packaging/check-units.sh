#!/usr/bin/env bash
# The systemd units (packaging/systemd/), as `cmake --install` writes them
# into a temp prefix: `systemd-analyze verify` finds nothing to say (it
# exits 0 on a mistyped setting, so any output fails), their hardening keeps
# `systemd-analyze security --offline` exposure at 4.0 or below, and each
# rule docs/SECURITY.md promises is there. Needs no running systemd.
# Usage: check-units.sh BUILD_DIR
source "$(dirname "$0")/common.sh"
prefix=$PKG_TMP/prefix
pkg_install "$1" "$prefix"
units=$prefix/lib/systemd/system
[ -f "$units/sagad.service" ] && [ -f "$units/saga-participant@.service" ] ||
  fail "units not installed in $units"
# An instance of the template, as systemctl would load it.
ln -s saga-participant@.service "$units/saga-participant@payment.service"
grep -q "^ExecStart=$prefix/bin/sagad --config $prefix/etc/saga/sagad.cfg\$" "$units/sagad.service" ||
  fail "sagad.service does not run the installed sagad on the installed config"
[ -f "$prefix/etc/saga/sagad.cfg" ] || fail "no $prefix/etc/saga/sagad.cfg"

export MANPATH=$prefix/share/man # Documentation=man:... must resolve
for u in sagad.service saga-participant@payment.service; do
  out=$(cd "$units" && systemd-analyze verify "./$u" 2>&1) || fail "verify $u: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $u says: $out"
  (cd "$units" && systemd-analyze security --offline=yes --threshold=40 "./$u" >"$PKG_TMP/sec" 2>&1) ||
    { cat "$PKG_TMP/sec" >&2; fail "$u: exposure above 4.0"; }
  for rule in Type=notify Restart=on-failure User=saga UMask=0077 NoNewPrivileges=yes \
    ProtectSystem=strict "ReadWritePaths=/var/lib/saga /run/saga" RuntimeDirectoryMode=0700 \
    StateDirectoryMode=0700 CapabilityBoundingSet=; do
    grep -qx "$rule" "$units/$u" || fail "$u lacks $rule"
  done
done
echo "PASS: both units verify, exposure $(grep -o 'level for [^:]*: [0-9.]*' "$PKG_TMP/sec")"
