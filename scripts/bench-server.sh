#!/usr/bin/env bash
# Starts a roomcast binary as the benchmarks run it (scripts/bench.sh,
# scripts/compare.sh): port PORT, any origin, the peers' heartbeat (ping
# every 2 s, drop after 5 s of silence), rate limits lifted and rust-min's
# outbound queue (4096), so it is measured doing the same work as they do.
# It runs from / so that no config/roomcast.toml is read.
#
#   scripts/bench-server.sh BINARY PORT
set -euo pipefail
BIN=$(realpath "$1")
cd /
ROOMCAST_SERVER__PORT=$2 ROOMCAST_ORIGIN__POLICY=any \
ROOMCAST_HEARTBEAT__INTERVAL=2s ROOMCAST_HEARTBEAT__TIMEOUT=5s \
ROOMCAST_LIMITS__MESSAGES_PER_SECOND=10000000 ROOMCAST_LIMITS__BURST=10000000 \
ROOMCAST_LIMITS__OUTBOUND_QUEUE=4096 ROOMCAST_SERVER__MAX_CONNECTIONS=200000 \
ROOMCAST_LOG__LEVEL=warn exec "$BIN" serve
