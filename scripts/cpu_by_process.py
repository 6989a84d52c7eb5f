#!/usr/bin/env python3
"""CPU time by process while a benchmark runs (BENCHMARKS.md, "Where the service's CPU goes").

Usage: python3 scripts/cpu_by_process.py OUT [SECONDS]
       python3 scripts/cpu_by_process.py --per-request OUT BENCH_JSON
Every second, one line to OUT: the seconds since start, then `name=ticks` (1/100 s of CPU in that
second, user + system) for every frostgate and postgres process, summed by name (the command
name and its first argument: `frostgate:host`, `frostgate-encla:serve`, `postgres:`). A
`frostgate bench` process is split by thread instead (`bench/tokio-rt-worker`,
`bench/request-log-wri`, `bench/request-log-gro`). Ends after SECONDS (default 120) or when killed.

With --per-request, reads such an OUT of one `frostgate bench --service --json` run and that
run's JSON, and prints the CPU one request takes in each phase, in ms, by process: the direct
phase is the busy seconds before the service's log writer first shows, the service phase the
seconds it shows in; each phase's first and last second (partly idle) are left out.
"""
import collections
import os
import sys
import time


def ticks(stat: str) -> tuple[str, int]:
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return comm, int(fields[11]) + int(fields[12])


def snapshot() -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm, t = ticks(open(f"/proc/{pid}/stat").read())
            argv = open(f"/proc/{pid}/cmdline").read().split("\0")
        except OSError:
            continue
        if not (comm.startswith("frostgate") or comm == "postgres"):
            continue
        if comm == "frostgate" and len(argv) > 1 and argv[1] == "bench":
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    name, tt = ticks(open(f"/proc/{pid}/task/{tid}/stat").read())
                except OSError:
                    continue
                out["bench/" + name] += tt
            continue
        first = argv[1] if len(argv) > 1 and comm != "postgres" else ""
        out[f"{comm}:{first}"] += t
    return out


def per_request(log: str, bench: str) -> None:
    import json
    import re

    report = json.load(open(bench))
    seconds = [dict((k, int(v)) for k, v in re.findall(r"(\S+)=(\d+)", line)) for line in open(log)]
    service = [i for i, s in enumerate(seconds) if any(k.startswith("bench/request-log") for k in s)]
    if not service:
        sys.exit("no service phase in the log (no bench/request-log thread)")
    direct = [i for i in range(service[0]) if sum(seconds[i].values()) > 100]
    phases = [("direct", direct, report["signatures_per_sec"]), ("service", service, report["service"]["requests_per_sec"])]
    totals = {}
    for name, idx, rate in phases:
        idx = idx[1:-1]
        sums: collections.Counter = collections.Counter()
        for i in idx:
            sums.update(seconds[i])
        # ticks are 1/100 s per second: ms of CPU per request = ticks/s * 10 / (requests/s).
        per = {k: v / len(idx) * 10 / rate for k, v in sums.items() if v / len(idx) >= 0.5}
        totals[name] = sum(per.values())
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
        print(f"{name}: {totals[name]:.3f} ms per request at {rate:.0f}/s ({kinds})")
    ratio = report["service"]["ratio_to_direct"]
    print(f"service / direct: throughput {ratio:.3f}, CPU per request {totals['direct'] / totals['service']:.3f}")


def main() -> None:
    if sys.argv[1] == "--per-request":
        per_request(sys.argv[2], sys.argv[3])
        return
    out = open(sys.argv[1], "w")
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 120.0
    start, before = time.time(), snapshot()
    while time.time() - start < seconds:
        time.sleep(1)
        now = snapshot()
        diff = {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0) > 0}
        line = " ".join(f"{k}={v}" for k, v in sorted(diff.items(), key=lambda kv: -kv[1]))
        out.write(f"{time.time() - start:.0f} {line}\n")
        out.flush()
        before = now


if __name__ == "__main__":
    main()
