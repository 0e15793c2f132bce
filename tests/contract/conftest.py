"""The presence store implementations the contract suites run against: memory, and JetStream KV on a real
nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from gateway.io.presence_store import (
    WINDOW,
    BucketOptions,
    KvPresenceStore,
    MemoryPresenceStore,
    PresenceStore,
    open_layout,
)
from shared.presence_keys import Layout

SHARDS = 4


@pytest.fixture(params=["memory", "kv"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[PresenceStore]:
    if request.param == "memory":
        yield MemoryPresenceStore(Layout(shards=SHARDS))
        return
    server: Any = request.getfixturevalue("nats_server")
    nc = await nats.connect(server.url)
    js = nc.jetstream(publish_async_max_pending=WINDOW)
    layout, _ = await open_layout(js, BucketOptions(storage="memory", shards=SHARDS))
    yield KvPresenceStore(js, layout)
    await nc.close()
