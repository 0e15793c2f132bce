"""Gateway nodes as real processes (so they can be SIGKILLed) and NATS clusters, for the fault tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.embedded_nats import NatsCluster
from loadtest.targets.base import free_port
from tests.helpers import alive, kill_process_tree

pytestmark = pytest.mark.cluster


@dataclass
class GatewayProcess:
    """``python -m shared.cli gateway`` as a child process, output to a log file."""

    node_id: str
    port: int
    env: dict[str, str]
    log: Path
    proc: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 30.0) -> GatewayProcess:
        out = self.log.open("ab")
        args = ["-m", "shared.cli", "gateway", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, "--node-id", self.node_id,
            stdout=asyncio.subprocess.PIPE, stderr=out, env=self.env,
        )  # fmt: skip
        out.close()
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    log = self.log.read_text()
                    raise AssertionError(f"gateway {self.node_id} exited while starting: {log}")
                if "listening on" in line:
                    return self

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (drain) and wait for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


GatewayFactory = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
async def gateway_process(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start gateway processes; every one still running at teardown is killed by its PID."""
    started: list[GatewayProcess] = []

    async def start(
        nats_url: str, node_id: str, port: int | None = None, timeout: float = 30.0, **settings: Any
    ) -> GatewayProcess:
        env = {
            **os.environ,
            "PRISM_NATS_URL": nats_url,
            "PRISM_LOG_LEVEL": "info",
            "PRISM_DRAIN_SECONDS": "0",
            "PRISM_PRESENCE_STORAGE": "memory",
        }
        env.update({f"PRISM_{k.upper()}": str(v) for k, v in settings.items()})
        gateway = GatewayProcess(node_id, port or free_port(), env, tmp_path / f"gateway-{node_id}.log")
        started.append(gateway)
        return await gateway.start(timeout)

    yield start
    for gateway in started:
        if gateway.proc is not None and alive(gateway.proc.pid):
            await kill_process_tree(gateway.proc)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nats-servers with JetStream, routed to each other on loopback."""
    cluster = NatsCluster.start(tmp_path, 3, "prism-test", log_dir=tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()
