#!/usr/bin/env python3
"""Distributed stress on one machine (issue 15): `ecscale stress --agents 2 --on local` against
one ecscale process, the same nginx target (1 worker, loopback), interleaved, REPS rounds.

1. Throughput: 50 connections (the agents share them), `max: true` for DURATION: requests/s and
   CPU per request (user+sys of the coordinator and its agents, which it reaps).
2. Merged-percentile accuracy: a constant 5,000 req/s for DURATION, one process and two agents
   interleaved; p50, p99 and max of each (the agents' histograms merged by the coordinator).

Usage: stress_agents.py ECSCALE NGINX [DURATION_S] [REPS]
"""

import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stress import measure, spread, start_nginx  # noqa: E402


def run(ecscale, plan, work, agents):
    out = os.path.join(work, f"out-{agents}.json")
    argv = [ecscale, "stress", "--plan", plan, "--progress", "off", "--json", out]
    if agents > 1:
        argv += ["--agents", str(agents)]
    _, cpu, rss, _ = measure(argv)
    with open(out) as f:
        j = json.load(f)
    return j, cpu, rss


def plan_file(work, name, url, phase):
    p = os.path.join(work, f"{name}.yaml")
    with open(p, "w") as f:
        f.write(f"name: {name}\ntargets: ['{url}']\nconnections: 50\nphases:\n  - {phase}\n")
    return p


def main():
    ecscale, nginx = sys.argv[1:3]
    secs = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    work = tempfile.mkdtemp(prefix="ecscale-bench-agents-")
    proc, url, _, _ = start_nginx(nginx, work)
    try:
        flat = plan_file(work, "max", url, f"{{name: max, duration: {secs}s, max: true}}")
        rate = plan_file(work, "rate", url, f"{{name: rate, duration: {secs}s, rate: 5000}}")
        kinds = [("one process", 1), ("2 agents", 2)]
        res = {k: [] for k, _ in kinds}
        for r in range(reps):
            for name, n in kinds[r % 2:] + kinds[: r % 2]:
                j, cpu, rss = run(ecscale, flat, work, n)
                req = j["totals"]["requests"]
                res[name].append((req / j["duration_s"], 1e6 * cpu / req, rss))
                print(f"max round {r + 1} {name:12} {res[name][-1][0]:>10,.0f} req/s  {res[name][-1][1]:6.2f} µs CPU/req", flush=True)
        print(f"\n## --agents 2 vs one process: max load, 50 connections, {secs} s, {reps} interleaved rounds, medians (spread)")
        print("| run | requests/s | CPU per request (all processes) |\n|---|---|---|")
        med = {}
        for name, _ in kinds:
            rps = [x[0] for x in res[name]]
            cpus = [x[1] for x in res[name]]
            med[name] = statistics.median(rps)
            print(f"| {name} | {med[name]:,.0f} ({spread(rps)}) | {statistics.median(cpus):.2f} µs ({min(cpus):.2f}–{max(cpus):.2f}) |")
        print(f"\n2 agents / one process requests/s: {med['2 agents'] / med['one process']:.3f}")

        lat = {k: [] for k, _ in kinds}
        for r in range(reps):
            for name, n in kinds[r % 2:] + kinds[: r % 2]:
                j, _, _ = run(ecscale, rate, work, n)
                l = j["totals"]["latency_ms"]
                lat[name].append((j["totals"]["requests"], l["p50"], l["p99"], l["max"]))
        print(f"\n## Merged percentiles: 5,000 req/s for {secs} s, {reps} interleaved rounds, medians (spread)")
        print("| run | requests | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
        for name, _ in kinds:
            xs = lat[name]
            cols = []
            for i in range(4):
                v = [x[i] for x in xs]
                cols.append(f"{statistics.median(v):,.3f} ({min(v):,.3f}–{max(v):,.3f})" if i else f"{statistics.median(v):,.0f}")
            print(f"| {name} | " + " | ".join(cols) + " |")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
