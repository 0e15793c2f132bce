"""A rolling restart of 3 gateway processes under 300 reconnecting Python clients: at the end every
client is connected, every room membership is restored, and the presence bucket matches reality exactly
(no ghost, none missing), and every connection was announced once and disconnected once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import nats
import orjson
import pytest
from nats.aio.msg import Msg

from shared.backend import PrismBackend
from shared.backoff import Backoff
from shared.client import ConnState, PrismClient
from shared.nats_connection import flush_all
from tests.cluster.conftest import GatewayFactory
from tests.helpers import eventually
from tests.presence_support import expected_keys, registry

pytestmark = pytest.mark.cluster

CLIENTS = 300
ROOMS = 10


async def test_rolling_restart_of_three_nodes_with_300_clients(
    nats_server: Any, gateway_process: GatewayFactory
) -> None:
    settings = {"drain_seconds": 2, "presence_storage": "memory"}
    gateways = [await gateway_process(nats_server.url, f"g{i}", **settings) for i in (1, 2, 3)]
    # Every lifecycle event, to check that each connection is announced once and disconnected once.
    nc = await nats.connect(nats_server.url)
    connects: Counter[str] = Counter()
    disconnects: Counter[str] = Counter()
    swept: list[dict[str, Any]] = []

    async def on_event(msg: Msg) -> None:
        event = orjson.loads(msg.data)
        (connects if msg.subject == "client.connect" else disconnects)[event["conn"]] += 1
        if "swept_by" in event:
            swept.append(event)

    await nc.subscribe("client.connect", cb=on_event)
    await nc.subscribe("client.disconnect", cb=on_event)
    await flush_all(nc)
    urls = [g.url for g in gateways]
    backoff = Backoff(base=0.05, cap=1.0)
    clients: list[PrismClient] = []
    for i in range(CLIENTS):
        # Each client knows every node and starts at a different one, as behind a load balancer.
        ordered = urls[i % 3 :] + urls[: i % 3]
        client = await PrismClient.connect(ordered, user=f"user{i % 100}", reconnect=backoff)
        await client.join(f"room{i % ROOMS}")
        if i % 2 == 0:
            await client.join("everyone-even")
        clients.append(client)

    backend = PrismBackend(nc)

    def expected() -> set[str]:
        return expected_keys((c.conn_id, c.user, c.rooms) for c in clients)

    async def bucket() -> set[str]:
        return set(await registry(nc))

    async def settled() -> bool:
        if any(c.state is not ConnState.CONNECTED for c in clients):
            return False
        return await bucket() == expected()

    await eventually(settled, timeout=30, what="every client registered before the restart")
    started = time.monotonic()
    for gateway in gateways:
        assert await gateway.terminate() == 0
        await gateway.start()  # same node id, same port
    await eventually(settled, timeout=60, what="every client back, rooms restored, bucket exact")
    print(f"rolling restart of 3 nodes with {CLIENTS} clients settled in {time.monotonic() - started:.1f}s")

    assert all(c.closed is False for c in clients)
    assert sum(c.reconnects for c in clients) >= CLIENTS  # each was moved at least once
    # Rooms work: one publish per room reaches every member, wherever it now is.
    for room in range(ROOMS):
        receipts = await backend.deliver(f"room.room{room}", f"hello room{room}", timeout=5, window=0.5)
        assert sum(int(r["delivered"]) for r in receipts) == CLIENTS // ROOMS

    async def got(client: PrismClient, text: str) -> None:
        while await client.receive(10) != text:
            pass

    await asyncio.gather(*(got(c, f"hello room{i % ROOMS}") for i, c in enumerate(clients)))
    for client in clients:
        await client.close()

    async def empty() -> bool:
        return not await bucket()

    await eventually(empty, what="the bucket to empty")
    await eventually(
        lambda: set(disconnects) == set(connects), what="a disconnect event for every connection"
    )
    await flush_all(nc)
    print(f"{len(connects)} connections over the restart, {sum(disconnects.values())} disconnect events")
    assert len(connects) >= 2 * CLIENTS
    assert set(connects.values()) == {1}
    assert set(disconnects.values()) == {1}, {c: n for c, n in disconnects.items() if n != 1}
    assert swept == []  # draining nodes sweep nobody, themselves included
    await nc.close()
