#!/bin/sh
# test_conformance_<service>_pg: participant-conformance against TWO replicas
# of one service on ONE private PostgreSQL database (pg-test-cluster):
# every rule is checked on each replica in turn (the second sees the
# first's records in the shared tables), and the service's audit query, when
# it has one, must find no violated invariant in the end.
# Usage: service_pg.sh BIN_DIR SOURCE_DIR SERVICE OPERATION COMPENSATION
#                      PARAMS_A PARAMS_B [AUDIT_SQL]
set -eu
bin=$1
src=$2
svc=$3
op=$4
comp=$5
params_a=$6
params_b=$7
audit=${8:-}
dir=$(mktemp -d /tmp/pt-conf-pg-XXXXXX)
pids=""
# Stops what it started, whatever happened: SIGTERM, then SIGKILL for a
# replica still there after 10 s (its log says why it did not stop).
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    i=0
    for p in $pids; do
        while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do
            i=$((i + 1))
            sleep 0.1
        done
        if kill -0 "$p" 2>/dev/null; then
            echo "replica pid $p did not stop on SIGTERM within 10 s: killed" >&2
            kill -9 "$p" 2>/dev/null || true
            cat "$dir"/*.log >&2 || true
        fi
        wait "$p" 2>/dev/null || true
    done
    [ -f "$dir/state" ] && "$bin/pg-test-cluster" stop "$dir/state" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
url=$(SAGA_BIN_DIR="$bin" "$bin/pg-test-cluster" start --db "$svc" "$dir/state")
for r in a b; do
    "$bin/$svc-svc" --listen "ipc://$dir/$r.ipc" --db "$url" \
        --seed "$src/participants/seeds/$svc.cfg" >"$dir/$r.log" 2>&1 &
    pids="$pids $!"
done
# Wait for both sockets (a condition, not a fixed sleep); 120 s bound.
i=0
while [ ! -S "$dir/a.ipc" ] || [ ! -S "$dir/b.ipc" ]; do
    i=$((i + 1))
    [ $i -le 1200 ] || { echo "$svc-svc did not start"; cat "$dir"/*.log; exit 1; }
    sleep 0.1
done
# Each kit run is bounded (its exchanges time out after 5 s each): a stall
# fails here, naming the replica, with both logs.
for r in a b; do
    if [ $r = a ]; then params=$params_a; else params=$params_b; fi
    rc=0
    timeout 120 "$bin/participant-conformance" "ipc://$dir/$r.ipc" --operation "$op" \
        --params "$params" --compensation "$comp" || rc=$?
    if [ $rc -ne 0 ]; then
        [ $rc -eq 124 ] && echo "FAIL: the kit did not finish against replica $r in 120 s"
        echo "--- replica logs"; cat "$dir"/*.log
        # Who held what: a request answered RETRY until the kit gave up waits
        # for a lock (lock_timeout 2 s) that some session kept.
        echo "--- sessions and locks of the database"
        psql "$url" -c "SELECT pid, application_name, state, xact_start, state_change, wait_event_type, left(query, 120) AS query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()" || true
        psql "$url" -c "SELECT l.pid, l.locktype, l.relation::regclass, l.mode, l.granted FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE a.datname = current_database() AND l.pid <> pg_backend_pid() AND l.locktype <> 'virtualxid'" || true
        exit 1
    fi
done
if [ -n "$audit" ]; then
    violations=$(psql "$url" -tAc "$audit")
    [ "$violations" = 0 ] || { echo "FAIL: $audit gave $violations"; exit 1; }
fi
echo "both $svc replicas conform on one PostgreSQL database"
