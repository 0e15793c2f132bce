"""Recovery under faults, with real processes: a rolling restart of 3 gateway nodes, then a SIGKILL of
one, while 300 reconnecting Python clients are in recoverable rooms and user streams and a backend
publishes 500 messages per second to them. Every client must end with exactly what was published to its
room and its user after it joined: nothing lost, nothing twice, in order, and every resumption must say
``recovered``."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from typing import Any

import nats
import pytest

from shared.backoff import Backoff
from shared.client import ConnState, PrismClient
from shared.positions import Recovery
from tests.cluster.conftest import GatewayFactory, GatewayProcess
from tests.helpers import eventually

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
    """JetStream publishes at ``RATE`` per second, round-robin over the rooms and users, up to
    ``IN_FLIGHT`` awaiting their acknowledgement (one connection keeps them in order). Every one must be
    acknowledged, that is stored: ``sent`` is then exactly what the clients must get."""

    IN_FLIGHT = 64

    def __init__(self, nc: Any) -> None:
        self.js = nc.jetstream()
        self.sent: dict[str, int] = defaultdict(int)
        self.running = True
        self.rate = 0.0
        self._acks: set[asyncio.Future[Any]] = set()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        channels = [f"room.room{i % ROOMS}" if i % 2 == 0 else f"user.user{i % USERS}" for i in range(600)]
        targets = itertools.cycle(channels)
        started = loop.time()
        count = 0
        while self.running:
            if len(self._acks) >= self.IN_FLIGHT:
                await asyncio.wait(self._acks, return_when=asyncio.FIRST_COMPLETED)
                self._collect()
            channel = next(targets)
            self.sent[channel] += 1
            payload = f"{channel}:{self.sent[channel]}".encode()
            self._acks.add(asyncio.ensure_future(self.js.publish(channel, payload)))
            count += 1
            ahead = started + count / RATE - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing the load, not synchronising the test
        self.rate = count / (loop.time() - started)

    def _collect(self) -> None:
        for ack in [a for a in self._acks if a.done()]:
            self._acks.discard(ack)
            ack.result()  # a refused publish fails the test here

    async def stop(self) -> None:
        self.running = False
        await self.task
        if self._acks:
            await asyncio.wait(self._acks)
        self._collect()


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

    nc = await nats.connect(nats_server.url)
    publisher = Publisher(nc)
    started = time.monotonic()

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

    await publisher.stop()
    sent = dict(publisher.sent)

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
    for recorder in recorders:
        await recorder.client.close()
    await nc.close()
