"""The gateway on a NATS that requires credentials: least-privilege users (exactly the permissions in
docs/security.md, for the gateway, a backend, the notification service and the demo backend), a token,
an NKey, and TLS with a private CA and a client certificate."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nkeys
import orjson
import pytest
from nacl.signing import SigningKey
from nats.aio.msg import Msg

from gateway.config import GatewayConfig
from gateway.embedded_nats import NatsServer
from gateway.node import Node
from notification_service.config import NotifyConfig
from notification_service.publisher import Notifier
from notification_service.service import NotifyService
from shared import presence_keys as keys
from shared.backend import PrismBackend
from shared.client import PrismClient
from shared.demo_backend import DemoBackend, DemoConfig
from shared.nats_connection import flush_all
from shared.nats_permissions import render_users
from shared.presence import PresenceReader
from shared.presence_keys import Layout
from tests.helpers import eventually
from tests.nats_credentials_support import Decentralised, Pki

PASSWORDS = {
    "gateway": "gw-" + secrets.token_hex(8),
    "backend": "be-" + secrets.token_hex(8),
    "notification": "nt-" + secrets.token_hex(8),
}


def start_nats(tmp_path: Path, config: str) -> NatsServer:
    config_file = tmp_path / "nats.conf"
    config_file.write_text(config)
    return NatsServer.start(tmp_path / "nats", log_file=tmp_path / "nats.log", config_file=config_file)


def violations(tmp_path: Path) -> list[str]:
    return [line for line in (tmp_path / "nats.log").read_text().splitlines() if " Violation" in line]


@pytest.fixture
def least_privilege_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = start_nats(tmp_path, render_users(PASSWORDS))
    yield server
    server.stop()


@pytest.fixture
async def nodes(least_privilege_nats: NatsServer) -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    for i in (1, 2):
        config = GatewayConfig(
            nats_url=least_privilege_nats.url,
            nats_user="gateway",
            nats_password=PASSWORDS["gateway"],
            host="127.0.0.1",
            port=0,
            node_id=f"node{i}",
            drain_seconds=0,
            presence_storage="memory",
            node_ttl=120,  # no beat of its own during the test: the sweep below must not race one
        )
        node = Node(config)
        await node.start()
        started.append(node)
    yield started
    for node in started:
        await node.stop()


async def test_gateway_and_backend_work_under_least_privilege(
    tmp_path: Path, least_privilege_nats: NatsServer, nodes: list[Node]
) -> None:
    nc = await nats.connect(least_privilege_nats.url, user="backend", password=PASSWORDS["backend"])
    backend = PrismBackend(nc)
    lifecycle: list[str] = []

    async def on_lifecycle(msg: Msg) -> None:
        lifecycle.append(msg.subject)

    async def on_request(msg: Msg) -> None:
        await msg.respond(orjson.dumps({"echo": orjson.loads(msg.data)}))

    await nc.subscribe("client.connect", cb=on_lifecycle)
    await nc.subscribe("client.disconnect", cb=on_lifecycle)
    await nc.subscribe("client.event.>", queue="backends", cb=on_request)
    await flush_all(nc)

    first, second = (f"ws://127.0.0.1:{n.port}/ws" for n in nodes)
    ada = await PrismClient.connect(first, user="ada")
    bob = await PrismClient.connect(second, user="bob")
    await ada.join("lab")
    await bob.join("lab")
    # Every direction: conn, user, room deliveries with receipts; requests; control; presence.
    assert await backend.deliver(f"conn.{ada.conn_id}", "one") == [{"node": "node1", "delivered": 1}]
    assert await ada.receive(5) == "one"
    assert await backend.deliver("user.bob", "two") == [{"node": "node2", "delivered": 1}]
    assert await bob.receive(5) == "two"
    receipts = await backend.deliver("room.lab", "three")
    assert sorted(r["node"] for r in receipts) == ["node1", "node2"]
    assert await ada.request("echo", {"n": 1}) == {"echo": {"n": 1}}
    assert (await backend.join(bob.conn_id, "extra"))["ok"] is True
    assert (await backend.user_presence("ada"))["online"] is True
    assert (await backend.room_presence("lab"))["count"] == 2
    assert (await backend.cluster_presence())["totals"]["nodes"] == 2
    registry = await PresenceReader.open(nc)
    assert set(await registry.user_connections("bob")) == {bob.conn_id}  # backends may read it
    # A sweep and a self-restore, as after a death that was not one (with a gateway's own credentials).
    assert nodes[0].liveness is not None
    assert nodes[1].liveness is not None
    assert await nodes[1].liveness.sweep("node1", force=True) == 1

    async def restored() -> bool:
        return set(await registry.user_connections("ada")) == {ada.conn_id}

    await eventually(restored, what="node1 to write its keys back after the sweep")
    await backend.close_conn(bob.conn_id)
    await eventually(lambda: bob.close_code is not None, what="the control close")
    await eventually(lambda: lifecycle.count("client.disconnect") == 1, what="bob's disconnect event")
    assert lifecycle.count("client.connect") == 3  # ada, bob, and ada restored after the sweep
    await ada.close()
    await nc.close()
    assert violations(tmp_path) == []


async def test_the_notification_service_works_under_least_privilege(
    tmp_path: Path, least_privilege_nats: NatsServer, nodes: list[Node]
) -> None:
    """Two instances (streams created by the first, found by the second), a backend publishing as
    ``backend``: online delivery, inbox store and replay, a dead letter; no permission violation."""
    config = NotifyConfig(
        nats_url=least_privilege_nats.url,
        nats_user="notification",
        nats_password=PASSWORDS["notification"],
        metrics_host="127.0.0.1",
        metrics_port=0,
        stream_storage="memory",
        receipt_timeout=0.5,
        ack_wait=3.0,
    )
    services = [NotifyService(config), NotifyService(config)]
    nc = await nats.connect(least_privilege_nats.url, user="backend", password=PASSWORDS["backend"])
    try:
        for service in services:
            await service.start()
        notifier = Notifier(nc.jetstream())
        ada = await PrismClient.connect(f"ws://127.0.0.1:{nodes[0].port}/ws", user="ada")
        await notifier.to_user("ada", "a-1", "online")
        assert orjson.loads(await ada.receive(5))["id"] == "a-1"
        await notifier.to_user("bob", "b-1", "offline", ttl=60)

        def stored() -> float:
            return sum(s.registry.get_sample_value("prism_notify_stored_total") or 0 for s in services)

        await eventually(lambda: stored() == 1, what="bob's notification in his inbox")
        bob = await PrismClient.connect(f"ws://127.0.0.1:{nodes[1].port}/ws", user="bob")
        assert orjson.loads(await bob.receive(5))["id"] == "b-1"
        await nc.jetstream().publish("notify.user.ada", b"not json")

        def dead() -> float:
            name, labels = "prism_notify_dead_lettered_total", {"reason": "invalid_json"}
            return sum(s.registry.get_sample_value(name, labels) or 0 for s in services)

        await eventually(lambda: dead() == 1, what="the dead letter")
        await ada.close()
        await bob.close()
    finally:
        for service in services:
            await service.stop()
        await nc.close()
    assert violations(tmp_path) == []


async def test_a_backend_cannot_write_presence_or_pose_as_a_gateway(
    tmp_path: Path, least_privilege_nats: NatsServer, nodes: list[Node]
) -> None:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(
        least_privilege_nats.url, user="backend", password=PASSWORDS["backend"], error_cb=on_error
    )
    await nc.publish(keys.kv_subject(Layout().bucket_of("node1.forged"), "conn.node1.forged"), b"{}")
    await nc.publish("client.connect", b"{}")
    await nc.subscribe("conn.node1.*")  # refused asynchronously: the server reports it
    await eventually(lambda: len(violations(tmp_path)) >= 3, what="the server to refuse all three")
    assert await (await PresenceReader.open(nc)).connection("node1.forged") is None
    await nc.close()


async def start_node_on(server_url: str, **settings: Any) -> Node:
    node = Node(
        GatewayConfig(
            nats_url=server_url,
            host="127.0.0.1",
            port=0,
            drain_seconds=0,
            presence_storage="memory",
            **settings,
        )
    )
    await node.start()
    return node


async def registers_a_client(node: Node) -> None:
    client = await PrismClient.connect(f"ws://127.0.0.1:{node.port}/ws", user="ada")
    assert node.hub.user_conns("ada")
    await client.close()
    await node.stop()


async def test_token_authentication(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    server = start_nats(tmp_path, f'authorization {{ token: "{token}" }}\n')
    try:
        await registers_a_client(await start_node_on(server.url, nats_token=token))
        # A wrong token is a configuration error, said plainly, not a retry loop (run as a process:
        # nats-py leaves the refused socket for the garbage collector).
        env = {**os.environ, "PRISM_NATS_URL": server.url, "PRISM_NATS_TOKEN": "wrong"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", "gateway", "--port", "0",
            stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2
        assert "refused this node's credentials" in err.decode()
        assert "Traceback" not in err.decode()
    finally:
        server.stop()


async def test_nkey_authentication(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(bytes(SigningKey.generate()), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "gateway.nk"
    seed_file.write_bytes(seed)
    server = start_nats(tmp_path, f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    try:
        await registers_a_client(await start_node_on(server.url, nats_nkey_seed_file=str(seed_file)))
    finally:
        server.stop()


async def test_mutual_tls_with_a_private_ca(tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    config = pki.server_config(verify=True)
    server = start_nats(tmp_path, config)
    url = f"tls://127.0.0.1:{server.client_port}"
    try:
        node = await start_node_on(
            url,
            nats_tls_ca_file=pki.ca_file,
            nats_tls_cert_file=pki.client_cert,
            nats_tls_key_file=pki.client_key,
        )
        await registers_a_client(node)
        # Without the client certificate the server refuses the connection.
        with pytest.raises((ConnectionError, OSError, nats.errors.Error)):
            await nats.connect(url, allow_reconnect=False, connect_timeout=3)
    finally:
        server.stop()


async def test_credentials_file_authentication(tmp_path: Path) -> None:
    """Decentralised auth (operator, account, user JWT): both of the node's connections sign the nonce
    with the credentials file's seed."""
    setup = Decentralised.make(tmp_path)
    server = start_nats(tmp_path, setup.server_config)
    try:
        await registers_a_client(await start_node_on(server.url, nats_creds_file=setup.creds_file))
    finally:
        server.stop()


