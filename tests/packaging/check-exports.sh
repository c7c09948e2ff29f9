#!/usr/bin/env bash
# libsaga_participant exports participant.h's pt_* API and nothing else, and
# carries its SONAME (packaging/, participants/runtime/libsaga_participant.map).
# Usage: check-exports.sh LIBRARY (the built libsaga_participant.so).
source "$(dirname "$0")/common.sh"
lib=$1
[ -f "$lib" ] || fail "no library $lib"
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libsaga_participant.so.0 ] || fail "SONAME is '$soname', want libsaga_participant.so.0"
nm -D --defined-only "$lib" | awk '{print $NF}' | sort >"$PKG_TMP/exports"
foreign=$(grep -v -E '^(pt|saga)_' "$PKG_TMP/exports" || true)
[ -z "$foreign" ] || fail "exported without the pt_/saga_ prefix: $(echo $foreign)"
# The API itself must be there (an empty export list would pass the above).
for f in pt_create pt_register pt_start pt_stop pt_destroy pt_param pt_action_result pt_result_set; do
  grep -qx "$f" "$PKG_TMP/exports" || fail "$f is not exported"
done
echo "PASS: $(wc -l <"$PKG_TMP/exports") symbols, all pt_*; SONAME $soname"
