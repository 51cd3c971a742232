#!/usr/bin/env bash
# Reproduces the tables of docs/benchmarks.md: roomcast and the peer servers
# of ../shared/tools/peers, each alone on the machine, the same load from
# `roomcast load`, several runs each; then prints the tables (medians).
#
#   scripts/bench.sh [-r RUNS] [-s "SERVERS"] [-c "SCENARIOS"] [-o DIR]
#
#   RUNS       runs of each scenario on each server (default 3)
#   SERVERS    default: "roomcast rust-min node-ws py-websockets"
#   SCENARIOS  default: every one below; "cluster" runs scripts/bench-cluster.sh
#              (one process vs 1, 2 and 3 nodes on one Redis) into DIR/cluster
#   DIR        where the JSON of each run goes (default bench-results/DATE)
#
# Every server gets the same heartbeat (ping every 2 s, drop after 5 s of
# silence); roomcast's rate limits are lifted and its outbound queue is
# rust-min's (4096), so it is measured doing the same work
# (scripts/bench-server.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$(cd "$ROOT/../shared/tools/peers" && pwd)
RUNS=3
SERVERS="roomcast rust-min node-ws py-websockets"
SCENARIOS="fanout-max fanout-100 fanout-1x1000 echo-100 idle-10k idle-19k heartbeat slow"
OUT="$ROOT/bench-results/$(date +%Y%m%d-%H%M%S)"
while getopts "r:s:c:o:" opt; do
    case $opt in
        r) RUNS=$OPTARG ;;
        s) SERVERS=$OPTARG ;;
        c) SCENARIOS=$OPTARG ;;
        o) OUT=$OPTARG ;;
        *) sed -n '2,16p' "$0"; exit 2 ;;
    esac
done
PORT=9300
BIN="$ROOT/target/release/roomcast"

(cd "$ROOT" && cargo build --release --quiet)
"$PEERS/setup.sh" >/dev/null
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

load_args() {
    case $1 in
        fanout-max)    echo "fanout --rooms 10 --members 100 --rate max --size 100 --duration 10s" ;;
        fanout-100)    echo "fanout --rooms 10 --members 100 --rate 100 --size 100 --duration 10s" ;;
        fanout-1x1000) echo "fanout --rooms 1 --members 1000 --rate 20 --size 100 --duration 10s" ;;
        echo-100)      echo "echo --connections 100 --size 100 --duration 10s" ;;
        idle-10k)      echo "idle --connections 10000 --duration 5s" ;;
        idle-19k)      echo "idle --connections 19000 --duration 12s" ;;
        heartbeat)     echo "heartbeat --live 200 --dead 50 --rooms 10 --rate 10 --duration 12s" ;;
        slow)          echo "slow --rooms 10 --members 100 --slow 5 --rate 200 --size 1024 --duration 15s" ;;
        *) echo "bench: unknown scenario $1" >&2; exit 2 ;;
    esac
}

start_server() {
    case $1 in
        roomcast)
            "$ROOT/scripts/bench-server.sh" "$BIN" "$PORT" >"$OUT/roomcast.log" 2>&1 &
            local pid=$!
            for _ in $(seq 100); do
                ss -Hltn "sport = :$PORT" | grep -q . && { echo "$pid"; return; }
                sleep 0.1
            done
            echo "bench: roomcast did not start" >&2; exit 1 ;;
        *) HB_INTERVAL_MS=2000 HB_TIMEOUT_MS=5000 "$PEERS/start.sh" "$1" "$PORT" ;;
    esac
}

for scenario in $SCENARIOS; do
    if [ "$scenario" = cluster ]; then
        "$ROOT/scripts/bench-cluster.sh" -r "$RUNS" -o "$OUT/cluster"
        continue
    fi
    mkdir -p "$OUT/$scenario"
    for server in $SERVERS; do
        for run in $(seq "$RUNS"); do
            pid=$(start_server "$server")
            sleep 1
            echo "bench: $scenario on $server, run $run/$RUNS" >&2
            # shellcheck disable=SC2046
            "$BIN" load $(load_args "$scenario") --url "ws://127.0.0.1:$PORT" --server-pid "$pid" --quiet \
                --json "$OUT/$scenario/$server-$run.json" >/dev/null || true
            kill "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
            # Let sockets in TIME_WAIT and the like settle between runs.
            sleep 2
        done
    done
done
python3 "$ROOT/scripts/bench_table.py" "$OUT" | tee "$OUT/tables.md"