async def test_the_demo_backend_needs_no_more_than_the_backend_permissions(
    least_privilege_nats: NatsServer, nodes: list[Node], tmp_path: Path
) -> None:
    config = DemoConfig(
        nats_url=least_privilege_nats.url, nats_user="backend", nats_password=PASSWORDS["backend"]
    )
    demo = DemoBackend(config)
    await demo.start()
    try:
        async with (
            await PrismClient.connect(f"ws://127.0.0.1:{nodes[0].port}/ws", user="alice") as alice,
            await PrismClient.connect(f"ws://127.0.0.1:{nodes[1].port}/ws", user="bob") as bob,
        ):
            await bob.join("lobby")
            assert await alice.request("echo", [1]) == [1]
            await alice.request("chat.send", {"room": "lobby", "text": "hi"})
            assert orjson.loads(await bob.receive(5))["text"] == "hi"
            assert len((await alice.request("chat.history", {"room": "lobby"}))["messages"]) == 1
    finally:
        await demo.stop()
    assert violations(tmp_path) == []


async def test_recovery_works_under_least_privilege(tmp_path: Path, least_privilege_nats: NatsServer) -> None:
    config = GatewayConfig(
        nats_url=least_privilege_nats.url,
        nats_user="gateway",
        nats_password=PASSWORDS["gateway"],
        host="127.0.0.1",
        port=0,
        node_id="recovering",
        drain_seconds=0,
        presence_storage="memory",
        recover_rooms=("lab",),
        recover_users=("*",),
        recover_storage="memory",
        recover_sync=0.5,
    )
    node = Node(config)
    await node.start()  # creates both history streams and writes their anchors
    nc = await nats.connect(least_privilege_nats.url, user="backend", password=PASSWORDS["backend"])
    url = f"ws://127.0.0.1:{node.port}/ws"
    ada = await PrismClient.connect(url, user="ada", recover=True)
    await ada.join("lab", recover=True)
    ack = await nc.jetstream().publish("room.lab", b"stored")  # a backend's JetStream publish
    assert ack.stream == "RECOVERY_ROOMS"
    await PrismBackend(nc).to_user("ada", "core publish, stored too")
    assert await ada.receive(5) == "stored"
    assert await ada.receive(5) == "core publish, stored too"
    stored_at = ada.position("lab")
    assert stored_at is not None

    def marked() -> bool:  # the periodic check (anchor, multi_last, stream info) moved the room on
        position = ada.position("lab")
        return position is not None and position.seq > stored_at.seq

    await eventually(marked, what="a mark from the periodic check")
    position = ada.position("lab")
    await ada.close()
    await nc.jetstream().publish("room.lab", b"missed")
    back = await PrismClient.connect(url, user="ada")
    await back.join("lab", position=position)
    assert await back.receive(5) == "missed"
    errors = "prism_recovery_errors_total"
    for op in ("sync", "read", "state"):
        assert node.registry.get_sample_value(errors, {"node": "recovering", "op": op}) == 0
    await back.close()
    await nc.close()
    await node.stop()
    assert violations(tmp_path) == []
