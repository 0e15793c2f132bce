"""NATS faults: a NATS server of a 3-node cluster killed, and NATS entirely down and back.

In both, clients keep their WebSockets; once NATS serves again, delivery resumes and the presence
bucket matches the nodes' connections exactly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from gateway.config import GatewayConfig
from gateway.embedded_nats import NatsCluster, NatsServer
from gateway.node import Node
from shared.backend import PrismBackend
from shared.client import PrismClient
from tests.helpers import eventually
from tests.presence_support import expected_keys, registry

pytestmark = pytest.mark.cluster


def expected(nodes: list[Node]) -> set[str]:
    return expected_keys(
        (conn_id, member.handle.user, member.rooms)
        for node in nodes
        for conn_id, member in node.hub.conns.items()
    )


async def connection_keys(nc: NatsClient) -> set[str]:
    return set(await registry(nc))


async def start_node(urls: str, node_id: str, **settings: Any) -> Node:
    config = GatewayConfig(
        nats_url=urls, host="127.0.0.1", port=0, node_id=node_id, drain_seconds=0, **settings
    )
    node = Node(config)
    await node.start()
    return node


async def test_killing_one_server_of_a_nats_cluster(nats_cluster: NatsCluster) -> None:
    nodes = [
        await start_node(nats_cluster.urls, f"g{i}", presence_replicas=3, presence_storage="file")
        for i in (1, 2)
    ]
    try:
        clients = [
            await PrismClient.connect(f"ws://127.0.0.1:{nodes[i % 2].port}/ws", user=f"u{i}")
            for i in range(10)
        ]
        for client in clients:
            await client.join("lobby")
        assert nodes[0]._bus is not None
        victim_url = str(nodes[0]._bus.nc.connected_url.geturl() if nodes[0]._bus.nc.connected_url else "")
        victim = next(s for s in nats_cluster.servers if str(s.client_port) in victim_url)
        survivors = [s for s in nats_cluster.servers if s is not victim]
        nc = await nats.connect(servers=[s.url for s in survivors])
        backend = PrismBackend(nc)

        victim.kill()
        killed = time.monotonic()

        async def delivered_everywhere() -> bool:
            try:
                receipts = await backend.deliver("room.lobby", "still here", timeout=1, window=0.5)
            except nats.errors.NoRespondersError:  # interest not yet propagated through the new route
                return False
            return sum(int(r["delivered"]) for r in receipts) == 10

        await eventually(delivered_everywhere, timeout=30, what="room delivery through the surviving servers")
        recovered = time.monotonic() - killed
        print(f"room delivery to both nodes again {recovered:.2f}s after a NATS server was killed")
        for client in clients:
            assert client.close_code is None  # nobody lost their WebSocket
            while await client.receive(5) != "still here":
                pass  # earlier probes whose receipts timed out may have landed first

        async def consistent() -> bool:
            try:
                return await connection_keys(nc) == expected(nodes)
            except (nats.errors.Error, TimeoutError):  # JetStream re-electing leaders after the loss
                return False

        await eventually(consistent, timeout=30, what="presence to match the nodes' connections")
        # Presence writes work again: a new connection and a leave are recorded.
        late = await PrismClient.connect(f"ws://127.0.0.1:{nodes[0].port}/ws", user="late")
        await clients[0].leave("lobby")
        await eventually(consistent, timeout=10, what="presence to follow new changes")
        for client in [*clients, late]:
            await client.close()
        await nc.close()
    finally:
        for node in nodes:
            await node.stop()


@pytest.mark.parametrize("storage", ["file", "memory"])
async def test_nats_down_and_back(tmp_path: Path, storage: str) -> None:
    server = NatsServer.start(tmp_path / "nats", log_file=tmp_path / "nats.log")
    port = server.client_port
    node = await start_node(server.url, "g1", presence_storage=storage)
    try:
        stays = await PrismClient.connect(f"ws://127.0.0.1:{node.port}/ws", user="stays")
        await stays.join("lobby")
        leaves = await PrismClient.connect(f"ws://127.0.0.1:{node.port}/ws", user="leaves")
        await leaves.join("lobby")
        server.kill()
        await eventually(lambda: not node.is_ready(), what="the node to go unready")
        # The sockets stay open while NATS is away; a client that leaves now cannot be unregistered yet.
        await leaves.close()
        await eventually(lambda: len(node.hub.conns) == 1, what="the node to forget the closed client")
        assert stays.close_code is None

        server = NatsServer.start(tmp_path / "nats", log_file=tmp_path / "nats.log", client_port=port)
        await eventually(node.is_ready, timeout=20, what="the node to reconnect")
        nc = await nats.connect(server.url)
        backend = PrismBackend(nc)

        async def consistent() -> bool:
            return await connection_keys(nc) == expected([node])

        await eventually(consistent, timeout=20, what="presence repaired after NATS came back")

        async def room_delivers() -> bool:
            return bool(await backend.deliver("room.lobby", "back", timeout=1))

        await eventually(room_delivers, what="room delivery again")
        assert await stays.receive(5) == "back"
        await stays.close()
        await nc.close()
    finally:
        await node.stop()
        server.stop()
