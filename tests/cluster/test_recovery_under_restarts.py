"""Recovery under faults, with real processes: a rolling restart of 3 gateway nodes, then a SIGKILL of
one, while 300 reconnecting Python clients are in recoverable rooms and user streams and a backend
publishes 500 messages per second to them. Every client must end with exactly what was published to its
room and its user after it joined: nothing lost, nothing twice, in order, and every resumption must say
``recovered``."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import defaultdict
from typing import Any

import pytest

from shared.backoff import Backoff
from shared.client import ConnState, PrismClient
from shared.client.positions import Recovery
from tests.cluster.conftest import GatewayFactory, GatewayProcess
from tests.helpers import eventually, kill_process_tree

pytestmark = pytest.mark.cluster

CLIENTS = 300
USERS = 100  # three connections each
ROOMS = 30  # ten members each
RATE = 500  # messages per second, half to rooms and half to users


class Recorder:
    """One client and everything it received, split by channel (``room.<r>`` / ``user.<u>``)."""

    def __init__(self, client: PrismClient, room: str, user: str, recoveries: list[Recovery]) -> None:
        self.client = client
        self.channels = (f"room.{room}", f"user.{user}")
        self.got: dict[str, list[int]] = defaultdict(list)
        self.recoveries = recoveries
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.client:
            channel, _, number = str(message).rpartition(":")
            self.got[channel].append(int(number))


class Publisher:
    """tests/cluster/steady_publisher.py in a process of its own, stopped with a line on its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.rate = 0.0

    @classmethod
    async def start(cls, nats_url: str) -> Publisher:
        args = [nats_url, str(RATE), str(ROOMS), str(USERS)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.cluster.steady_publisher", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(proc)

    async def stop(self) -> dict[str, int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        out, _ = await asyncio.wait_for(self.proc.communicate(), 30)
        assert self.proc.returncode == 0
        result = json.loads(out)
        self.rate = float(result["rate"])
        sent: dict[str, int] = result["sent"]
        return sent

    async def kill(self) -> None:
        if self.proc.returncode is None:
            await kill_process_tree(self.proc)


async def test_rolling_restart_and_a_killed_node_lose_and_repeat_nothing(
    nats_server: Any, gateway_process: GatewayFactory
) -> None:
    settings = {
        "drain_seconds": 2,
        "presence_storage": "memory",
        "recover_rooms": "*",
        "recover_users": "*",
        "recover_storage": "memory",
        "recover_sync": 2,
    }
    gateways = [await gateway_process(nats_server.url, f"g{i}", **settings) for i in (1, 2, 3)]
    urls = [g.url for g in gateways]
    backoff = Backoff(base=0.05, cap=1.0)

    async def start_client(i: int) -> Recorder:
        ordered = urls[i % 3 :] + urls[: i % 3]  # every client knows every node, starts at its own
        user, room = f"user{i % USERS}", f"room{i % ROOMS}"
        recoveries: list[Recovery] = []
        client = await PrismClient.connect(
            ordered, user=user, reconnect=backoff, recover=True, on_recovery=recoveries.append
        )
        recorder = Recorder(client, room, user, recoveries)
        await client.join(room, recover=True)
        return recorder

    recorders: list[Recorder] = []
    for first in range(0, CLIENTS, 50):
        recorders += await asyncio.gather(*(start_client(i) for i in range(first, first + 50)))

    publisher = await Publisher.start(nats_server.url)
    started = time.monotonic()
    try:
        await _restart_and_kill(gateways, recorders, publisher, started)
    finally:
        await publisher.kill()
    for recorder in recorders:
        await recorder.client.close()


async def _restart_and_kill(
    gateways: list[GatewayProcess], recorders: list[Recorder], publisher: Publisher, started: float
) -> None:
    async def everyone_connected() -> bool:
        return all(r.client.state is ConnState.CONNECTED for r in recorders)

    # A rolling restart: each node in turn drains (clients move with their positions) and comes back.
    for gateway in gateways:
        assert await gateway.terminate() == 0
        await gateway.start()
    await eventually(everyone_connected, timeout=30, what="every client back after the rolling restart")
    restarted = time.monotonic() - started

    # A node dies without a word (the one with the most clients): they come back on the two survivors.
    victim: GatewayProcess = max(gateways, key=lambda g: sum(r.client.node == g.node_id for r in recorders))
    on_victim = [r for r in recorders if r.client.node == victim.node_id]
    assert on_victim, "no client was on the node to kill"
    await victim.kill()
    await eventually(everyone_connected, timeout=30, what="the killed node's clients on the survivors")
    assert all(r.client.node != victim.node_id for r in on_victim)

    sent = await publisher.stop()

    def complete() -> bool:
        return all(len(r.got[ch]) >= sent.get(ch, 0) for r in recorders for ch in r.channels)

    await eventually(complete, timeout=30, what="every client to have every message")
    total = sum(sent.values())
    print(
        f"{total} messages at {publisher.rate:.0f}/s, {time.monotonic() - started:.1f}s; rolling restart "
        f"settled in {restarted:.1f}s; {len(on_victim)} clients of the killed node recovered"
    )
    for recorder in recorders:
        for channel in recorder.channels:
            expected = list(range(1, sent.get(channel, 0) + 1))
            assert recorder.got[channel] == expected, f"{recorder.client.conn_id} {channel}"
        resumed = [r for r in recorder.recoveries if r.recovering]
        assert resumed, "every client resumed at least once"
        assert all(r.recovered for r in resumed), recorder.recoveries
    assert sum(r.client.reconnects for r in recorders) >= CLIENTS
