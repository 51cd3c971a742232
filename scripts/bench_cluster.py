#!/usr/bin/env python3
"""Helpers of scripts/bench-cluster.sh (standard library only).

    bench_cluster.py cpu PID...                   user + system CPU seconds of the processes
    bench_cluster.py table DIR "SETUPS"           the medians of the runs in DIR, as Markdown
"""
import glob
import json
import os
import re
import statistics
import sys


def cpu(pids):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    print(total / ticks)


def load(path):
    with open(path) as f:
        return json.load(f)


def calls(path):
    """Top-level command calls from INFO commandstats."""
    out = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"cmdstat_(\S+):calls=(\d+)", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def table(directory, setups):
    rows = []
    for setup in setups.split():
        per = {"delivered_per_cpu": [], "p50": [], "p99": [], "redis_ms_per_1000": [], "round_trips": [], "rate": []}
        for path in sorted(glob.glob(f"{directory}/{setup}-max-*.json")):
            run = path.rsplit("-", 1)[1].split(".")[0]
            results = load(path)["results"]
            usage = load(f"{directory}/{setup}-cpu-{run}.json")
            fixed = load(f"{directory}/{setup}-fixed-{run}.json")["results"]
            deliveries = results["deliveries"]
            per["delivered_per_cpu"].append(deliveries / usage["nodes_cpu_s"] if usage["nodes_cpu_s"] else 0)
            per["rate"].append(results.get("deliveries_per_s", 0))
            per["p50"].append(fixed["latency_p50_us"])
            per["p99"].append(fixed["latency_p99_us"])
            published = results["published"]
            if setup != "single" and published:
                per["redis_ms_per_1000"].append(usage["redis_cpu_s"] * 1000 / (published / 1000))
                stats = calls(f"{directory}/{setup}-commandstats-{run}.txt")
                scripts = stats.get("evalsha", 0) + stats.get("eval", 0)
                per["round_trips"].append(scripts / published)
        if not per["p50"]:
            continue
        med = {k: (statistics.median(v) if v else None) for k, v in per.items()}
        rows.append((setup, med, len(per["p50"])))
    print("| setup | deliveries/s (all nodes) | deliveries per node CPU-second | latency p50 / p99 at 10x100 msg/s | Redis CPU per 1000 publishes | scripts per publish | runs |")
    print("|---|---|---|---|---|---|---|")
    for setup, m, runs in rows:
        name = "one process, no Redis" if setup == "single" else f"{setup} node{'s' if setup != '1' else ''}"
        redis_cpu = f"{m['redis_ms_per_1000']:.0f} ms" if m["redis_ms_per_1000"] is not None else "-"
        trips = f"{m['round_trips']:.2f}" if m["round_trips"] is not None else "-"
        print(
            f"| {name} | {m['rate']:,.0f} | {m['delivered_per_cpu']:,.0f} | {m['p50']:,.0f} / {m['p99']:,.0f} µs "
            f"| {redis_cpu} | {trips} | {runs} |"
        )


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "cpu":
        cpu(sys.argv[2:])
    elif what == "table":
        table(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
