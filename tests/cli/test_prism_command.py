"""The ``prism`` command as a user runs it: ``prism dev`` and ``prism gateway`` as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from loadtest.targets.base import free_port
from shared.backend import PrismBackend
from shared.client import PrismClient
from shared.nats_connection import CONNECT_BACKOFF
from tests.helpers import (
    alive,
    descendants,
    dev_env,
    eventually,
    free_port_pair,
    kill_process_tree,
    read_until,
)

pytestmark = pytest.mark.cli


def process_names(pids: set[int]) -> set[str]:
    return {Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids if alive(pid)}


@contextlib.asynccontextmanager
async def prism(*args: str, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``prism ARGS`` (as ``python -m shared.cli``) with output piped; killed on exit if still running,
    along with anything it started that is still alive."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        yield proc
    finally:
        await kill_process_tree(proc)


async def read_banner(proc: asyncio.subprocess.Process) -> str:
    """``prism dev``'s output up to and including the line that lists the URLs to try."""
    assert proc.stdout is not None
    banner = await read_until(proc.stdout, "Press Ctrl-C")
    return banner + await read_until(proc.stdout, "try")


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


async def test_prism_dev_serves_two_nodes_and_ctrl_c_leaves_no_process_behind() -> None:
    port = free_port_pair()
    async with prism(
        "dev", "--nodes", "2", "--port", str(port), env=dev_env(PRISM_DRAIN_SECONDS="0.5")
    ) as proc:
        banner = await read_banner(proc)
        assert f"ws://localhost:{port}/ws" in banner
        assert f"ws://localhost:{port + 1}/ws" in banner
        nats_url = next(w for w in banner.split() if w.startswith("nats://"))
        children = descendants(proc.pid)
        assert len(children) >= 3  # nats-server and two nodes
        for p in (port, port + 1):
            for path in ("/healthz", "/readyz", "/metrics"):
                assert await asyncio.to_thread(http_status, f"http://127.0.0.1:{p}{path}") == 200
        nc = await nats.connect(nats_url)
        a = await PrismClient.connect(f"ws://127.0.0.1:{port}/ws", user="alice")
        b = await PrismClient.connect(f"ws://127.0.0.1:{port + 1}/ws", user="bob")
        await a.join("lobby")
        await b.join("lobby")
        receipts = await PrismBackend(nc).deliver("room.lobby", "hello from the backend")
        assert sorted(r["node"] for r in receipts) == ["node1", "node2"]
        assert await a.receive(5) == await b.receive(5) == "hello from the backend"
        await nc.close()
        proc.send_signal(signal.SIGINT)
        assert await a.wait_closed() == 1012
        await b.wait_closed()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        await eventually(lambda: not any(alive(pid) for pid in children), what="every child to exit")


async def test_prism_gateway_runs_one_node_and_drains_on_sigterm(nats_server: Any) -> None:
    port = free_port()
    env = {**os.environ, "PRISM_NATS_URL": nats_server.url, "PRISM_DRAIN_SECONDS": "0"}
    env["PRISM_NATS_ULR"] = "nats://elsewhere:4222"  # a misspelling, named with the nearest setting
    args = ("gateway", "--port", str(port), "--host", "127.0.0.1", "--node-id", "solo")
    async with prism(*args, env=env) as proc:
        assert proc.stdout is not None
        started = await read_until(proc.stdout, "prism gateway solo listening on")  # ready, not the log line
        assert started.count("PRISM_NATS_ULR") == 1
        assert (
            "WARNING prism.config: PRISM_NATS_ULR is not a Prism setting and is ignored; "
            "did you mean PRISM_NATS_URL?\n"
        ) in started
        client = await PrismClient.connect(f"ws://127.0.0.1:{port}/ws")
        assert client.node == "solo"
        proc.send_signal(signal.SIGTERM)
        assert await client.wait_closed() == 1012
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        stopping = (await proc.stdout.read()).decode()
        assert "node solo stopped" in stopping
        assert "WARNING" not in stopping  # a drain is no "NATS disconnected"


