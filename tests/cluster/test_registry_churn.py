"""The registry is exact under churn: real clients connect, join, leave and close on two nodes while
repairs run among them; once every change is acknowledged, the buckets hold exactly the open connections
and their rooms. And a node that sees no failure never repairs."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import nats
import pytest

from shared.client import PrismClient
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.presence_support import expected_keys, registry

pytestmark = pytest.mark.cluster

ROOMS = ("lobby", "vip", "r1", "r2", "r3")


async def test_repairs_racing_real_sessions_leave_the_registry_exact(
    nats_server: Any, make_node: NodeFactory
) -> None:
    nodes = [await make_node(), await make_node()]
    rng = random.Random(7)
    kept: list[PrismClient] = []

    async def session(i: int) -> None:
        for _ in range(3):
            client = await PrismClient.connect(ws_url(rng.choice(nodes)), user=f"u{i % 9}" if i % 4 else None)
            for _ in range(rng.randrange(1, 5)):
                room = rng.choice(ROOMS)
                if room in client.rooms:
                    await client.leave(room)
                else:
                    await client.join(room)
            if rng.random() < 0.4:
                kept.append(client)
                return
            await client.close()

    async def repairs() -> int:
        done = 0
        while not churn.done():
            await asyncio.gather(*(node.repair_presence() for node in nodes))
            done += 1
        return done

    churn = asyncio.ensure_future(asyncio.gather(*(session(i) for i in range(30))))
    repaired = await repairs()
    await churn
    assert repaired >= 3  # the repairs really ran among the sessions
    nc = await nats.connect(nats_server.url)

    async def exact() -> bool:
        return set(await registry(nc)) == expected_keys((c.conn_id, c.user, c.rooms) for c in kept)

    # Closes are acknowledged to nobody (the client is gone): wait for the last to be written.
    await eventually(exact, what="the registry to hold exactly the open connections")
    assert kept
    for client in kept:
        await client.close()
    await nc.close()


async def test_joins_and_leaves_schedule_no_repair(make_node: NodeFactory) -> None:
    node = await make_node()
    clients = [await PrismClient.connect(ws_url(node), user=f"u{i}") for i in range(10)]
    for _ in range(5):
        for client in clients:
            await client.join("lobby")
            await client.leave("lobby")
    for client in clients:
        await client.close()
    assert node.writer is not None
    await node.writer.flush()
    assert node.writer.repairs == 0
