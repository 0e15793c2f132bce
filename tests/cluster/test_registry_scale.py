"""The registry at scale: a dead node of 10,000 connections on a 3-server cluster with 3-replica buckets
is swept completely (every key gone, every disconnect event published once) within 10 s of its death; a
node that stops leaves nothing; a room too large for one NATS message is answered in pages."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from nats.aio.msg import Msg

from gateway.config import GatewayConfig
from gateway.embedded_nats import NatsCluster
from gateway.io.presence_store import BucketOptions
from gateway.node import Node
from loadtest.registry import RegistryNode
from shared.backend import PresenceQueryError, PrismBackend
from shared.nats_connection import flush_all
from tests.conftest import NodeFactory
from tests.helpers import eventually
from tests.presence_support import node_keys

pytestmark = pytest.mark.cluster

CONNECTIONS = 10_000


async def test_a_dead_node_of_10000_connections_is_swept_within_10s(nats_cluster: NatsCluster) -> None:
    survivors = []
    for i in (1, 2):
        config = GatewayConfig(
            nats_url=nats_cluster.urls,
            host="127.0.0.1",
            port=0,
            node_id=f"s{i}",
            presence_replicas=3,
            presence_storage="file",
            drain_seconds=0,
        )
        node = Node(config)
        await node.start()
        survivors.append(node)
    victim = await RegistryNode.start(nats_cluster.urls, "victim", BucketOptions(replicas=3, storage="file"))
    nc = await nats.connect(servers=nats_cluster.urls.split(","))
    try:
        events: Counter[str] = Counter()

        async def on_disconnect(msg: Msg) -> None:
            events[orjson.loads(msg.data)["conn"]] += 1

        await nc.subscribe("client.disconnect", cb=on_disconnect)
        started = time.monotonic()
        records = await victim.connect(
            [f"u{i}" if i % 2 else None for i in range(CONNECTIONS)], rooms=("lobby",)
        )
        took = time.monotonic() - started
        print(f"registered {CONNECTIONS} connections ({victim.writes} writes) in {took:.1f}s")
        conns = {r.conn for r in records}

        await victim.kill()
        killed = time.monotonic()

        async def swept() -> bool:
            return set(events) >= conns and not await node_keys(nc, "victim")

        await eventually(swept, timeout=20, what="the survivors to sweep the dead node")
        elapsed = time.monotonic() - killed
        print(f"{CONNECTIONS} connections swept {elapsed:.2f}s after the node died")
        assert elapsed < 10
        await flush_all(nc)
        assert set(events) == conns
        assert set(events.values()) == {1}
        sweeps = sum(
            n.registry.get_sample_value("prism_presence_sweeps_total", {"node": n.node_id}) or 0
            for n in survivors
        )
        assert sweeps == 1
    finally:
        await nc.close()
        for node in survivors:
            await node.stop()


async def test_a_stopped_node_leaves_nothing_and_is_swept_by_nobody(
    tmp_path: Path, nats_cluster: NatsCluster
) -> None:
    watcher = await RegistryNode.start(nats_cluster.urls, "watcher", BucketOptions(replicas=3))
    leaving = await RegistryNode.start(nats_cluster.urls, "leaving", BucketOptions(replicas=3))
    nc = await nats.connect(servers=nats_cluster.urls.split(","))
    try:
        await leaving.connect(["a", "b", None], rooms=("lobby",))
        assert len(await node_keys(nc, "leaving")) == 3 + 2 + 3 + 2  # conn, user, room keys; info, alive
        await leaving.stop()
        assert await node_keys(nc, "leaving") == {}
        assert "leaving" not in watcher.liveness.table.alive()
        assert await watcher.liveness.check() == set()
    finally:
        await watcher.stop()
        await nc.close()


async def test_a_room_larger_than_a_nats_message_is_answered_in_pages(
    nats_server: Any, make_node: NodeFactory
) -> None:
    """presence.room of a room whose member list is far over NATS's 1 MiB payload limit: one reply per
    page, each small, that together list every member once."""
    await make_node()
    crowd = await RegistryNode.start(nats_server.url, "crowd", BucketOptions(storage="memory"))
    nc = await nats.connect(nats_server.url)
    try:
        members = 12_000  # about 1.5 MB of members: one message could not carry them
        records = await crowd.connect([f"u{i}" for i in range(members)], rooms=("hall",))
        backend = PrismBackend(nc)
        answer = await backend.room_presence("hall", timeout=10)
        assert answer["count"] == members
        assert answer["pages"] == 12
        assert sorted(m["conn"] for m in answer["members"]) == sorted(r.conn for r in records)
        assert len(answer["users"]) == members
        first = orjson.loads((await nc.request("presence.room.hall", b"", timeout=10)).data)
        assert (first["page"], first["pages"], first["count"], len(first["members"])) == (
            1,
            12,
            members,
            1000,
        )
        smaller = await backend.room_presence("hall", timeout=10, page_size=5000)
        assert smaller["pages"] == 3
        assert len(smaller["members"]) == members
        with pytest.raises(PresenceQueryError, match="invalid_query"):
            await backend.room_presence("hall", page_size=0)
    finally:
        await crowd.stop()
        await nc.close()
