#!/usr/bin/env bash
# The demo (scripts/demo.sh, the README's first command) on the programs of
# this build: it must exit 0 and tell the whole story (README, issue 18):
# a completed and a compensated saga, sagad SIGKILLed with sagas in flight
# and finishing them after its restart, a FAILED saga raising the alert
# (the alert command ran, saga_sagas{state="FAILED"} is 1) and finished by
# `sagactl resume` (the gauge back to 0), and the dashboard URL with a token.
# The demo itself stops at the first step that does not end as it says.
# Usage: check-demo.sh SOURCE_DIR BIN_DIR
set -uo pipefail
src=$1 bin=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fail() { echo "FAIL: $*" >&2; cat "$out" >&2; exit 1; }
SAGA_DEMO_BIN=$bin bash "$src/scripts/demo.sh" </dev/null >"$out" 2>&1 ||
  fail "the demo exited with status $?"
has() { grep -qE -- "$1" "$out" || fail "the demo's output lacks /$1/"; }
count() { [ "$(grep -cE -- "$1" "$out")" -ge "$2" ] || fail "fewer than $2 lines match /$1/"; }
count '^  [0-9a-f-]{36} COMPLETED$' 7             # demo-1, demo-3, the five crashed ones
count '^  [0-9a-f-]{36} COMPENSATED$' 2           # demo-2, and demo-4 after resume
has '^\$ kill -KILL sagad'
has 'log: .*recovered [1-9][0-9]* unfinished sagas'
has '^  [0-9a-f-]{36} FAILED$'
has '^saga_sagas\{state="FAILED"\} 1$'
has '^  alert_command: ALERT saga [0-9a-f-]{36} FAILED: '
has '^\$ sagactl resume '
has '^saga_sagas\{state="FAILED"\} 0$'
has '^  http://127\.0\.0\.1:[0-9]+/\?token=[0-9a-f]{64}$'
has 'health check, no token: \{"status":"ok"\}'
# Conservation, as the demo prints it from the participants' databases.
for what in 'money: balances' 'stock: available'; do
  line=$(grep -E -- "^  $what [0-9]+ \+ (charged|reserved) [0-9]+ = seeded [0-9]+$" "$out") ||
    fail "no '$what' line"
  read -r a b c <<<"$(echo "$line" | grep -oE '[0-9]+' | tr '\n' ' ')"
  [ $((a + b)) -eq "$c" ] || fail "not conserved: $line"
done
echo "PASS: the demo tells the whole story"
cat "$out"
