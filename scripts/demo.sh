#!/usr/bin/env bash
# The story of sagad in under a minute. Installs what is missing and builds
# (skipped when SAGA_DEMO_BIN names a directory holding the built programs,
# as the test `demo` does), then runs the five participants and sagad on the
# embedded SQLite default in a fresh temp directory, and shows:
#   1. a saga that completes, and one compensated because payment refuses;
#   2. sagad SIGKILLed with sagas in flight, restarted, finishing them;
#   3. a saga that becomes FAILED (the order service refuses work), the
#      alert it raises (the alert command and the saga_sagas{state="FAILED"}
#      metric), and `sagactl resume` finishing it once the service is fixed;
#   4. the dashboard URL with its token.
# Every wait is on a condition (with a deadline), never a fixed sleep; any
# step that does not end as the story says stops the demo with exit 1.
# Everything it starts is stopped when it ends; on a terminal it first waits
# for Enter, so the dashboard can be looked at. KEEP=1 keeps the run directory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [ -n "${SAGA_DEMO_BIN:-}" ]; then
  bin=$SAGA_DEMO_BIN
else
  bash scripts/install-deps.sh
  build=${BUILD_DIR:-$repo/build}
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j"$(nproc)" >/dev/null
  bin=$build/bin
fi

run=$(mktemp -d /tmp/saga-demo.XXXXXX)
declare -A pid=()
cleanup() {
  for p in "${pid[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pid[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -f "${alert:-}"
  [ -n "${alert_dir:-}" ] && rm -rf "$alert_dir"
  if [ "${KEEP:-0}" = 1 ]; then echo "run directory kept: $run"; else rm -rf "$run"; fi
}
trap cleanup EXIT

