"""A gateway node SIGKILLed: the survivors purge its presence entries and announce its connections'
disconnects within the bound, exactly once however many survivors there are; a node draining on
SIGTERM leaves nothing behind."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
import orjson
import pytest
from nats.aio.msg import Msg

from gateway.core.liveness import LOST_CLOSE_CODE
from shared import presence_keys as keys
from shared.backend import PresenceQueryError, PrismBackend
from shared.client import PrismClient
from shared.close_codes import CloseCode
from shared.nats_connection import flush_all
from tests.cluster.conftest import GatewayFactory
from tests.conftest import NodeFactory
from tests.helpers import eventually
from tests.presence_support import node_keys, put_keys, registry

pytestmark = pytest.mark.cluster


async def connect_clients(url: str, count: int) -> list[PrismClient]:
    clients = []
    for i in range(count):
        client = await PrismClient.connect(url, user=f"u{i % 5}" if i % 2 == 0 else None)
        if i % 3 == 0:
            await client.join("lobby")
            await client.join(f"room{i % 4}")
        clients.append(client)
    return clients


async def test_sigkilled_node_is_swept_once_within_the_bound(
    nats_server: Any, make_node: NodeFactory, gateway_process: GatewayFactory
) -> None:
    survivors = [await make_node(), await make_node()]  # default node_ttl: the bound a user gets
    victim = await gateway_process(nats_server.url, "victim")
    nc = await nats.connect(nats_server.url)
    events: list[dict[str, Any]] = []

    async def on_disconnect(msg: Msg) -> None:
        events.append(orjson.loads(msg.data))

    await nc.subscribe("client.disconnect", cb=on_disconnect)
    clients = await connect_clients(victim.url, 30)
    conns = {c.conn_id for c in clients}
    assert len([k for k in await node_keys(nc, "victim") if k.startswith("conn.")]) == 30

    await victim.kill()
    killed = time.monotonic()

    async def swept() -> bool:
        return not await node_keys(nc, "victim") and {e["conn"] for e in events} >= conns

    await eventually(swept, timeout=10, what="the survivors to sweep the dead node")
    elapsed = time.monotonic() - killed
    print(f"sweep complete {elapsed:.2f}s after SIGKILL (node_ttl {survivors[0].config.node_ttl}s)")

    # Every lost connection is announced once, as the client saw it (1006), with its user and rooms.
    assert sorted(e["conn"] for e in events) == sorted(conns)
    by_conn = {e["conn"]: e for e in events}
    for client in clients:
        event = by_conn[client.conn_id]
        assert event["code"] == LOST_CLOSE_CODE
        assert event["user"] == client.user
        assert event["node"] == "victim"
        assert event["swept_by"] in {"node1", "node2"}
    assert by_conn[clients[0].conn_id]["rooms"] == ["lobby", "room0"]
    # Exactly one sweep, even when every survivor looks again.
    for node in survivors:
        assert node.liveness is not None
        await node.liveness.check()
    await flush_all(nc)
    assert len(events) == 30
    metric = "prism_presence_sweeps_total"
    sweeps = [n.registry.get_sample_value(metric, {"node": n.node_id}) or 0 for n in survivors]
    assert sum(sweeps) == 1
    for client in clients:
        await client.close()
    await nc.close()


async def test_sigterm_drains_and_leaves_nothing_behind(
    nats_server: Any, make_node: NodeFactory, gateway_process: GatewayFactory
) -> None:
    survivor = await make_node()
    gateway = await gateway_process(nats_server.url, "leaving", drain_seconds=1)
    nc = await nats.connect(nats_server.url)
    events: list[dict[str, Any]] = []

    async def on_disconnect(msg: Msg) -> None:
        events.append(orjson.loads(msg.data))

    await nc.subscribe("client.disconnect", cb=on_disconnect)
    clients = await connect_clients(gateway.url, 10)
    started = time.monotonic()
    assert await gateway.terminate() == 0
    print(f"drained 10 clients and exited in {time.monotonic() - started:.2f}s")
    for client in clients:
        assert await client.wait_closed() == CloseCode.SERVICE_RESTART
    assert await node_keys(nc, "leaving") == {}
    await eventually(lambda: len(events) == 10, what="a disconnect event per client")
    # Nobody sweeps a node that stopped cleanly: no second event, ever.
    assert survivor.liveness is not None
    assert "leaving" not in survivor.liveness.table.alive()
    assert await survivor.liveness.check() == set()
    await flush_all(nc)
    assert sorted(e["conn"] for e in events) == sorted(c.conn_id for c in clients)
    assert {e["code"] for e in events} == {CloseCode.SERVICE_RESTART}
    await nc.close()


async def test_leftovers_of_dead_nodes_are_swept_by_a_starting_node(
    nats_server: Any, make_node: NodeFactory
) -> None:
    first = await make_node(node_id="first")  # creates the registry, then stops: nobody is watching
    await first.stop()
    nc = await nats.connect(nats_server.url)
    # A node that died while no other node was running: keys and an info key, no heartbeat.
    conn = {"conn": "ghost.a", "node": "ghost", "user": "zoe", "route": "/ws", "remote": ""}
    await put_keys(
        nc,
        {
            keys.node_info_key("ghost"): b'{"node":"ghost"}',
            keys.conn_key("ghost.a"): orjson.dumps(conn),
            keys.user_key("zoe", "ghost.a"): b"{}",
            keys.room_key("lobby", "ghost.a"): b'{"user":"zoe"}',
            # ... and an earlier process with the id the new node will take.
            keys.node_info_key("node1"): b'{"node":"node1"}',
            keys.conn_key("node1.old"): b'{"conn":"node1.old","node":"node1","user":null}',
        },
    )
    events: list[dict[str, Any]] = []

    async def on_disconnect(msg: Msg) -> None:
        events.append(orjson.loads(msg.data))

    await nc.subscribe("client.disconnect", cb=on_disconnect)
    await make_node(node_id="node1", node_ttl=2)  # judges others once it has listened for a TTL
    await eventually(lambda: len(events) == 2, what="disconnect events for both leftovers")
    assert await node_keys(nc, "ghost") == {}
    assert keys.conn_key("node1.old") not in await registry(nc)
    by_conn = {e["conn"]: e for e in events}
    assert by_conn["ghost.a"]["user"] == "zoe"
    assert by_conn["ghost.a"]["rooms"] == ["lobby"]
    assert by_conn["node1.old"]["swept_by"] == "node1"
    await nc.close()


async def test_a_node_swept_while_alive_restores_its_presence(
    nats_server: Any, make_node: NodeFactory
) -> None:
    lapsed, other = await make_node(), await make_node()
    assert other.liveness is not None
    nc = await nats.connect(nats_server.url)
    connects: list[dict[str, Any]] = []

    async def on_connect(msg: Msg) -> None:
        connects.append(orjson.loads(msg.data))

    await nc.subscribe("client.connect", cb=on_connect)
    client = await PrismClient.connect(f"ws://127.0.0.1:{lapsed.port}/ws", user="ada")
    await client.join("lab")
    before = await node_keys(nc, "node1")
    # As if node1 had been cut off from NATS for longer than its TTL: a survivor sweeps it.
    assert await other.liveness.sweep("node1", force=True) == 1
    assert other.registry.get_sample_value("prism_presence_swept_connections_total", {"node": "node2"}) == 1
    # It hears of its sweep and writes everything back, announcing the connection again.

    async def restored() -> bool:
        return set(await node_keys(nc, "node1")) >= set(before)

    await eventually(restored, what="node1 to write its keys back")
    await eventually(lambda: any(e.get("restored") for e in connects), what="a restored connect event")
    restored_event = next(e for e in connects if e.get("restored"))
    assert restored_event["conn"] == client.conn_id
    assert restored_event["rooms"] == ["lab"]
    await client.close()
    await nc.close()


async def test_presence_queries_answer_from_the_whole_cluster(
    nats_server: Any, make_node: NodeFactory
) -> None:
    first, second = await make_node(), await make_node()
    a = await PrismClient.connect(f"ws://127.0.0.1:{first.port}/ws", user="ann")
    b = await PrismClient.connect(f"ws://127.0.0.1:{second.port}/ws", user="ann")
    c = await PrismClient.connect(f"ws://127.0.0.1:{second.port}/ws", user="cid")
    for client in (a, c):
        await client.join("lobby")
    nc = await nats.connect(nats_server.url)

    async def ask(subject: str, body: Any = None) -> Any:
        reply = await nc.request(subject, orjson.dumps(body) if body is not None else b"", timeout=5)
        return orjson.loads(reply.data)

    user = await ask("presence.user.ann")
    assert user["online"] is True
    where = {(x["conn"], x["node"]) for x in user["connections"]}
    assert where == {(a.conn_id, "node1"), (b.conn_id, "node2")}
    assert all(x["connected_at"] for x in user["connections"])
    assert (await ask("presence.user.nobody")) == {"user": "nobody", "online": False, "connections": []}
    room = await ask("presence.room.lobby")
    assert room["count"] == 2
    assert room["users"] == ["ann", "cid"]
    assert {m["conn"] for m in room["members"]} == {a.conn_id, c.conn_id}
    online = await ask("presence.online", {"users": ["ann", "cid", "zed"]})
    assert online == {"online": {"ann": True, "cid": True, "zed": False}}

    async def totals() -> Any:
        answer = await ask("presence.cluster")
        return answer if answer["totals"] == {"nodes": 2, "connections": 3} else None

    cluster = await eventually(totals, what="cluster totals (heartbeats carry the counts)")
    assert [n["node"] for n in cluster["nodes"]] == ["node1", "node2"]
    assert (await ask("presence.user.bad*name"))["error"] == "invalid_name"
    assert (await ask("presence.online", {"users": "ann"}))["error"] == "invalid_query"
    assert (await ask("presence.whatever"))["error"] == "unknown_query"
    backend = PrismBackend(nc)  # the same queries through the Python helper
    assert (await backend.user_presence("cid"))["online"] is True
    assert (await backend.room_presence("lobby"))["count"] == 2
    assert await backend.online(["ann", "zed"]) == {"ann": True, "zed": False}
    assert (await backend.cluster_presence())["totals"]["nodes"] == 2
    with pytest.raises(PresenceQueryError, match="too_many_users"):
        await backend.online([f"u{i}" for i in range(101)])
    for client in (a, b, c):
        await client.close()
    await nc.close()


async def test_queries_are_answered_once(nats_server: Any, make_node: NodeFactory) -> None:
    await make_node()
    await make_node()
    nc = await nats.connect(nats_server.url)
    inbox = nc.new_inbox()
    replies: asyncio.Queue[Msg] = asyncio.Queue()
    await nc.subscribe(inbox, cb=replies.put)
    await nc.publish("presence.user.ann", b"", reply=inbox)
    await asyncio.wait_for(replies.get(), 5)
    await flush_all(nc)
    # A second answer would come from the other node at about the same time; the queue group prevents it.
    await nc.request("presence.cluster", b"", timeout=5)  # a later round trip through both nodes' NATS
    assert replies.empty()
    await nc.close()
