"""The machine's scheduling noise floor: how late a 1 ms sleep wakes up on each core, and the time the
hypervisor took from this machine's CPUs (``steal`` in /proc/stat).

    python -m loadtest.noise --seconds 10

A delivery is woken at least three times on its way (the generator's publisher, nats-server, the
gateway, the generator's client), so when a process that only sleeps already wakes more than 5 ms
late for a share of its wake-ups, a p99 under 5 ms measures the machine as much as the code.
``prism loadtest --capacity`` runs this first and records it beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.procstat import machine_cores


def steal_ticks() -> int:
    """Clock ticks stolen from all CPUs so far (the 8th value of /proc/stat's ``cpu`` line)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8])
    except (OSError, IndexError, ValueError):
        return 0


def probe(core: int, seconds: float) -> dict[str, float]:
    """Pinned to ``core``, sleep 1 ms again and again for ``seconds``; how late each wake-up was."""
    os.sched_setaffinity(0, {core})
    late: list[float] = []
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        time.sleep(0.001)
        late.append((time.perf_counter() - now - 0.001) * 1000)
    ms = np.array(late)
    return {
        "core": core,
        "wakeups": len(ms),
        "late_p50_ms": round(float(np.percentile(ms, 50)), 3),
        "late_p99_ms": round(float(np.percentile(ms, 99)), 3),
        "late_p999_ms": round(float(np.percentile(ms, 99.9)), 3),
        "late_max_ms": round(float(ms.max()), 2),
        "share_over_5ms": round(float((ms > 5).mean()), 5),
    }


def measure(seconds: float = 5.0) -> dict[str, Any]:
    """Probe every core at once (one process each) and read the steal over the same time."""
    ticks = os.sysconf("SC_CLK_TCK")
    cores = sorted(machine_cores())
    steal0 = steal_ticks()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "loadtest.noise", "--probe", str(core), "--seconds", str(seconds)],
            stdout=subprocess.PIPE,
        )
        for core in cores
    ]
    per_core = [json.loads(p.communicate(timeout=seconds + 30)[0]) for p in procs]
    stolen = (steal_ticks() - steal0) / ticks
    return {"seconds": seconds, "steal_share": round(stolen / (seconds * len(cores)), 4), "cores": per_core}


def describe(noise: dict[str, Any]) -> str:
    """One line for a report."""
    cores = "; ".join(
        f"core {c['core']}: late p99 {c['late_p99_ms']} ms, p99.9 {c['late_p999_ms']} ms, "
        f"{c['share_over_5ms'] * 100:.2f}% over 5 ms"
        for c in noise["cores"]
    )
    steal = noise["steal_share"] * 100
    return f"a 1 ms sleep for {noise['seconds']:g} s, {cores}; steal {steal:.1f}% of CPU time"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.noise", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--probe", type=int, default=None, help=argparse.SUPPRESS)  # one core, JSON out
    args = parser.parse_args(argv)
    if args.probe is not None:
        print(json.dumps(probe(args.probe, args.seconds)))
        return 0
    print(describe(measure(args.seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
