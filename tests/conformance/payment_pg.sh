#!/bin/sh
# test_conformance_payment_pg: participant-conformance against TWO replicas
# of payment-svc on ONE private PostgreSQL database (pg-test-cluster):
# every rule is checked on each replica in turn (the second sees the
# first's records in the shared tables), and the books must balance in the
# end (money_audit). Usage: payment_pg.sh BIN_DIR SOURCE_DIR
set -eu
bin=$1
src=$2
dir=$(mktemp -d /tmp/pt-conf-pg-XXXXXX)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    [ -f "$dir/state" ] && "$bin/pg-test-cluster" stop "$dir/state" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
url=$(SAGA_BIN_DIR="$bin" "$bin/pg-test-cluster" start --db pay "$dir/state")
for r in a b; do
    "$bin/payment-svc" --listen "ipc://$dir/$r.ipc" --db "$url" \
        --seed "$src/participants/seeds/payment.cfg" >"$dir/$r.log" 2>&1 &
    pids="$pids $!"
done
# Wait for both sockets (a condition, not a fixed sleep); 120 s bound.
i=0
while [ ! -S "$dir/a.ipc" ] || [ ! -S "$dir/b.ipc" ]; do
    i=$((i + 1))
    [ $i -le 1200 ] || { echo "payment-svc did not start"; cat "$dir"/*.log; exit 1; }
    sleep 0.1
done
"$bin/participant-conformance" "ipc://$dir/a.ipc" --operation charge \
    --params customer=alice,amount=1 --compensation refund
"$bin/participant-conformance" "ipc://$dir/b.ipc" --operation charge \
    --params customer=bob,amount=1 --compensation refund
unbalanced=$(psql "$url" -tAc "SELECT count(*) FROM money_audit WHERE NOT balanced")
[ "$unbalanced" = 0 ] || { echo "FAIL: money_audit does not balance"; exit 1; }
echo "both replicas conform; the books balance"
