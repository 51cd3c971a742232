#!/usr/bin/env bash
# Compares two roomcast binaries on one load scenario, runs interleaved
# (A, B, A, B, ...) so that drift in the machine hits both alike, and prints
# each run's main figure and the medians.
#
#   scripts/compare.sh [-r RUNS] [-c SCENARIO] [-p] BINARY_A BINARY_B
#
#   RUNS      runs of each binary (default 5)
#   -p        pin the server to CPU 0 and the load to CPU 1: less noise
#             from the scheduler, and the server's figure for one core
#   SCENARIO  fanout-max (default), echo-100 or idle-10k: the same load and
#             server settings (scripts/bench-server.sh) as scripts/bench.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=5
SCENARIO=fanout-max
SERVER_CPU=()
LOAD_CPU=()
while getopts "r:c:p" opt; do
    case $opt in
        r) RUNS=$OPTARG ;;
        c) SCENARIO=$OPTARG ;;
        p) SERVER_CPU=(taskset -c 0); LOAD_CPU=(taskset -c 1) ;;
        *) sed -n '2,13p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || { sed -n '2,13p' "$0"; exit 2; }
A=$(realpath "$1")
B=$(realpath "$2")
case $SCENARIO in
    fanout-max) LOAD="fanout --rooms 10 --members 100 --rate max --size 100 --duration 10s"; KEY=deliveries_per_server_cpu_s ;;
    echo-100) LOAD="echo --connections 100 --size 100 --duration 10s"; KEY=round_trips_per_server_cpu_s ;;
    idle-10k) LOAD="idle --connections 10000 --duration 5s"; KEY=server_rss_per_conn_bytes ;;
    *) echo "compare: unknown scenario $SCENARIO" >&2; exit 2 ;;
esac
OUT=$(mktemp -d)
PORT=9400
ulimit -n "$(ulimit -Hn)"

run() { # binary label run
    "${SERVER_CPU[@]}" "$ROOT/scripts/bench-server.sh" "$1" "$PORT" >"$OUT/server.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do ss -Hltn "sport = :$PORT" | grep -q . && break; sleep 0.1; done
    sleep 1
    # shellcheck disable=SC2086
    "${LOAD_CPU[@]}" "$A" load $LOAD --url "ws://127.0.0.1:$PORT" --server-pid "$pid" --quiet --json "$OUT/$2-$3.json" >/dev/null || true
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    sleep 2
}

for i in $(seq "$RUNS"); do
    run "$A" a "$i"
    run "$B" b "$i"
done
python3 - "$OUT" "$KEY" "$RUNS" <<'PY'
import json, statistics, sys
out, key, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
figures = {side: [json.load(open(f"{out}/{side}-{i}.json"))["results"][key] for i in range(1, runs + 1)] for side in "ab"}
for side, label in (("a", "A"), ("b", "B")):
    print(f"{label}: " + " ".join(f"{v:,.0f}" for v in figures[side]) + f"  median {statistics.median(figures[side]):,.0f}")
ratio = statistics.median(figures["b"]) / statistics.median(figures["a"])
print(f"{key}: B/A = {ratio:.3f}")
PY
