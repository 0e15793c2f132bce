"""Control subjects (close, join, leave on a client's behalf) and the presence registry in NATS KV."""

from __future__ import annotations

from typing import Any

import nats.errors
import orjson
import pytest
from nats.aio.client import Client as NatsClient

from shared.backend import PrismBackend
from shared.client import PrismClient
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.presence_support import reader, registry


async def test_backend_closes_one_connection_with_its_code_and_reason(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    node = await make_node()
    keep = await PrismClient.connect(ws_url(node), user="u")
    kick = await PrismClient.connect(ws_url(node), user="u")
    answer = await backend.close_conn(kick.conn_id, 4000, "please reconnect")
    assert answer == {"ok": True, "node": "node1", "conns": 1, "conn": kick.conn_id}
    assert await kick.wait_closed() == 4000
    assert kick.ws.close_reason == "please reconnect"
    await backend.to_user("u", "still there")
    assert await keep.receive(5) == "still there"
    await keep.close()


async def test_close_all_of_a_users_connections_on_every_node(make_node: NodeFactory, nc: NatsClient) -> None:
    one, two = await make_node(), await make_node()
    clients = [await PrismClient.connect(ws_url(n), user="mallory") for n in (one, two, two)]
    bystander = await PrismClient.connect(ws_url(one), user="bob")
    replies = await PrismBackend(nc).close_user("mallory", 4503, "banned")
    assert sorted((r["node"], r["conns"]) for r in replies) == [("node1", 1), ("node2", 2)]
    for client in clients:
        assert await client.wait_closed() == 4503
    assert bystander.close_code is None
    assert await PrismBackend(nc).close_user("mallory") == []  # nobody holds mallory now
    await bystander.close()


async def test_backend_joins_and_removes_a_client_from_a_room(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node)) as client:
        assert (await backend.join(client.conn_id, "news"))["ok"] is True
        await backend.to_room("news", "headline")
        assert await client.receive(5) == "headline"
        assert (await backend.leave(client.conn_id, "news"))["ok"] is True
        with pytest.raises(nats.errors.NoRespondersError):
            await backend.nc.request("room.news", b"nobody", timeout=5)


@pytest.mark.parametrize(
    "body",
    [b'{"code":1006}', b'{"code":"x"}', b"not json", b"[1]", b'{"reason":"' + b"x" * 200 + b'"}'],
)
async def test_invalid_close_request_is_refused_with_a_reason(
    make_node: NodeFactory, nc: NatsClient, body: bytes
) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node)) as client:
        msg = await nc.request(f"control.conn.{client.conn_id}.close", body, timeout=5)
        answer = orjson.loads(msg.data)
        assert answer["ok"] is False
        assert answer["error"]
        assert client.close_code is None


async def test_control_for_a_gone_connection_gets_no_responders(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    node = await make_node()
    client = await PrismClient.connect(ws_url(node))
    await client.close()
    with pytest.raises(nats.errors.NoRespondersError):
        await backend.close_conn(client.conn_id)


async def presence_keys(nc: NatsClient, key_filter: str = ">") -> dict[str, Any]:
    """Connection keys (the nodes' own ``node.`` keys left out)."""
    return await registry(nc, key_filter)


async def test_presence_keys_appear_and_disappear_with_the_connection(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    one, two = await make_node(), await make_node()
    a = await PrismClient.connect(ws_url(one), user="alice")
    b = await PrismClient.connect(ws_url(two), user="alice")
    await a.join("lobby")
    await b.join("lobby")
    keys = await presence_keys(nc)
    assert set(keys) == {
        f"conn.{a.conn_id}",
        f"conn.{b.conn_id}",
        f"user.alice.{a.conn_id}",
        f"user.alice.{b.conn_id}",
        f"room.lobby.{a.conn_id}",
        f"room.lobby.{b.conn_id}",
    }
    conn_value = keys[f"conn.{a.conn_id}"]
    assert (conn_value["node"], conn_value["user"]) == ("node1", "alice")
    assert conn_value["connected_at"].endswith("Z")
    assert set(await presence_keys(nc, "user.alice.>")) == {
        f"user.alice.{a.conn_id}",
        f"user.alice.{b.conn_id}",
    }
    await a.leave("lobby")
    assert f"room.lobby.{a.conn_id}" not in await presence_keys(nc, "room.lobby.>")
    await b.close()

    async def only_a_left() -> bool:
        return set(await presence_keys(nc)) == {f"conn.{a.conn_id}", f"user.alice.{a.conn_id}"}

    await eventually(only_a_left, what="b's presence keys to be removed")
    assert set(await (await reader(nc)).user_connections("alice")) == {a.conn_id}
    await a.close()

    async def empty() -> bool:
        return await presence_keys(nc) == {}

    await eventually(empty, what="every presence key to be removed")
