"""Backend -> client delivery through two real gateway nodes and a real nats-server."""

from __future__ import annotations

import re

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from shared.backend import PrismBackend
from shared.client import PrismClient
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually, nobody_listens


async def test_welcome_names_conn_node_user_and_route(make_node: NodeFactory) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node), user="alice") as client:
        assert client.welcome["prism"] == "welcome"
        assert next(iter(client.welcome)) == "prism"
        assert client.welcome["node"] == node.node_id
        assert client.welcome["user"] == "alice"
        assert client.welcome["route"] == "/ws"
        assert re.fullmatch(rf"{node.node_id}\.[A-Za-z0-9_-]+", client.conn_id)
    async with await PrismClient.connect(ws_url(node)) as anonymous:
        assert anonymous.user is None
        assert anonymous.conn_id != client.conn_id


async def test_room_spanning_two_nodes_gets_each_message_once_per_member(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    one, two = await make_node(), await make_node()
    a = await PrismClient.connect(ws_url(one), user="a")
    b = await PrismClient.connect(ws_url(two), user="b")
    c = await PrismClient.connect(ws_url(two), user="c")
    outsider = await PrismClient.connect(ws_url(one), user="d")
    for client in (a, b, c):
        await client.join("lobby")
    receipts = await backend.deliver("room.lobby", '{"say":"hi"}')
    assert sorted((r["node"], r["delivered"]) for r in receipts) == [("node1", 1), ("node2", 2)]
    for client in (a, b, c):
        assert await client.receive(5) == '{"say":"hi"}'
    await backend.to_room("lobby", "second")
    for client in (a, b, c):
        assert await client.receive(5) == "second"
    assert outsider._deliveries.empty()
    for client in (a, b, c, outsider):
        await client.close()


async def test_user_with_connections_on_both_nodes_gets_every_message_everywhere(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    one, two = await make_node(), await make_node()
    phone = await PrismClient.connect(ws_url(one), user="alice")
    laptop = await PrismClient.connect(ws_url(two), user="alice")
    other = await PrismClient.connect(ws_url(two), user="bob")
    receipts = await backend.deliver("user.alice", "for alice")
    assert sorted(r["node"] for r in receipts) == ["node1", "node2"]
    assert await phone.receive(5) == "for alice"
    assert await laptop.receive(5) == "for alice"
    await backend.to_user("bob", "for bob")
    assert await other.receive(5) == "for bob"
    assert laptop._deliveries.empty()
    for client in (phone, laptop, other):
        await client.close()


@pytest.mark.parametrize(
    ("payload", "binary", "expected"),
    [
        (b"plain text", False, "plain text"),
        (b'{"prism-like":"but not prism"}', False, '{"prism-like":"but not prism"}'),
        ("h\u00e9llo \U0001f600".encode(), False, "h\u00e9llo \U0001f600"),
        (bytes(range(256)), True, bytes(range(256))),
        (b"\xff\xfe not utf-8", False, b"\xff\xfe not utf-8"),
        (b"x" * 70_000, False, "x" * 70_000),
        (b"", False, ""),
    ],
)
async def test_payload_bytes_reach_the_client_unchanged(
    make_node: NodeFactory, backend: PrismBackend, payload: bytes, binary: bool, expected: str | bytes
) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node)) as client:
        await backend.to_conn(client.conn_id, payload, binary=binary)
        assert await client.receive(5) == expected


async def test_conn_request_gets_one_receipt(make_node: NodeFactory, nc: NatsClient) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node)) as client:
        msg = await nc.request(f"conn.{client.conn_id}", b"ping", timeout=5)
        assert msg.data == b'{"node":"node1","delivered":1}'
        assert await client.receive(5) == "ping"


async def test_request_to_a_closed_connection_gets_no_responders_at_once(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node()
    client = await PrismClient.connect(ws_url(node))
    await client.close()
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request(f"conn.{client.conn_id}", b"late", timeout=5)
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request("conn.deadnode.AAAAAAAA", b"nobody", timeout=5)


async def test_room_subscription_exists_only_while_a_local_member_does(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node()
    a = await PrismClient.connect(ws_url(node))
    b = await PrismClient.connect(ws_url(node))
    await a.join("r1")
    await b.join("r1")
    await a.leave("r1")
    msg = await nc.request("room.r1", b"still here", timeout=5)
    assert b'"delivered":1' in msg.data
    await b.leave("r1")
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request("room.r1", b"nobody", timeout=5)
    await b.join("r1")
    await b.close()
    await a.close()

    await eventually(
        lambda: nobody_listens(nc, "room.r1"), what="room.r1 interest to end after its last member closed"
    )


async def test_user_subscription_ends_with_the_users_last_connection(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node()
    first = await PrismClient.connect(ws_url(node), user="zoe")
    second = await PrismClient.connect(ws_url(node), user="zoe")
    await first.close()
    assert b'"delivered":1' in (await nc.request("user.zoe", b"x", timeout=5)).data
    await second.close()

    await eventually(
        lambda: nobody_listens(nc, "user.zoe"), what="user.zoe interest to end with the last connection"
    )


async def test_compressed_connections_get_the_same_messages(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    node = await make_node(compression=True)
    compressed = await PrismClient.connect(ws_url(node), compression="deflate")
    plain = await PrismClient.connect(ws_url(node))
    assert compressed.ws.protocol.extensions
    assert not plain.ws.protocol.extensions
    for client in (compressed, plain):
        await client.join("mixed")
    await backend.to_room("mixed", "x" * 5000)
    await backend.to_room("mixed", bytes(range(256)), binary=True)
    for client in (compressed, plain):
        assert await client.receive(5) == "x" * 5000
        assert await client.receive(5) == bytes(range(256))
        await client.close()


async def test_broadcast_reaches_every_connection_once_with_a_receipt_per_busy_node(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    one, two, idle = await make_node(), await make_node(), await make_node()
    clients = [await PrismClient.connect(ws_url(node)) for node in (one, two, two)]
    receipts = await backend.deliver("broadcast", "to everyone", window=0.5)
    assert sorted((r["node"], r["delivered"]) for r in receipts) == [(one.node_id, 1), (two.node_id, 2)]
    assert idle.node_id not in {r["node"] for r in receipts}  # no connections: no receipt
    for client in clients:
        assert await client.receive(5) == "to everyone"
        await client.close()