async def test_bad_configuration_is_a_clear_error() -> None:
    proc = await asyncio.create_subprocess_exec(  # python -m gateway: the same as prism gateway
        sys.executable,
        "-m",
        "gateway",
        "--port",
        "not-a-number",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"--port='not-a-number'" in out


async def test_prism_dev_uses_an_external_nats_when_prism_nats_url_is_set(nats_server: Any) -> None:
    port = free_port()
    env = {**os.environ, "PRISM_NATS_URL": nats_server.url, "PRISM_DRAIN_SECONDS": "0"}
    env["PRISM_ROOM_PRESENSE"] = "lobby"  # a misspelling: prism dev names it, and its children do not again
    async with prism("dev", "--nodes", "1", "--port", str(port), env=env) as proc:
        banner = await read_banner(proc)
        assert nats_server.url in banner
        assert banner.count("PRISM_ROOM_PRESENSE") == 1
        assert (
            "PRISM_ROOM_PRESENSE is not a Prism setting and is ignored; did you mean PRISM_ROOM_PRESENCE?"
        ) in banner
        assert "nats-server" not in process_names(descendants(proc.pid))
        nc = await nats.connect(nats_server.url)
        client = await PrismClient.connect(f"ws://127.0.0.1:{port}/ws", user="ext")
        await PrismBackend(nc).to_user("ext", "via your NATS")
        assert await client.receive(5) == "via your NATS"
        await nc.close()
        proc.send_signal(signal.SIGTERM)
        await client.wait_closed()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert proc.stdout is not None
        stopping = (await proc.stdout.read()).decode()
        assert "prism dev stopped" in stopping
        assert "NATS disconnected" not in stopping  # every stop is a deliberate drain


async def test_gateway_waiting_for_nats_says_so_and_stops_on_sigterm() -> None:
    unreachable = f"nats://127.0.0.1:{free_port()}"
    env = {**os.environ, "PRISM_NATS_URL": unreachable}
    async with prism("gateway", "--port", str(free_port()), "--host", "127.0.0.1", env=env) as proc:
        assert proc.stdout is not None
        line = await read_until(proc.stdout, "cannot reach NATS")
        assert unreachable in line
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0


async def test_prism_dev_restarts_a_node_that_dies_and_serves_the_console() -> None:
    port = free_port()
    env = {**os.environ, "PRISM_DRAIN_SECONDS": "0"}
    for name in ("PRISM_NATS_URL", "PRISM_CONSOLE", "PRISM_CONSOLE_NODES", "PRISM_ROOM_PRESENCE"):
        env.pop(name, None)
    async with prism("dev", "--nodes", "1", "--port", str(port), env=env) as proc:
        assert proc.stdout is not None
        banner = await read_banner(proc)
        assert f"console   http://localhost:{port}/" in banner
        node_line = next(line for line in banner.splitlines() if line.strip().startswith("node1"))
        old_pid = int(node_line.split()[-1])
        children = descendants(proc.pid)
        assert old_pid in children
        config = await asyncio.to_thread(http_body, f"http://127.0.0.1:{port}/console/config.json")
        assert config == f'{{"nodes":["ws://localhost:{port}/ws"],"notify":true}}'.encode()

        os.kill(old_pid, signal.SIGKILL)
        restarted = await read_until(proc.stdout, "node1     restarted")
        new_pid = int(restarted.strip().split()[-1])
        assert "exit code -9" in restarted
        await read_until(proc.stdout, "ready again")
        assert new_pid != old_pid
        assert alive(new_pid)
        assert await asyncio.to_thread(http_status, f"http://127.0.0.1:{port}/readyz") == 200

        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        everything = children | descendants(proc.pid) | {new_pid}
        await eventually(lambda: not any(alive(pid) for pid in everything), what="every child to exit")


def http_body(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


async def run_to_exit(*args: str, env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """Run ``python ARGS`` to its exit; its return code and output (stdout and stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        await kill_process_tree(proc)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def unreachable_nats_env(**settings: str) -> dict[str, str]:
    """This environment with ``PRISM_NATS_URL`` naming a port nothing listens on."""
    return {**os.environ, "PRISM_NATS_URL": f"nats://127.0.0.1:{free_port()}", **settings}


@contextlib.contextmanager
def taken_port(port: int = 0) -> Iterator[int]:
    """A port (``port``, or any free one) that this test holds, listening and never answering, for as
    long as the block runs."""
    with socket.create_server(("127.0.0.1", port)) as sock:
        yield sock.getsockname()[1]


async def test_prism_gateway_on_a_taken_port_says_so_in_one_line_before_it_waits_for_nats() -> None:
    with taken_port() as port:
        # NATS is unreachable: a node that checked its port only after connecting would wait forever.
        args = ("-m", "shared.cli", "gateway", "--host", "127.0.0.1", "--port", str(port))
        code, out = await run_to_exit(*args, env=unreachable_nats_env(), timeout=20)
    assert code == 2
    assert out == (
        f"prism: configuration error: cannot listen on 127.0.0.1:{port}: the port is in use by another "
        "process (choose another with --port or PRISM_PORT)\n"
    )


async def test_prism_dev_on_a_taken_port_says_so_in_one_line_and_starts_nothing() -> None:
    port = free_port_pair()
    with taken_port(port + 1) as taken:  # the second node's: every port is checked before anything starts
        args = ("-m", "shared.cli", "dev", "--nodes", "2", "--port", str(port))
        code, out = await run_to_exit(*args, env=dev_env(), timeout=20)
    assert code == 2
    assert out == (
        f"prism: configuration error: cannot listen on 127.0.0.1:{taken}: the port is in use by another "
        "process (choose another with --port)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("gateway", "--port", "99999"), "port must be from 1 to 65535 (0: any free port), got 99999"),
        (("gateway", "--port", "-1"), "port must be from 1 to 65535 (0: any free port), got -1"),
        (("gateway", "--port", "8o80"), "--port='8o80': not a whole number"),
        (("dev", "--port", "99999"), "--port must be a port number from 1 to 65535, got 99999"),
        (("dev", "--port", "0"), "--port must be a port number from 1 to 65535, got 0"),
        (("dev", "--nodes", "0"), "--nodes must be at least 1, got 0"),
        (("dev", "--nodes", "-2"), "--nodes must be at least 1, got -2"),
        (
            ("dev", "--port", "65535", "--nodes", "2"),
            "--nodes 2 from --port 65535 would need ports above 65535",
        ),
    ],
)
async def test_impossible_ports_and_node_counts_are_refused_in_one_line(
    args: tuple[str, ...], message: str
) -> None:
    code, out = await run_to_exit("-m", "shared.cli", *args, env=unreachable_nats_env(), timeout=20)
    assert (code, out) == (2, f"prism: configuration error: {message}\n")


async def test_prism_dev_waits_for_its_own_node_not_another_process_on_the_port() -> None:
    """A process that holds the port and answers /readyz 200 (another prism dev's node) is not the node
    prism dev started: its Prism-Pid says so."""
    from shared.cli.dev import StartFailed, _wait_ready

    asked = 0

    async def foreign_readyz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal asked
        await reader.readuntil(b"\r\n\r\n")
        asked += 1
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n"
            b"Prism-Node: node1\r\nPrism-Pid: %d\r\n\r\nready\n" % os.getpid()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(foreign_readyz, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/readyz"
    child = await asyncio.create_subprocess_exec(  # a "node" that never listens: it waits for its stdin
        sys.executable, "-c", "import sys; sys.stdin.read()", stdin=asyncio.subprocess.PIPE
    )
    try:
        deadline = asyncio.get_running_loop().time() + 60
        waiting = asyncio.ensure_future(_wait_ready("node1", url, child, deadline))
        await eventually(lambda: asked >= 3, what="prism dev to ask the foreign /readyz a few times")
        assert not waiting.done()
        assert child.stdin is not None
        child.stdin.close()
        with pytest.raises(StartFailed, match="node1 exited with code 0 before it was ready"):
            await asyncio.wait_for(waiting, 30)
    finally:
        await kill_process_tree(child)
        server.close()
        await server.wait_closed()


async def test_prism_dev_names_an_unreachable_nats_once_per_retry_then_gives_up_in_one_line() -> None:
    env = unreachable_nats_env()
    url = env["PRISM_NATS_URL"]
    port = str(free_port_pair())
    args = ("-m", "shared.cli", "dev", "--nodes", "2", "--port", port, "--ready-timeout", "4")
    code, out = await run_to_exit(*args, env=env, timeout=30)
    assert code == 1
    lines = out.splitlines()
    assert lines[-1].startswith(f"prism dev: NATS at {url} unreachable (")
    assert lines[-1].endswith("gave up after 4s: check PRISM_NATS_URL")
    retries = lines[:-1]
    assert len(retries) >= 2, out
    for line in retries:  # from prism dev alone: no node or notification service started to repeat them
        assert f"WARNING prism.bus: cannot reach NATS at {url} (" in line, out
    waits = [float(line.rsplit("retrying in ", 1)[1].removesuffix("s")) for line in retries]
    assert all(w <= CONNECT_BACKOFF.ceiling(n) + 0.05 for n, w in enumerate(waits)), out  # jittered


async def test_python_m_shared_client_has_a_help_and_refuses_a_bad_url_in_one_line() -> None:
    code, out = await run_to_exit("-m", "shared.client", "--help", env=dict(os.environ))
    assert code == 0
    assert out.startswith("usage: python -m shared.client [-h] [--user USER] [--token TOKEN]")
    assert "ws://localhost:8080/ws?user=alice" in out
    code, out = await run_to_exit("-m", "shared.client", "localhost:8080", env=dict(os.environ))
    assert code == 2
    assert out.splitlines()[-1] == (
        "python -m shared.client: error: URL must start with ws:// or wss://, got 'localhost:8080'"
    )
