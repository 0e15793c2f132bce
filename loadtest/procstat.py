"""CPU seconds and resident memory of a process, from /proc (Linux)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def raise_fd_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit (thousands of sockets); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine_cores() -> set[int]:
    """Every CPU this machine's cgroup lets us use, whatever this process is pinned to right now."""
    try:
        listed = Path("/sys/fs/cgroup/cpuset.cpus.effective").read_text().strip()
    except OSError:
        listed = ""
    if not listed:
        return set(range(os.cpu_count() or 1))
    cores: set[int] = set()
    for part in listed.split(","):
        first, _, last = part.partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return cores


def pin_to(cores: set[int]) -> bool:
    """Pin this process to ``cores`` if the machine has them; False (and unpinned) on smaller machines."""
    if cores <= machine_cores():
        os.sched_setaffinity(0, cores)
        return True
    return False
