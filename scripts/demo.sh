#!/usr/bin/env bash
# The main job: installs what is missing, builds, then runs the four
# participants and sagad on the embedded SQLite default in a fresh temp
# directory, starts example sagas (one completes, one is compensated because
# payment is refused, one is compensated because shipping is refused) and
# shows their status. Everything it starts is stopped when it ends.
# Keep the run directory with KEEP=1 to inspect the databases afterwards.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash scripts/install-deps.sh

build=${BUILD_DIR:-$repo/build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
bin=$build/bin

run=$(mktemp -d /tmp/saga-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "run directory kept: $run"; else rm -rf "$run"; fi
}
trap cleanup EXIT

for svc in order payment inventory shipping; do
  "$bin/$svc-svc" --listen "ipc://$run/$svc.ipc" --db "$run/$svc.db" \
    --seed "$repo/participants/seeds/$svc.cfg" 2>>"$run/$svc.log" &
  pids+=($!)
done
# The fifth participant, written in Python (participants/loyalty/loyalty.py): no seed.
"$bin/loyalty-svc" --listen "ipc://$run/loyalty.ipc" --db "$run/loyalty.db" 2>>"$run/loyalty.log" &
pids+=($!)

cat >"$run/sagad.cfg" <<CFG
admin_url = "ipc://$run/sagad.ipc";
database = "$run/sagad.db";
sagas_dir = "$repo/sagas";
participants = {
  order     = "ipc://$run/order.ipc";
  payment   = "ipc://$run/payment.ipc";
  inventory = "ipc://$run/inventory.ipc";
  shipping  = "ipc://$run/shipping.ipc";
  loyalty   = "ipc://$run/loyalty.ipc";
};
CFG
"$bin/sagad" --config "$run/sagad.cfg" 2>>"$run/sagad.log" &
pids+=($!)

export SAGA_ADMIN_URL="ipc://$run/sagad.ipc"
ctl() { "$bin/sagactl" "$@"; }
for _ in $(seq 100); do ctl stats >/dev/null 2>&1 && break; sleep 0.1; done

show() { # $1 = title, rest = start arguments (SAGA=order_with_loyalty for the other saga)
  local title=$1 saga=${SAGA:-order_fulfillment}; shift
  echo
  echo "=== $title"
  echo "\$ sagactl start $saga $*"
  local id
  id=$(ctl start "$saga" "$@")
  echo "$id"
  echo "\$ sagactl status --wait $id"
  ctl status --wait "$id" || true   # exit 3/4 report COMPENSATED/FAILED
}

show "A saga that completes" --key demo-1 customer=alice sku=WIDGET-1 quantity=2 amount=2500 destination=paris
show "Payment refused: the order is cancelled" --key demo-2 customer=carol sku=WIDGET-1 quantity=1 amount=90000 destination=paris
show "Shipping refused: payment refunded, stock released, order cancelled" --key demo-3 customer=bob sku=GADGET-7 quantity=1 amount=1200 destination=atlantis
SAGA=order_with_loyalty show "With loyalty points (a participant in Python)" --key demo-4 customer=dave sku=WIDGET-1 quantity=1 amount=2500 destination=berlin
SAGA=order_with_loyalty show "Shipping refused: the points are revoked too" --key demo-5 customer=dave sku=WIDGET-1 quantity=1 amount=2500 destination=tokyo

echo
echo "=== All sagas"
echo "\$ sagactl list"
ctl list
echo
echo "\$ sagactl stats"
ctl stats
echo
echo "Conservation, from the participants' own databases:"
sqlite3 "$run/payment.db" "SELECT '  money: balances ' || (SELECT SUM(balance) FROM accounts)
  || ' + charged ' || (SELECT COALESCE(SUM(amount), 0) FROM charges WHERE state = 'charged')
  || ' = seeded ' || (SELECT value FROM meta WHERE key = 'money_total');"
sqlite3 "$run/inventory.db" "SELECT '  stock: available ' || (SELECT SUM(available) FROM skus)
  || ' + reserved ' || (SELECT SUM(reserved) FROM skus)
  || ' = seeded ' || (SELECT value FROM meta WHERE key = 'stock_total');"
sqlite3 "$run/loyalty.db" "SELECT '  points: ' || customer || ' holds ' || points || ' = awarded '
  || held || CASE WHEN balanced THEN ' (balanced)' ELSE ' (NOT balanced)' END FROM points_audit;"
