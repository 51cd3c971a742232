#!/usr/bin/env bash
# The cluster figures of docs/benchmarks.md: one roomcast alone, then 1, 2
# and 3 nodes sharing one Redis on this machine, the same fan-out load spread
# over the nodes (`roomcast load --url A,B,...`). For each run: deliveries
# per node CPU-second at --rate max; latency at a fixed rate with the
# publishers on node 1 and every other member on the others
# (--split-publishers); Redis's CPU and its commands per publish
# (INFO commandstats). Prints a table of medians.
#
#   scripts/bench-cluster.sh [-r RUNS] [-s "SETUPS"] [-o DIR]
#
#   RUNS    runs of each setup (default 3)
#   SETUPS  default "single 1 2 3" (single: no [cluster]; N: N nodes)
#   DIR     where each run's JSON goes (default bench-results/cluster-DATE)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=3
SETUPS="single 1 2 3"
OUT="$ROOT/bench-results/cluster-$(date +%Y%m%d-%H%M%S)"
while getopts "r:s:o:" opt; do
    case $opt in
        r) RUNS=$OPTARG ;;
        s) SETUPS=$OPTARG ;;
        o) OUT=$OPTARG ;;
        *) sed -n '2,14p' "$0"; exit 2 ;;
    esac
done
BIN="$ROOT/target/release/roomcast"
REDIS_PORT=9500
BASE_PORT=9301
MAX="fanout --rooms 10 --members 100 --rate max --size 100 --duration 10s"
FIXED="fanout --rooms 10 --members 100 --rate 100 --size 100 --duration 10s"

command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
    { echo "bench-cluster: redis-server is missing (apt install redis-server)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet)
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
NODES=()
cleanup() {
    for pid in "${NODES[@]}"; do kill "$pid" 2>/dev/null || true; done
    kill "$REDIS_PID" 2>/dev/null || true
}
trap cleanup EXIT
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
for _ in $(seq 50); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done

# CPU seconds (user + system) of the processes given.
cpu() { python3 "$ROOT/scripts/bench_cluster.py" cpu "$@"; }

start_nodes() { # SETUP -> starts the nodes, sets NODES and URLS
    local setup=$1 count=$1 n port
    NODES=()
    URLS=""
    if [ "$setup" = single ]; then count=1; unset ROOMCAST_CLUSTER__REDIS; else
        export ROOMCAST_CLUSTER__REDIS="redis://127.0.0.1:$REDIS_PORT"
        export ROOMCAST_CLUSTER__PREFIX="bench"
    fi
    for n in $(seq "$count"); do
        port=$((BASE_PORT + n - 1))
        "$ROOT/scripts/bench-server.sh" "$BIN" "$port" >>"$OUT/nodes.log" 2>&1 &
        NODES+=($!)
        URLS="${URLS:+$URLS,}ws://127.0.0.1:$port"
        for _ in $(seq 100); do
            [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")" = 200 ] && break
            sleep 0.1
        done
    done
}

stop_nodes() {
    for pid in "${NODES[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${NODES[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
    NODES=()
}

for setup in $SETUPS; do
    for run in $(seq "$RUNS"); do
        echo "bench-cluster: $setup, run $run/$RUNS" >&2
        rcli flushall >/dev/null
        rcli config resetstat >/dev/null
        start_nodes "$setup"
        sleep 1
        before_nodes=$(cpu "${NODES[@]}")
        before_redis=$(cpu "$REDIS_PID")
        # shellcheck disable=SC2086
        "$BIN" load $MAX --url "$URLS" --quiet --json "$OUT/$setup-max-$run.json" >/dev/null || true
        after_nodes=$(cpu "${NODES[@]}")
        after_redis=$(cpu "$REDIS_PID")
        rcli info commandstats >"$OUT/$setup-commandstats-$run.txt"
        split=""
        [ "$setup" != single ] && [ "$setup" != 1 ] && split="--split-publishers"
        # shellcheck disable=SC2086
        "$BIN" load $FIXED $split --url "$URLS" --quiet --json "$OUT/$setup-fixed-$run.json" >/dev/null || true
        echo "{\"nodes_cpu_s\": $(python3 -c "print($after_nodes - $before_nodes)"), \"redis_cpu_s\": $(python3 -c "print($after_redis - $before_redis)"), \"nodes\": ${#NODES[@]}}" \
            >"$OUT/$setup-cpu-$run.json"
        stop_nodes
        sleep 2
    done
done
python3 "$ROOT/scripts/bench_cluster.py" table "$OUT" "$SETUPS" | tee "$OUT/table.md"
