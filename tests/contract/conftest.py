"""The implementations the contract suites run against: the presence stores (memory, and JetStream KV on a
real nats-server) and the buses (memory, and the gateway's NatsBus on a real nats-server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gateway.io.bus import Bus, NatsBus
from gateway.io.memory_bus import MemoryBus, MemoryNats
from gateway.io.presence_store import (
    WINDOW,
    BucketOptions,
    KvPresenceStore,
    MemoryPresenceStore,
    PresenceStore,
    open_layout,
)
from shared.nats_connection import NatsOptions
from shared.presence_keys import Layout

SHARDS = 4


@pytest.fixture(params=["memory", "kv", "kv-read-by-bus"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[PresenceStore]:
    """``kv`` reads with nats-py's ordered consumers (as shared.presence does for services);
    ``kv-read-by-bus`` reads through the gateway's bus (as a node does)."""
    if request.param == "memory":
        yield MemoryPresenceStore(Layout(shards=SHARDS))
        return
    server: Any = request.getfixturevalue("nats_server")
    bus = await NatsBus.connect(NatsOptions(servers=[server.url], name="contract"))
    js = bus.nc.jetstream(publish_async_max_pending=WINDOW)
    layout, _ = await open_layout(js, BucketOptions(storage="memory", shards=SHARDS))
    yield KvPresenceStore(js, layout, bus if request.param == "kv-read-by-bus" else None)
    await bus.close()


# Opens one more client of the same NATS (real or in memory).
Connect = Callable[[], Awaitable[Bus]]


@pytest.fixture(params=["memory", "nats"])
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    """``await connect()`` is one more client on a shared NATS: :class:`MemoryBus` clients of one
    :class:`MemoryNats`, or :class:`NatsBus` connections to one nats-server."""
    opened: list[NatsBus | MemoryBus] = []
    if request.param == "memory":
        server = MemoryNats()

        async def open_memory() -> Bus:
            opened.append(bus := server.connect())
            return bus

        yield open_memory
    else:
        url = request.getfixturevalue("nats_server").url

        async def open_nats() -> Bus:
            opened.append(bus := await NatsBus.connect(NatsOptions(servers=[url], name="contract")))
            return bus

        yield open_nats
    for bus in opened:
        await bus.close()