die() {
  echo "demo: $*" >&2
  for f in "$run"/*.log; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done
  exit 1
}
# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 50 ms until it succeeds.
wait_until() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "gave up after ${limit}s waiting for $what"
    sleep 0.05
  done
}
alive() { kill -0 "${pid[$1]}" 2>/dev/null; }

# ---- The participants ---------------------------------------------------------
# start_svc NAME [ARGS...]: order, payment, inventory, shipping (C) with their seeds.
start_svc() {
  local svc=$1; shift
  "$bin/$svc-svc" --listen "ipc://$run/$svc.ipc" --db "$run/$svc.db" \
    --seed "$repo/participants/seeds/$svc.cfg" "$@" 2>>"$run/$svc.log" &
  pid[$svc]=$!
  wait_until 20 "$svc-svc to listen" test -S "$run/$svc.ipc"
}
stop_svc() {
  kill -TERM "${pid[$1]}"
  wait "${pid[$1]}" || die "$1-svc did not stop cleanly"
  unset "pid[$1]"
}
start_svc order
start_svc payment
start_svc inventory
# shipping holds each reply 1 s ("a slow carrier"), so sagas are in flight long
# enough to kill sagad under them in part 2.
start_svc shipping --faults delay=1,delay_ms=1000
# The fifth participant, written in Python (participants/loyalty/loyalty.py): no seed.
"$bin/loyalty-svc" --listen "ipc://$run/loyalty.ipc" --db "$run/loyalty.db" 2>>"$run/loyalty.log" &
pid[loyalty]=$!
wait_until 20 "loyalty-svc to listen" test -S "$run/loyalty.ipc"

# ---- sagad ---------------------------------------------------------------------
# Two tokens (README "Tokens"): the admin token for sagactl, a read-only one for
# Prometheus and the dashboard.
# Hex: a token that also goes into a URL (the dashboard link) as it is.
(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$run/admin.token" &&
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$run/metrics.token")
# The alert command must be a file no other user could have written, in
# directories likewise up to / (docs/SECURITY.md): /tmp does not qualify. It
# goes beside the programs, or else (a checkout under /tmp) in a private
# directory of this user's runtime directory or home, and is left out if no
# such place qualifies.
alert_script() { # $1 = its path
  printf '#!/bin/sh\n# $1 = saga id, $2 = reason\necho "ALERT saga $1 FAILED: $2" >>%s/alerts.log\n' \
    "$run" >"$1"
  chmod 700 "$1"
}
write_cfg() {
  cat >"$run/sagad.cfg" <<CFG
admin_url = "ipc://$run/sagad.ipc";
admin_token_file = "$run/admin.token";
database = "$run/sagad.db";
sagas_dir = "$repo/sagas";
http_url = "http://127.0.0.1:0";        # a free port, read from the log
metrics_token_file = "$run/metrics.token";
$1
# Short retry policies, so that a saga gives up (part 3) in about a second.
defaults = {
  retry = { max_attempts = 3; initial_backoff_ms = 50; max_backoff_ms = 200; };
  compensation_retry = { max_attempts = 3; initial_backoff_ms = 50; max_backoff_ms = 200; };
};
participants = {
  order     = "ipc://$run/order.ipc";
  payment   = "ipc://$run/payment.ipc";
  inventory = "ipc://$run/inventory.ipc";
  shipping  = "ipc://$run/shipping.ipc";
  loyalty   = "ipc://$run/loyalty.ipc";
};
CFG
}
alert="" alert_dir="" why=""
for place in "$(cd "$(dirname "$bin")" && pwd)" "${XDG_RUNTIME_DIR:-}" "${HOME:-}"; do
  [ -n "$place" ] && [ -d "$place" ] && [ -w "$place" ] || continue
  if [ "$place" = "$(cd "$(dirname "$bin")" && pwd)" ]; then
    candidate="$place/saga-demo-alert.$$"
  else
    alert_dir=$(mktemp -d "$place/.saga-demo.XXXXXX") || continue
    candidate="$alert_dir/alert"
  fi
  alert_script "$candidate"
  write_cfg "alert_command = \"$candidate\";"
  if why=$("$bin/sagad" --config "$run/sagad.cfg" --check 2>&1); then
    alert=$candidate
    break
  fi
  rm -f "$candidate"
  if [ -n "$alert_dir" ]; then rm -rf "$alert_dir"; alert_dir=""; fi
done
if [ -z "$alert" ]; then
  echo "(alert_command left out: $why)"
  write_cfg ""
fi

export SAGA_ADMIN_URL="ipc://$run/sagad.ipc"
export SAGA_ADMIN_TOKEN_FILE="$run/admin.token" # sagactl sends it (--token-file does too)
ctl() { "$bin/sagactl" "$@"; }
http_port="" sagad_runs=0
start_sagad() {
  sagad_runs=$((sagad_runs + 1))
  sagad_log=$run/sagad-$sagad_runs.log
  "$bin/sagad" --config "$run/sagad.cfg" 2>>"$sagad_log" &
  pid[sagad]=$!
  wait_until 30 "sagad to answer" ctl stats
  alive sagad || die "sagad exited"
  http_port=$(sed -n 's/.*dashboard on .* (port \([0-9]*\)).*/\1/p' "$sagad_log" | tail -n1)
  [ -n "$http_port" ] || die "sagad did not say which port it serves HTTP on"
}
# GET a path of http_url with the metrics token.
http_get() {
  python3 - "http://127.0.0.1:$http_port$1" "$run/metrics.token" <<'PY'
import sys, urllib.request
token = open(sys.argv[2]).read().strip()
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + token})
sys.stdout.write(urllib.request.urlopen(req, timeout=10).read().decode())
PY
}
failed_gauge() { http_get /metrics | sed -n 's/^saga_sagas{state="FAILED"} //p'; }
start_sagad

