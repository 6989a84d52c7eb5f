#!/usr/bin/env python3
"""CPU time by process while a benchmark runs (BENCHMARKS.md, "Where the service's CPU goes").

Usage: python3 scripts/cpu_by_process.py OUT [SECONDS]
Every second, one line to OUT: the seconds since start, then `name=ticks` (1/100 s of CPU in that
second, user + system) for every frostgate and postgres process, summed by name (the command
name and its first argument: `frostgate:host`, `frostgate-encla:serve`, `postgres:`). A
`frostgate bench` process is split by thread instead (`bench/tokio-rt-worker`,
`bench/request-log-wri`, `bench/request-log-gro`). Ends after SECONDS (default 120) or when killed.
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


def main() -> None:
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
