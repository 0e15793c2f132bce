"""The hostile-client suite's witnesses: a healthy client that must keep getting its messages on time, and
the test process's memory (the nodes run in it), both checked around every attack."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from websockets.asyncio.client import ClientConnection, connect

from gateway.node import Node
from shared.nats_connection import flush_all
from tests.conftest import ws_url
from tests.helpers import eventually

# Small limits so that every attack meets them quickly. sweep_interval 0: the node checks for dead nodes
# once at start instead of in a loop (nothing here needs the loop, and stopping is quicker without it).
HOSTILE_LIMITS: dict[str, Any] = {
    "max_message_bytes": 16384,
    "max_outbound_bytes": 65536,
    "handshake_timeout": 0.5,
    "close_timeout": 0.5,
    "sweep_interval": 0.0,
}

LATENCY_BOUND = 1.0  # seconds: the healthy client's worst receipt latency while an attack runs
RSS_GROWTH_BOUND_MB = 150.0  # generous: the attacks are bounded, so memory must be too


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def metric(node: Node, name: str, **labels: str) -> float:
    return node.registry.get_sample_value(name, {"node": node.node_id, **labels}) or 0.0


def rejections(node: Node, reason: str) -> float:
    return metric(node, "prism_rejections_total", reason=reason)


class Healthy:
    """A well-behaved client that a backend publishes to every ``period`` seconds (on ``conn.<id>``).
    Every message carries its sequence number and send time, so :meth:`check` can tell that all arrived,
    in order, and none late."""

    MAX_MESSAGES = 20_000  # the publisher is bounded even if a test forgets to stop it

    def __init__(
        self, ws: ClientConnection, conn_id: str, nc: NatsClient, period: float, chatty: bool
    ) -> None:
        self.ws = ws
        self.conn_id = conn_id
        self.nc = nc
        self.period = period
        self.sent = 0
        self.received = 0
        self.worst = 0.0
        self.problems: list[str] = []
        self._stop = False
        self._reader = asyncio.ensure_future(self._read())
        self._writer = asyncio.ensure_future(self._publish())
        self._chatter = asyncio.ensure_future(self._chat()) if chatty else None

    @classmethod
    async def start(
        cls, node: Node, nc: NatsClient, period: float = 0.005, chatty: bool = False, token: str | None = None
    ) -> Healthy:
        """``chatty``: also send a message every 0.1 s (so that an idle timeout does not apply);
        ``token``: connect with ``Authorization: Bearer <token>`` (authentication on)."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        url = ws_url(node) if token else ws_url(node, user="healthy")
        ws = await connect(url, compression=None, open_timeout=5, additional_headers=headers)
        welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        return cls(ws, welcome["conn"], nc, period, chatty)

    async def _publish(self) -> None:
        subject = f"conn.{self.conn_id}"
        for seq in range(self.MAX_MESSAGES):
            if self._stop:
                return
            await self.nc.publish(subject, f"{seq} {time.monotonic()!r}".encode())
            self.sent = seq + 1
            await asyncio.sleep(self.period)  # pacing the load, not waiting for anything

    async def _chat(self) -> None:
        for _ in range(self.MAX_MESSAGES):
            if self._stop:
                return
            await self.ws.send('{"prism":"leave","room":"nowhere"}')
            await asyncio.sleep(0.1)  # pacing

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for message in self.ws:
                if str(message).startswith('{"prism":'):  # the answers to its chatter
                    continue
                seq, stamp = str(message).split()
                if int(seq) != self.received:
                    self.problems.append(f"got message {seq}, expected {self.received}")
                self.received = int(seq) + 1
                self.worst = max(self.worst, time.monotonic() - float(stamp))

    async def check(self) -> None:
        """Stop publishing; every message must arrive, in order, each within :data:`LATENCY_BOUND`."""
        self._stop = True
        await self._writer
        await flush_all(self.nc)
        await eventually(lambda: self.received >= self.sent, timeout=5, what="the healthy client's messages")
        assert not self.problems, self.problems[:5]
        assert self.sent > 0
        assert self.worst < LATENCY_BOUND, f"healthy client waited {self.worst:.3f}s for a message"
        assert self.ws.close_code is None, f"healthy client was closed with {self.ws.close_code}"

    async def close(self) -> None:
        self._stop = True
        await self.ws.close()
        for task in (self._writer, self._reader, self._chatter):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def witnessed(
    node: Node, nc: NatsClient, chatty: bool = False, token: str | None = None
) -> AsyncIterator[Healthy]:
    """Run an attack next to a healthy client; afterwards check the client and the memory growth."""
    healthy = await Healthy.start(node, nc, chatty=chatty, token=token)
    await eventually(lambda: healthy.received >= 10, what="the healthy client to start receiving")
    baseline = rss_mb()
    try:
        yield healthy
        await healthy.check()
        growth = rss_mb() - baseline
        assert growth < RSS_GROWTH_BOUND_MB, f"RSS grew by {growth:.0f} MB"
    finally:
        await healthy.close()