# expect ID STATE: waits for the saga to be final and checks its state.
expect() {
  local got
  ctl status --wait "$1" >/dev/null || true # exit 3/4: COMPENSATED/FAILED
  got=$(ctl --json status "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  [ "$got" = "$2" ] || die "saga $1 ended $got, expected $2"
  echo "  $1 $got"
}
start() { # TYPE KEY NAME=VALUE...: starts a saga, prints the command, sets $id
  local type=$1 key=$2; shift 2
  echo "\$ sagactl start $type --key $key $*"
  id=$(ctl start "$type" --key "$key" "$@") || die "start $key refused"
}

echo
echo "=== 1. A saga that completes, and one compensated because payment refuses"
start order_fulfillment demo-1 customer=alice sku=WIDGET-1 quantity=2 amount=2500 destination=paris
expect "$id" COMPLETED
start order_fulfillment demo-2 customer=carol sku=WIDGET-1 quantity=1 amount=90000 destination=paris
expect "$id" COMPENSATED
echo "  (carol's charge was refused: her order was cancelled, nothing is held)"
start order_with_loyalty demo-3 customer=dave sku=WIDGET-1 quantity=1 amount=2500 destination=berlin
expect "$id" COMPLETED
echo "  (with loyalty points, from the participant written in Python)"

echo
echo "=== 2. sagad killed (SIGKILL) with sagas in flight, then restarted"
ids=()
for i in 1 2 3 4 5; do
  id=$(ctl start order_fulfillment --key "crash-$i" customer=bob sku=GADGET-7 quantity=1 \
    amount=1000 destination=paris) || die "start crash-$i refused"
  ids+=("$id")
done
running=$(ctl list --state running | grep -c RUNNING || true)
echo "\$ kill -KILL sagad    # $running of the 5 sagas just started are RUNNING"
kill -KILL "${pid[sagad]}"
wait "${pid[sagad]}" 2>/dev/null || true
unset "pid[sagad]"
echo "\$ sagad --config sagad.cfg   # recovers them from its database"
start_sagad
grep -h "recover" "$sagad_log" | sed 's/^/  log: /' | head -n 3 || true
for id in "${ids[@]}"; do expect "$id" COMPLETED; done
replays=$(http_get /metrics | sed -n 's/^saga_replayed_replies_total //p')
echo "  each step ran once: $replays requests sent again after the restart were answered from"
echo "  the participants' idempotency records (saga_replayed_replies_total $replays)"

echo
echo "=== 3. A saga that needs an operator: FAILED, the alert, then resume"
echo "\$ order-svc --faults retry=1   # the order service answers every request RETRY"
stop_svc order
start_svc order --faults retry=1
start order_fulfillment demo-4 customer=alice sku=WIDGET-1 quantity=1 amount=1000 destination=paris
failed_id=$id
expect "$failed_id" FAILED
ctl status "$failed_id" | grep -i "^ *last error" | sed 's/^ */  /' || true
wait_until 10 "the FAILED gauge" test "$(failed_gauge)" = 1
echo "\$ curl -H 'Authorization: Bearer ...' http://127.0.0.1:$http_port/metrics | grep FAILED"
http_get /metrics | grep -E '^saga_(sagas|oldest_age_seconds)\{state="FAILED"\}'
echo "  ALERT firing: saga_sagas{state=\"FAILED\"} > 0   (docs/OBSERVABILITY.md)"
if [ -n "$alert" ]; then
  wait_until 10 "the alert command" grep -q "$failed_id" "$run/alerts.log"
  sed 's/^/  alert_command: /' "$run/alerts.log"
fi
echo "\$ order-svc                    # fixed: restarted without the fault"
stop_svc order
start_svc order
echo "\$ sagactl resume $failed_id"
ctl resume "$failed_id" | sed 's/^/  /'
expect "$failed_id" COMPENSATED
wait_until 10 "the FAILED gauge to fall" test "$(failed_gauge)" = 0
http_get /metrics | grep -E '^saga_sagas\{state="FAILED"\}'
echo "  the alert clears"

echo
echo "=== All sagas"
ctl list
echo
echo "Conservation, from the participants' own databases:"
sqlite3 "$run/payment.db" "SELECT '  money: balances ' || (SELECT SUM(balance) FROM accounts)
  || ' + charged ' || (SELECT COALESCE(SUM(amount), 0) FROM charges WHERE state = 'charged')
  || ' = seeded ' || (SELECT value FROM meta WHERE key = 'money_total');"
sqlite3 "$run/inventory.db" "SELECT '  stock: available ' || (SELECT SUM(available) FROM skus)
  || ' + reserved ' || (SELECT SUM(reserved) FROM skus)
  || ' = seeded ' || (SELECT value FROM meta WHERE key = 'stock_total');"

echo
echo "=== 4. The dashboard (read-only token in the link; the page keeps it, the address bar drops it)"
echo "  http://127.0.0.1:$http_port/?token=$(cat "$run/metrics.token")"
echo "  (demo dashboard: it stops with the demo; on a terminal, the demo waits for Enter)"
echo "  health check, no token: $(python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode().strip())' "http://127.0.0.1:$http_port/healthz")"
echo "  sagactl needs the admin token: SAGA_ADMIN_TOKEN_FILE=$run/admin.token"
echo "  demo finished in ${SECONDS}s"
if [ -t 0 ] && [ -t 1 ]; then
  read -r -p "Press Enter to stop everything (the dashboard is live until then) " _ || true
fi
