#!/usr/bin/env bash
# The man pages (docs/man/), as installed: each renders without a single
# groff warning (-ww), man -l shows its NAME, and the version is filled in.
# Usage: check-man.sh BUILD_DIR VERSION
source "$(dirname "$0")/common.sh"
prefix=$PKG_TMP/prefix
pkg_install "$1" "$prefix"
for page in man1/sagactl.1 man8/sagad.8 man7/saga-participant.7; do
  f=$prefix/share/man/$page
  [ -f "$f" ] || fail "$page is not installed"
  warnings=$(groff -man -Tutf8 -ww -z "$f" 2>&1)
  [ -z "$warnings" ] || fail "$page: $warnings"
  grep -q "saga $2" "$f" || fail "$page does not carry version $2"
  name=$(basename "$page" | sed 's/\.[0-9]$//')
  rendered=$(MANWIDTH=80 man -l "$f" 2>/dev/null | col -b)
  grep -qE "^ +$name - [a-z]" <<<"$rendered" ||
    fail "$page: man -l shows no NAME line for $name"
done
# The check itself sees a broken page (an unknown macro).
printf '.TH X 1\n.SH NAME\nx \\- y\n.XX bogus\n' >"$PKG_TMP/bad.1"
[ -n "$(groff -man -Tutf8 -ww -z "$PKG_TMP/bad.1" 2>&1)" ] || fail "groff -ww missed a bad page"
echo "PASS: sagactl(1), sagad(8), saga-participant(7)"
