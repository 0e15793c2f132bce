"""A closed connection is freed by reference counting, not left for a full garbage collection.

Cycles through every connection (websockets' server protocol had them) left 1,000 closing connections to
a full collection that took 77 ms and stopped the node; the connection layer (gateway/io/websocket.py)
keeps none. These run with the cyclic collector off, so only reference counting can free them.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize("ending", ["close frame", "client vanishes", "server closes"])
async def test_a_closed_connection_is_freed_without_the_cycle_collector(
    make_node: NodeFactory, no_cycle_collector: None, ending: str
) -> None:
    node = await make_node()
    refs: list[weakref.ref[Any]] = []
    for _ in range(3):
        client = await connect(ws_url(node, user="gc"))
        welcome = orjson.loads(await client.recv())
        local = node.hub.get(welcome["conn"])
        assert local is not None
        refs.append(weakref.ref(local.ws))
        if ending == "close frame":
            await client.close()
        elif ending == "client vanishes":
            client.transport.abort()
        else:
            assert node._sessions is not None
            node._sessions.close(local, 4000, "bye")
            await client.wait_closed()
        del local
    await eventually(lambda: not node.hub.conns, what="the node forgot its connections")
    await eventually(lambda: all(ref() is None for ref in refs), what="closed connections freed")
