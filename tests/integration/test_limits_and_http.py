"""Slow consumers, message size limits, and the plain HTTP endpoints on the gateway port."""

from __future__ import annotations

import asyncio
import http.client
import os
import urllib.error
import urllib.request

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.node import Node
from shared.client import PrismClient
from shared.close_codes import CloseCode
from shared.lifecycle import State
from shared.nats_connection import flush_all
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.security.tokens import SECRET


def metric_value(node: Node, name: str, **labels: str) -> float:
    value = node.registry.get_sample_value(name, {"node": node.node_id, **labels})
    return value or 0.0


async def test_a_client_that_never_reads_is_closed_as_slow_consumer_and_others_carry_on(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(max_outbound_bytes=256 * 1024, close_timeout=0.5)
    healthy = await PrismClient.connect(ws_url(node), user="healthy")
    await healthy.join("firehose")
    # max_queue=1 and no recv(): the client stops reading its socket after one message.
    stalled = await connect(ws_url(node), max_queue=1, compression=None)
    welcome = orjson.loads(await stalled.recv())
    await nc.request(f"control.conn.{welcome['conn']}.join", b'{"room":"firehose"}', timeout=5)
    payload = b"x" * 50_000
    received = 0
    for sent in range(1, 2001):  # bounded: 100 MB at most
        await nc.publish("room.firehose", payload)
        if sent % 20 == 0:
            await flush_all(nc)
            while not healthy._deliveries.empty():
                assert await healthy.receive(5) == payload.decode()
                received += 1
            if metric_value(node, "prism_slow_consumer_closes_total") >= 1:
                break
    assert metric_value(node, "prism_slow_consumer_closes_total") == 1
    await eventually(lambda: welcome["conn"] not in node.hub.conns, what="the stalled conn to be removed")
    while received < sent:
        assert await healthy.receive(10) == payload.decode()
        received += 1
    assert healthy.close_code is None
    # It never reads, so it never sees the close frame (the node dropped TCP after close_timeout).
    stalled.transport.abort()
    await stalled.wait_closed()
    await healthy.close()


async def test_oversized_client_message_closes_with_1009(make_node: NodeFactory) -> None:
    node = await make_node(max_message_bytes=1024)
    async with await PrismClient.connect(ws_url(node)) as client:
        await client.send("y" * 2048)
        assert await client.wait_closed() == CloseCode.MESSAGE_TOO_BIG


def http_get(node: Node, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


async def test_health_ready_metrics_and_unknown_paths(make_node: NodeFactory) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node), user="m"):
        assert await asyncio.to_thread(http_get, node, "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(http_get, node, "/readyz") == (200, "ready\n")
        status, body = await asyncio.to_thread(http_get, node, "/metrics")
        assert status == 200
        assert 'prism_connections{node="node1",route="/ws"} 1.0' in body
        assert "prism_build_info" in body
        status, body = await asyncio.to_thread(http_get, node, "/nope")
        assert status == 404
        assert "/ws" in body


def etag_of(node: Node, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.port}{path}", timeout=5) as response:
        return str(response.headers["ETag"])


def twice_on_one_connection(port: int, path: str, headers: dict[str, str]) -> list[tuple[int, str | None]]:
    """GET ``path`` twice through one keep-alive HTTP/1.1 client (http.client reuses its connection unless
    the answer says ``Connection: close``): (status, Connection header) of each answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        answers = []
        for _ in range(2):
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            answers.append((response.status, response.getheader("Connection")))
        return answers
    finally:
        conn.close()


async def test_every_http_answer_says_connection_close_so_keep_alive_clients_reconnect(
    make_node: NodeFactory,
) -> None:
    """The node closes the TCP connection after every answer but 101, so it must say so: a keep-alive
    client (Node's default agent, scrapers) would otherwise send its next request into a closed
    connection and get "socket hang up"."""
    node = await make_node(console=True, jwt_secret=SECRET, allowed_origins=("https://app.example.com",))
    full = await make_node(max_connections=1)
    etag = await asyncio.to_thread(etag_of, node, "/prism.js")
    cases = [
        (node, "/healthz", {}, 200),
        (node, "/readyz", {}, 200),
        (node, "/metrics", {}, 200),
        (node, "/prism.js", {}, 200),
        (node, "/prism.js", {"If-None-Match": etag}, 304),
        (node, "/prism.d.ts", {}, 200),
        (node, "/", {}, 200),
        (node, "/console/config.json", {}, 200),
        (node, "/nope", {}, 404),
        (node, "/ws", {}, 401),
        (node, "/ws", {"Origin": "https://evil.example"}, 403),
        (full, "/ws", {}, 503),
    ]
    async with await PrismClient.connect(ws_url(full)):
        for target, path, headers, status in cases:
            answers = await asyncio.to_thread(twice_on_one_connection, target.port, path, headers)
            assert answers == [(status, "close")] * 2, (path, headers)


def readyz_identity(node: Node) -> tuple[int, str | None, str | None]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/readyz", timeout=5) as response:
            status, headers = int(response.status), response.headers
    except urllib.error.HTTPError as exc:
        status, headers = int(exc.code), exc.headers
    return status, headers.get("Prism-Node"), headers.get("Prism-Pid")


async def test_readyz_names_the_node_and_the_process_that_answers(make_node: NodeFactory) -> None:
    node = await make_node(node_id="gw-7")
    assert await asyncio.to_thread(readyz_identity, node) == (200, "gw-7", str(os.getpid()))


async def test_invalid_user_is_refused_before_the_upgrade(make_node: NodeFactory) -> None:
    node = await make_node()
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(node, user="bad.user"))
    assert refused.value.response.status_code == 400
    assert b"user id" in refused.value.response.body


async def test_draining_node_is_unready_and_asks_clients_to_reconnect(make_node: NodeFactory) -> None:
    node = await make_node(drain_seconds=2.0)
    first = await PrismClient.connect(ws_url(node))
    second = await PrismClient.connect(ws_url(node))
    drain = asyncio.ensure_future(node.drain())
    # Closes are spread over the window: one client now, the other a second later.
    closed, _ = await asyncio.wait(
        [asyncio.ensure_future(c.wait_closed()) for c in (first, second)], return_when="FIRST_COMPLETED"
    )
    assert [t.result() for t in closed] == [CloseCode.SERVICE_RESTART]
    still_open = second if first.close_code else first
    assert await asyncio.to_thread(http_get, node, "/readyz") == (503, "not ready: draining\n")
    assert await asyncio.to_thread(readyz_identity, node) == (503, "node1", str(os.getpid()))
    assert await asyncio.to_thread(http_get, node, "/healthz") == (200, "ok\n")
    status, _ = await asyncio.to_thread(http_get, node, "/metrics")
    assert status == 200
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(node))
    assert refused.value.response.status_code == 503
    assert still_open.close_code is None
    assert await still_open.wait_closed() == CloseCode.SERVICE_RESTART
    await drain
    assert not node.is_ready()
    with pytest.raises(ConnectionRefusedError):
        await connect(ws_url(node), open_timeout=2)


async def test_stop_during_a_drain_waits_for_it_before_leaving_nats(make_node: NodeFactory) -> None:
    node = await make_node(drain_seconds=1.0)
    clients = [await PrismClient.connect(ws_url(node)) for _ in range(2)]
    drain = asyncio.ensure_future(node.drain())
    await eventually(lambda: node.state is State.DRAINING, what="the drain to start")
    await asyncio.gather(node.stop(), node.stop())  # both return once everything has stopped
    assert drain.done()
    assert not node.hub.conns
    assert node.state is State.STOPPED
    for client in clients:
        assert await client.wait_closed() == CloseCode.SERVICE_RESTART
