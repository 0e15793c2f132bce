"""Keepalive pings from the node's one Keepalive timer: a client that answers stays, one that does not is
closed with 1011, and a client's close takes it out of the ring."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.frames import Opcode

from gateway.io.keepalive import Keepalive
from gateway.node import Node
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.security.wire import RawClient, frame

INTERVAL = 0.4


def keepalive_of(node: Node) -> Keepalive:
    assert node._sessions is not None
    keepalive = node._sessions.keepalive
    assert isinstance(keepalive, Keepalive)
    return keepalive


async def test_a_client_that_answers_pings_stays_connected(make_node: NodeFactory) -> None:
    node = await make_node(ping_interval=INTERVAL, ping_timeout=INTERVAL)
    raw = await RawClient.open(node.port)
    await raw.welcome()
    pings = 0
    async with asyncio.timeout(10):
        while pings < 4:  # four intervals, each ping answered as a browser would
            received = await raw.read_frame()
            assert received is not None, "closed by the node"
            assert received.opcode == Opcode.PING, received
            raw.send(frame(Opcode.PONG, received.payload))
            pings += 1
    assert len(node.hub) == 1
    await raw.close()


async def test_a_client_that_never_answers_is_closed_with_1011(make_node: NodeFactory) -> None:
    node = await make_node(ping_interval=INTERVAL, ping_timeout=INTERVAL)
    raw = await RawClient.open(node.port)
    await raw.welcome()
    loop = asyncio.get_running_loop()
    start = loop.time()
    code = None
    reason = b""
    async with asyncio.timeout(10):
        while True:  # read (and ignore) pings until the close frame
            received = await raw.read_frame()
            assert received is not None, "TCP ended without a close frame"
            if received.opcode == Opcode.CLOSE:
                code, reason = received.close_code, received.payload[2:]
                break
    assert code == 1011
    assert reason == b"keepalive ping timeout"
    # First ping after about one interval, closed one timeout later (give or take a tick each).
    assert loop.time() - start < 4 * INTERVAL + 1.0
    await raw.close()


async def test_a_well_behaved_library_client_is_never_closed(make_node: NodeFactory) -> None:
    node = await make_node(ping_interval=INTERVAL, ping_timeout=INTERVAL)
    async with connect(ws_url(node, user="alice"), ping_interval=None) as ws:
        await ws.recv()  # welcome
        keepalive = keepalive_of(node)
        assert len(keepalive) == 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5 * INTERVAL
        while loop.time() < deadline:  # websockets answers each ping while it waits for frames
            try:
                await asyncio.wait_for(ws.recv(), deadline - loop.time())
            except TimeoutError:
                break
        (member,) = node.hub.conns.values()
        assert member.handle.ws.latency > 0  # the node's pings were answered (websockets timed them)...
        assert not member.handle.closing  # ...in time
    await eventually(lambda: len(keepalive) == 0, timeout=5)


async def test_pings_off(make_node: NodeFactory) -> None:
    node = await make_node(ping_interval=0)
    assert node._sessions is not None
    assert not isinstance(node._sessions.keepalive, Keepalive)
