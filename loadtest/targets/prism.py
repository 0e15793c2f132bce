"""Prism as a target: one gateway process pinned to the server core, NATS beside the load generator."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from pathlib import Path

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.embedded_nats import NatsServer
from loadtest import server_latency
from loadtest.procstat import machine_cores
from loadtest.rawnats import RawPublisher
from loadtest.targets.base import (
    ConnSend,
    Publisher,
    ServerProcess,
    Target,
    free_port,
    python,
    wait_for_ready,
)
from shared.headers import SENT_AT
from shared.nats_connection import flush_all


class NatsPublisher:
    """Publishes as a backend would: plain NATS publishes on the delivery subjects."""

    def __init__(self, raw: RawPublisher) -> None:
        self.raw = raw

    async def _publish(self, subject: str, data: bytes) -> None:
        await self.raw.publish(subject, data)

    async def room(self, room: str, data: bytes) -> None:
        await self._publish(f"room.{room}", data)

    async def conn(self, conn_id: str, data: bytes) -> None:
        await self._publish(f"conn.{conn_id}", data)

    def conn_sender(self, conn_ids: list[str], size: int) -> ConnSend:
        heads = self.raw.heads([f"conn.{conn_id}" for conn_id in conn_ids], size)
        publish_head = self.raw.publish_head

        def send(index: int, data: bytes) -> Awaitable[None]:
            return publish_head(heads[index], data)

        return send

    async def conn_stamped(self, conn_id: str, data: bytes) -> None:
        """:meth:`conn` with ``Prism-Sent-At``: the gateway times it into its delivery-latency histogram."""
        await self.raw.publish_with_headers(f"conn.{conn_id}", {SENT_AT: f"{time.time():.6f}"}, data)

    async def user(self, user: str, data: bytes) -> None:
        await self._publish(f"user.{user}", data)

    async def flush(self) -> None:
        await self.raw.flush()

    async def close(self) -> None:
        await self.raw.close()


def gateway_command(source: Path | None) -> list[str]:
    """What follows ``python -m`` to run a node of the checkout ``source`` (None: this one), from its
    directory: ``gateway`` is ``prism gateway`` since the CLI moved to shared/cli/; before that it was the
    whole ``prism`` command, which needs the subcommand named."""
    if source is None or (source / "shared" / "cli").is_dir():
        return ["gateway"]
    return ["gateway", "gateway"]


class PrismTarget(Target):
    """``source``: a checkout of another version of Prism to run instead of this one (``python -m gateway``
    from its directory, with this environment's packages), reported as ``prism-before``."""

    name = "prism"

    def __init__(
        self,
        core: int | None = 0,
        nats_core: int | None = 1,
        env: dict[str, str] | None = None,
        source: Path | None = None,
    ):
        self.source = source
        if source is not None:
            self.name = "prism-before"
        self.port = free_port()
        self.server_core = core
        self.nats_core = nats_core
        self.extra_env = env or {}
        self.nats: NatsServer | None = None
        self.gateway: ServerProcess | None = None
        self._clients: list[NatsClient] = []

    async def start(self, workdir: Path) -> None:
        # NATS shares the load generator's core, so the gateway has its core to itself.
        cores = {self.nats_core} if self.nats_core in machine_cores() else None
        self.nats = NatsServer.start(
            workdir / "nats", log_file=workdir / "nats.log", name="bench", cores=cores
        )
        env = {
            "PRISM_NATS_URL": self.nats.url,
            "PRISM_LOG_LEVEL": "warning",
            "PRISM_PRESENCE_STORAGE": "memory",
            "PRISM_DRAIN_SECONDS": "0",
            **self.extra_env,
        }
        args = [
            python(),
            "-m",
            *gateway_command(self.source),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--node-id",
            "bench",
        ]
        self.gateway = ServerProcess(args, self.server_core, env, cwd=self.source)
        await self.gateway.start(workdir / "gateway.log")
        await wait_for_ready(self.port, self.gateway)
        self.server_pid = self.gateway.pid

    async def stop(self) -> None:
        for nc in self._clients:
            if not nc.is_closed:
                await nc.close()
        if self.gateway is not None:
            await self.gateway.stop()
        if self.nats is not None:
            self.nats.stop()

    def url(self, user: str | None = None) -> str:
        return f"ws://127.0.0.1:{self.port}/ws" + (f"?user={user}" if user else "")

    @property
    def helper_pids(self) -> list[int]:
        return [self.nats.pid] if self.nats is not None else []

    async def latency_buckets(self, scenario: str) -> dict[float, float] | None:
        return await server_latency.scrape(f"http://127.0.0.1:{self.port}/metrics", scenario)

    async def nats_client(self) -> NatsClient:
        assert self.nats is not None
        nc = await nats.connect(self.nats.url, pending_size=64 * 1024 * 1024)
        self._clients.append(nc)
        return nc

    async def publisher(self) -> Publisher:
        assert self.nats is not None
        return NatsPublisher(await RawPublisher.connect(self.nats.url))

    async def start_echo(self) -> None:
        nc = await self.nats_client()

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await nc.subscribe("client.event.bench.echo", queue="bench-echo", cb=echo)
        await flush_all(nc)
