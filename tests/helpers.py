"""Test helpers: waiting for conditions with deadlines (never sleeping to synchronise), free ports."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from prometheus_client.parser import text_string_to_metric_families

from loadtest.targets.base import free_port

DEFAULT_TIMEOUT = 10.0


async def eventually(
    check: Callable[[], Awaitable[Any]] | Callable[[], Any],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "condition",
) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    last: object = None
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r:.300})")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def free_port_pair() -> int:
    """A port p such that p and p+1 were both free a moment ago (for ``prism dev --nodes 2``)."""
    for _ in range(50):
        first = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", first + 1))
            except OSError:
                continue
        return first
    raise RuntimeError("no two consecutive free ports found")


async def nobody_listens(nc: NatsClient, subject: str) -> bool:
    """True once a request on ``subject`` gets "no responders". A timeout means a request raced an
    unsubscribe (core NATS drops it): the caller should ask again."""
    try:
        await nc.request(subject, b"probe", timeout=1)
    except nats.errors.NoRespondersError:
        return True
    except nats.errors.TimeoutError:
        return False
    return False


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc), so a test can stop or check each one by PID."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def kill_process_tree(proc: asyncio.subprocess.Process, known: Iterable[int] = ()) -> None:
    """Kill ``proc`` if it still runs, and by PID every descendant it has now or ``known`` ones."""
    pids = set(known) | descendants(proc.pid)
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


async def read_until(stream: asyncio.StreamReader, marker: str, timeout: float = 30) -> str:
    """A child process's output up to and including the first line containing ``marker``."""
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"output ended before {marker!r}: {''.join(seen)}")
            seen.append(line)
            if marker in line:
                return "".join(seen)


def dev_env(**settings: str) -> dict[str, str]:
    """The environment for a ``prism dev`` under test: this one's, plus ``settings``, and never an outside
    ``PRISM_NATS_URL`` (``prism dev`` must start its own NATS)."""
    env = {**os.environ, **settings}
    env.pop("PRISM_NATS_URL", None)
    return env


async def spawn_prism_dev(nodes: int, port: int) -> asyncio.subprocess.Process:
    """``prism dev --nodes NODES --port PORT`` with its own NATS and no drain delay, output on stdout; the
    caller stops it (and what it started) by PID."""
    env = dev_env(PRISM_DRAIN_SECONDS="0")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "dev", "--nodes", str(nodes), "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip


Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Series:
    """Every sample served at ``url`` (Prometheus text format), by name and labels. Blocking."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
