#!/usr/bin/env python3
"""Turns the JSON documents of scripts/bench.sh into Markdown tables.

usage: scripts/bench_table.py DIR

DIR/<scenario>/<server>-<run>.json, as `roomcast load --json` writes them.
Each cell is the median over the runs; the ratio columns compare each
server with roomcast on the scenario's main figure.
"""
import json
import pathlib
import statistics
import sys

# scenario: (main figure, higher is better, [(column, key, format)])
SCENARIOS = {
    "fanout-max": ("deliveries_per_server_cpu_s", True, [
        ("deliveries/server CPU-s", "deliveries_per_server_cpu_s", "count"),
        ("deliveries/s", "deliveries_per_s", "count"),
        ("server CPU %", "server_cpu_pct", "pct"),
        ("p50", "latency_p50_us", "us"),
        ("p99", "latency_p99_us", "us"),
        ("lost", "lost", "count"),
    ]),
    "fanout-100": ("latency_p50_us", False, [
        ("p50", "latency_p50_us", "us"),
        ("p99", "latency_p99_us", "us"),
        ("p99.9", "latency_p999_us", "us"),
        ("lost", "lost", "count"),
        ("server CPU %", "server_cpu_pct", "pct"),
    ]),
    "fanout-1x1000": ("latency_p99_us", False, [
        ("p50", "latency_p50_us", "us"),
        ("p99", "latency_p99_us", "us"),
        ("max", "latency_max_us", "us"),
        ("lost", "lost", "count"),
        ("server CPU %", "server_cpu_pct", "pct"),
    ]),
    "echo-100": ("round_trips_per_server_cpu_s", True, [
        ("round trips/server CPU-s", "round_trips_per_server_cpu_s", "count"),
        ("round trips/s", "round_trips_per_s", "count"),
        ("p50", "latency_p50_us", "us"),
        ("p99", "latency_p99_us", "us"),
    ]),
    "idle-10k": ("server_rss_per_conn_bytes", False, [
        ("RSS/connection", "server_rss_per_conn_bytes", "bytes"),
        ("handshakes/s", "handshakes_per_s", "count"),
        ("held", "held", "count"),
        ("dropped", "dropped", "count"),
    ]),
    "idle-19k": ("held", True, [
        ("held", "held", "count"),
        ("dropped", "dropped", "count"),
        ("RSS/connection", "server_rss_per_conn_bytes", "bytes"),
        ("handshakes/s", "handshakes_per_s", "count"),
    ]),
    "heartbeat": ("drop_time_max_s", False, [
        ("dead dropped (of 50)", "dead_dropped", "count"),
        ("time to drop p50", "drop_time_p50_s", "s"),
        ("time to drop max", "drop_time_max_s", "s"),
        ("live dropped", "live_dropped", "count"),
        ("lost", "lost", "count"),
    ]),
    "slow": ("server_rss_max_bytes", False, [
        ("slow closed (of 5)", "slow_dropped", "count"),
        ("time to close max", "drop_time_max_s", "s"),
        ("others lost", "lost", "count"),
        ("others p99", "latency_p99_us", "us"),
        ("server RSS max", "server_rss_max_bytes", "bytes"),
    ]),
}
ORDER = ["roomcast", "rust-min", "node-ws", "py-websockets", "py-tornado"]


def fmt(value, kind):
    if value is None:
        return "n/a"
    if kind == "us":
        return f"{value / 1000:.2f} ms" if value >= 1000 else f"{value:.0f} µs"
    if kind == "s":
        return f"{value:.2f} s"
    if kind == "pct":
        return f"{value:.0f}%"
    if kind == "bytes":
        return f"{value / 1048576:.1f} MiB" if value >= 1048576 else f"{value / 1024:.1f} KiB"
    return f"{value:,.0f}"


def main(root):
    root = pathlib.Path(root)
    for scenario, (main_key, higher_better, columns) in SCENARIOS.items():
        folder = root / scenario
        if not folder.is_dir():
            continue
        runs = {}
        for path in sorted(folder.glob("*.json")):
            server = path.stem.rsplit("-", 1)[0]
            runs.setdefault(server, []).append(json.loads(path.read_text())["results"])
        servers = [s for s in ORDER if s in runs] + sorted(s for s in runs if s not in ORDER)

        def median(server, key):
            values = [r[key] for r in runs[server] if key in r]
            return statistics.median(values) if values else None

        base = median("roomcast", main_key) if "roomcast" in runs else None
        print(f"### {scenario}\n")
        print("| server | runs | " + " | ".join(c for c, _, _ in columns) + " | roomcast vs this |")
        print("|---" * (len(columns) + 3) + "|")
        for server in servers:
            cells = [fmt(median(server, key), kind) for _, key, kind in columns]
            value = median(server, main_key)
            if base is None or not value or not base:
                ratio = "n/a"
            else:
                ratio = f"{base / value:.2f}x" if higher_better else f"{value / base:.2f}x"
            print(f"| {server} | {len(runs[server])} | " + " | ".join(cells) + f" | {ratio} |")
        better = "higher" if higher_better else "lower"
        print(f"\nMedians over the runs. Ratio on `{main_key}` ({better} is better): above 1x, roomcast is ahead.\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
