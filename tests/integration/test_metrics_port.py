"""``PRISM_METRICS_PORT``: /metrics on an internal port of its own, never on the public WebSocket port.

Real nodes on a real nats-server, real HTTP over loopback."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from gateway.config import GatewayConfig
from gateway.node import Node
from loadtest.targets.base import free_port
from shared.client import PrismClient
from shared.errors import ConfigError
from shared.lifecycle import State
from tests.conftest import NodeFactory, ws_url


def http_request(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    return await asyncio.to_thread(http_request, port, path, method)


async def test_metrics_are_served_only_on_the_metrics_port(make_node: NodeFactory) -> None:
    metrics_port = free_port()
    node = await make_node(metrics_port=metrics_port)
    assert node.metrics_server.port == metrics_port
    async with await PrismClient.connect(ws_url(node), user="m"):
        status, body = await get(metrics_port, "/metrics")
        assert status == 200
        assert 'prism_connections{node="node1",route="/ws"} 1.0' in body
        assert "prism_build_info" in body
        # The public port keeps its probes and WebSocket routes, but has no /metrics any more.
        status, body = await get(node.port, "/metrics")
        assert status == 404
        assert body == "no route '/metrics'; WebSocket routes: ['/ws']\n"
        assert await get(node.port, "/healthz") == (200, "ok\n")
        assert await get(node.port, "/readyz") == (200, "ready\n")
        # The metrics port answers the probes too (as the notification service's port does), nothing else.
        assert await get(metrics_port, "/healthz") == (200, "ok\n")
        assert await get(metrics_port, "/readyz") == (200, "ready\n")
        assert await get(metrics_port, "/ws") == (404, "no route '/ws'; try /metrics, /healthz or /readyz\n")
        assert await get(metrics_port, "/metrics", "HEAD") == (200, "")
        assert await get(metrics_port, "/metrics", "POST") == (405, "only GET\n")


async def test_without_a_metrics_port_metrics_stay_on_the_main_port(make_node: NodeFactory) -> None:
    node = await make_node()
    assert node.config.metrics_port == 0
    status, body = await get(node.port, "/metrics")
    assert status == 200
    assert "prism_ready" in body


async def test_metrics_port_answers_through_the_drain_and_closes_on_stop(make_node: NodeFactory) -> None:
    metrics_port = free_port()
    node = await make_node(metrics_port=metrics_port)
    await node.drain()
    status, body = await get(metrics_port, "/metrics")
    assert status == 200
    assert 'prism_ready{node="node1"} 0.0' in body
    assert await get(metrics_port, "/readyz") == (503, "not ready: draining\n")
    await node.stop()
    assert node.state is State.STOPPED
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", metrics_port), 2):
        pass


async def test_a_busy_metrics_port_fails_the_start_with_one_clear_error(nats_server: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = GatewayConfig(nats_url=nats_server.url, host="127.0.0.1", port=0, metrics_port=port)
        node = Node(config)
        try:
            with pytest.raises(ConfigError) as caught:
                await node.start()
        finally:
            await node.stop()
    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{port}: the port is in use by another process "
        "(choose another with --metrics-port or PRISM_METRICS_PORT)"
    )
    assert node._bus is None  # it failed before touching NATS
