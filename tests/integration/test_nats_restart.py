"""NATS going away and coming back: the node's subscriptions are re-sent on its data-plane connection."""

from __future__ import annotations

from pathlib import Path

import nats

from gateway.config import GatewayConfig
from gateway.embedded_nats import NatsServer
from gateway.node import Node
from shared.backend import PrismBackend
from shared.client import PrismClient
from tests.conftest import ws_url
from tests.helpers import eventually


async def test_deliveries_resume_after_nats_restarts(tmp_path: Path) -> None:
    first = NatsServer.start(tmp_path / "nats", log_file=tmp_path / "nats.log")
    port = first.client_port
    config = GatewayConfig(nats_url=first.url, host="127.0.0.1", port=0, node_id="n1", drain_seconds=0)
    node = Node(config)
    await node.start()
    try:
        client = await PrismClient.connect(ws_url(node), user="ada")
        await client.join("lab")
        first.kill()
        await eventually(lambda: not node.is_ready(), what="the node to notice NATS is gone")
        second = NatsServer.start(tmp_path / "nats", log_file=tmp_path / "nats.log", client_port=port)
        try:
            await eventually(node.is_ready, timeout=20, what="the node to reconnect")
            nc = await nats.connect(second.url)
            backend = PrismBackend(nc)

            async def room_delivers() -> bool:
                return bool(await backend.deliver("room.lab", "after the restart", timeout=1))

            await eventually(room_delivers, what="room.lab to be delivered again")
            assert await client.receive(5) == "after the restart"
            await backend.to_user("ada", "user too")
            await backend.to_conn(client.conn_id, "and conn")
            received = {await client.receive(5) for _ in range(2)}
            while not client._deliveries.empty():  # a probe whose receipt timed out may still have landed
                received.add(await client.receive(5))
            assert {"user too", "and conn"} <= received
            await nc.close()
            await client.close()
        finally:
            await node.stop()
            second.stop()
    finally:
        first.stop()
