#!/usr/bin/env bash
# What authentication costs a handshake: `roomcast load idle` opening
# CONNECTIONS connections against one binary with auth off, with HS256
# tokens (auth.hmac_secret) and with ES256 tokens (auth.public_key), runs
# interleaved (off, HS256, ES256, off, ...) so drift hits all three alike.
# Prints each run's handshakes per server CPU-second and memory per
# connection, then the medians and their ratios to auth off.
#
#   scripts/bench-auth.sh [-r RUNS] [-n CONNECTIONS] [-p] [-i] BINARY
#
#   RUNS          runs of each (default 5)
#   CONNECTIONS   connections per run (default 10000)
#   -p            pin the server to CPU 0 and the load tester to CPU 1
#   -i            instead, count the server's instructions per handshake
#                 under valgrind's callgrind: the same every run, whatever
#                 the machine is doing (user space only: the kernel's share
#                 of a handshake, most of it, is not counted)
#
# Every connection sends the same token (signed once by `roomcast token`),
# so the server verifies a signature per handshake while the load tester
# spends nothing on signing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=5
CONNECTIONS=10000
SERVER_CPU=()
LOAD_CPU=()
INSTRUCTIONS=
while getopts "r:n:pi" opt; do
    case $opt in
        i) INSTRUCTIONS=1 ;;
        r) RUNS=$OPTARG ;;
        n) CONNECTIONS=$OPTARG ;;
        p) SERVER_CPU=(taskset -c 0); LOAD_CPU=(taskset -c 1) ;;
        *) sed -n '2,22p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || { sed -n '2,22p' "$0"; exit 2; }
BIN=$(realpath "$1")
OUT=$(mktemp -d)
PORT=9410
ulimit -n "$(ulimit -Hn)"

SECRET=bench-secret-of-at-least-thirty-two-bytes
openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$OUT/es256.pem"
openssl ec -in "$OUT/es256.pem" -pubout -out "$OUT/es256.pub" 2>/dev/null
HS256=$(cd / && ROOMCAST_AUTH__HMAC_SECRET=$SECRET "$BIN" token --sub bench --rooms '*' --ttl 2h)
ES256=$(cd / && "$BIN" token --sub bench --rooms '*' --ttl 2h --private-key "$OUT/es256.pem")

variant() { # sets env and token for a variant
    env=(); token=()
    case $1 in
        off) ;;
        hs256) env=(ROOMCAST_AUTH__MODE=required "ROOMCAST_AUTH__HMAC_SECRET=$SECRET"); token=(--token "$HS256") ;;
        es256) env=(ROOMCAST_AUTH__MODE=required "ROOMCAST_AUTH__PUBLIC_KEY=$OUT/es256.pub"); token=(--token "$ES256") ;;
    esac
}

# Instructions for N handshakes, from start to exit: one worker, no pings.
instructions() { # variant N
    variant "$1"
    (cd / && env "${env[@]}" ROOMCAST_SERVER__PORT=$PORT ROOMCAST_SERVER__WORKERS=1 ROOMCAST_LOG__LEVEL=warn \
        ROOMCAST_HEARTBEAT__INTERVAL=60s ROOMCAST_HEARTBEAT__TIMEOUT=120s \
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" serve) >"$OUT/server.log" 2>&1 &
    local pid=$!
    for _ in $(seq 300); do ss -Hltn "sport = :$PORT" | grep -q . && break; sleep 0.1; done
    "$BIN" load idle --connections "$2" --duration 1s --connect-concurrency 16 --url "ws://127.0.0.1:$PORT" \
        "${token[@]}" --min-held "$2" --quiet >"$OUT/load.log" 2>&1 || { echo "bench-auth: $1 failed" >&2; cat "$OUT/load.log" "$OUT/server.log" >&2; exit 1; }
    kill -TERM "$pid"
    wait "$pid" || true
    grep -o 'Collected : [0-9]*' "$OUT/server.log" | grep -o '[0-9]*$'
}

if [ -n "$INSTRUCTIONS" ]; then
    command -v valgrind >/dev/null || { echo "bench-auth: -i needs valgrind" >&2; exit 2; }
    printf '%-6s %22s %8s\n' auth "instructions/handshake" "vs off"
    for v in off hs256 es256; do
        # The difference between two runs leaves out start-up and exit.
        few=$(instructions "$v" 500)
        many=$(instructions "$v" 1500)
        per=$(((many - few) / 1000))
        [ "$v" = off ] && base=$per
        printf '%-6s %22s %8s\n' "$v" "$per" "$(python3 -c "print(f'{$per / $base:.2f}')")"
    done
    exit 0
fi

run() { # variant run
    variant "$1"
    env "${env[@]}" "${SERVER_CPU[@]}" "$ROOT/scripts/bench-server.sh" "$BIN" "$PORT" >"$OUT/server.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do ss -Hltn "sport = :$PORT" | grep -q . && break; sleep 0.1; done
    sleep 1
    "${LOAD_CPU[@]}" "$BIN" load idle --connections "$CONNECTIONS" --duration 2s --url "ws://127.0.0.1:$PORT" \
        "${token[@]}" --server-pid "$pid" --min-held "$CONNECTIONS" --quiet --json "$OUT/$1-$2.json" >/dev/null ||
        { echo "bench-auth: the $1 run $2 failed" >&2; cat "$OUT/server.log" >&2; exit 1; }
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    sleep 2
}

for i in $(seq "$RUNS"); do
    for variant in off hs256 es256; do run "$variant" "$i"; done
done
python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def figures(variant, key):
    return [json.load(open(f"{out}/{variant}-{i}.json"))["results"][key] for i in range(1, runs + 1)]
base = {key: statistics.median(figures("off", key)) for key in ("handshakes_per_server_cpu_s", "handshakes_per_s", "server_rss_per_conn_bytes")}
print(f"{'auth':6} {'handshakes/server CPU-s (runs)':54} {'median':>8} {'vs off':>7} {'handshakes/s':>12} {'B/conn':>7}")
for variant in ("off", "hs256", "es256"):
    per_cpu = figures(variant, "handshakes_per_server_cpu_s")
    median = statistics.median(per_cpu)
    rate = statistics.median(figures(variant, "handshakes_per_s"))
    rss = statistics.median(figures(variant, "server_rss_per_conn_bytes"))
    runs_text = " ".join(f"{x:,.0f}" for x in per_cpu)
    print(f"{variant:6} {runs_text:54} {median:8,.0f} {median / base['handshakes_per_server_cpu_s']:7.3f} {rate:12,.0f} {rss:7,.0f}")
PY
