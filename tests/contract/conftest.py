"""The presence store implementations the contract suites run against: memory, and JetStream KV on a real
nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.io.bus import NatsBus
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
