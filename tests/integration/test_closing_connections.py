"""A connection whose client has sent its close frame is gone for backends (docs/protocol.md sections 4
and 8): "no responders" for ``conn.`` and ``control.conn.``, silence from ``control.user.``, no room joined,
though the node still holds its TCP connection and the session has not ended yet."""

from __future__ import annotations

import struct

import nats.errors
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from websockets.frames import Opcode

from gateway.node import Node
from shared.backend import PrismBackend
from tests.conftest import NodeFactory
from tests.security.wire import RawClient, frame

# Long enough that the node keeps the half-closed TCP connection (and the hub its entry) for the whole
# test: websockets drops it only after close_timeout.
CLOSE_TIMEOUT = 30.0


def gone(node: Node) -> float:
    value = node.registry.get_sample_value(
        "prism_deliveries_total", {"node": node.node_id, "target": "conn", "outcome": "gone"}
    )
    return value or 0.0


async def open_raw(node: Node, user: str) -> tuple[RawClient, str]:
    raw = await RawClient.open(node.port)
    welcome = orjson.loads(await raw.welcome(f"/ws?user={user}"))
    return raw, welcome["conn"]


async def test_after_the_close_handshake_conn_and_control_requests_get_no_responders(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(close_timeout=CLOSE_TIMEOUT)
    raw, conn_id = await open_raw(node, "alice")
    try:
        raw.send(frame(Opcode.CLOSE, struct.pack("!H", 1000)))
        assert await raw.close_code() == 1000  # the node has read the close frame and answered it
        assert node.hub.get(conn_id) is not None  # TCP still open: the session has not ended yet

        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request(f"conn.{conn_id}", b"too late", timeout=5)
        assert gone(node) == 1
        for action, body in (("join", b'{"room":"late"}'), ("leave", b'{"room":"late"}'), ("close", b"")):
            with pytest.raises(nats.errors.NoRespondersError):
                await nc.request(f"control.conn.{conn_id}.{action}", body, timeout=5)
        # control.user: nodes without an open connection of the user stay silent.
        assert await PrismBackend(nc).control_user("alice", "join", {"room": "late"}, timeout=0.5) == []
        assert "late" not in node.hub.rooms
        # user.: the node still subscribes (the session has not ended), and counts no open connection.
        receipt = await nc.request("user.alice", b"too late", timeout=5)
        assert orjson.loads(receipt.data) == {"node": node.node_id, "delivered": 0}
    finally:
        await raw.close()


async def test_a_request_right_behind_the_close_frame_is_never_answered_delivered_0(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    """Sent at once after the close frame, a request races it: the node answers by what it has read by
    then, a receipt with delivered 1 (the close frame was not read yet) or "no responders"."""
    node = await make_node(close_timeout=CLOSE_TIMEOUT)
    for i in range(20):
        raw, conn_id = await open_raw(node, f"u{i}")
        try:
            raw.send(frame(Opcode.CLOSE, struct.pack("!H", 1000)))
            await raw.drain()
            try:
                reply = await nc.request(f"conn.{conn_id}", b"racing the close", timeout=5)
            except nats.errors.NoRespondersError:
                pass  # the usual answer on loopback: the close frame arrived first
            else:
                assert orjson.loads(reply.data) == {"node": node.node_id, "delivered": 1}
            assert await raw.close_code() == 1000
        finally:
            await raw.close()


async def test_a_client_that_holds_its_tcp_connection_after_the_close_handshake_is_dropped(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    """docs/protocol.md: a closing connection's TCP connection stays up for at most PRISM_CLOSE_TIMEOUT
    seconds, whoever started the close; then client.disconnect follows."""
    node = await make_node(close_timeout=0.5)
    disconnects = await nc.subscribe("client.disconnect")
    raw, conn_id = await open_raw(node, "holder")
    try:
        raw.send(frame(Opcode.CLOSE, struct.pack("!H", 1000)))
        assert await raw.close_code() == 1000  # answered; the client never closes its side
        event = orjson.loads((await disconnects.next_msg(timeout=5)).data)
        assert (event["conn"], event["code"]) == (conn_id, 1000)
        assert node.hub.get(conn_id) is None
    finally:
        await raw.close()
