"""`--metrics-port` as a user meets it: `prism gateway` on a port taken by someone else, and `prism dev`."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import urllib.request
from typing import Any

import pytest

from loadtest.targets.base import free_port
from tests.helpers import free_port_pair, kill_process_tree, read_until

pytestmark = pytest.mark.cli


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


async def test_a_busy_metrics_port_is_one_line_and_a_nonzero_exit(nats_server: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", "gateway",
            "--host", "127.0.0.1", "--port", "0", "--metrics-port", str(busy),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PRISM_NATS_URL": nats_server.url},
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 2
    assert out == b""
    lines = err.decode().splitlines()
    assert lines[-1] == (
        f"prism: configuration error: cannot listen on 127.0.0.1:{busy}: the port is in use by another "
        "process (choose another with --metrics-port or PRISM_METRICS_PORT)"
    )
    assert "Traceback" not in err.decode()
    assert all(" INFO " in line for line in lines[:-1]), lines  # nothing else went wrong


async def test_prism_dev_keeps_node_metrics_on_the_node_port_when_prism_metrics_port_is_set(
    nats_server: Any,
) -> None:
    """In ``prism dev`` PRISM_METRICS_PORT is the notification service's; its nodes must not all try it."""
    port = free_port_pair()
    notify_port = next(p for p in iter(free_port, None) if p not in (port, port + 1))
    env = {
        **os.environ,
        "PRISM_NATS_URL": nats_server.url,
        "PRISM_DRAIN_SECONDS": "0",
        "PRISM_METRICS_PORT": str(notify_port),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "dev", "--nodes", "2", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        await read_until(proc.stdout, "Press Ctrl-C")
        banner = await read_until(proc.stdout, "  notify  ")
        assert f"http://localhost:{notify_port}/metrics" in banner
        for url in (f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{port + 1}/metrics"):
            assert await asyncio.to_thread(http_status, url) == 200
    finally:
        await kill_process_tree(proc)
