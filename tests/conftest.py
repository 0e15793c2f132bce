"""Fixtures shared by every layer: a real nats-server, gateway nodes on free ports, backend clients."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient

from gateway.config import GatewayConfig
from gateway.embedded_nats import NatsServer
from gateway.node import Node
from shared.backend import PrismBackend

NodeFactory = Callable[..., Awaitable[Node]]


def _docker_reachable() -> bool:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return bool(os.environ.get("DOCKER_HOST"))
    path = host.removeprefix("unix://")
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


class _ContainerNats:
    """nats-server in a container via testcontainers, used only when a Docker engine answers."""

    def __init__(self) -> None:
        from testcontainers.core.container import DockerContainer

        self.container = DockerContainer("nats:2.11").with_command("-js").with_exposed_ports(4222)
        self.container.start()
        host = self.container.get_container_host_ip()
        self.url = f"nats://{host}:{self.container.get_exposed_port(4222)}"

    def stop(self) -> None:
        self.container.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[Any]:
    """A fresh NATS with JetStream per test: a local nats-server process, or a container if Docker runs
    and ``PRISM_TEST_DOCKER=1``."""
    if os.environ.get("PRISM_TEST_DOCKER") == "1" and _docker_reachable():
        container = _ContainerNats()
        yield container
        container.stop()
        return
    server = NatsServer.start(tmp_path / "nats", log_file=tmp_path / "nats.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def make_node(nats_server: Any) -> AsyncIterator[NodeFactory]:
    """Start gateway nodes in this test's event loop on free ports; all are stopped at teardown."""
    nodes: list[Node] = []

    async def start(**overrides: Any) -> Node:
        settings: dict[str, Any] = {
            "nats_url": nats_server.url,
            "host": "127.0.0.1",
            "port": 0,
            "node_id": f"node{len(nodes) + 1}",
            "drain_seconds": 0.0,
            "presence_storage": "memory",
        }
        settings.update(overrides)
        node = Node(GatewayConfig(**settings))
        nodes.append(node)
        await node.start()
        return node

    yield start
    for node in reversed(nodes):
        await node.stop()


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
def backend(nc: NatsClient) -> PrismBackend:
    return PrismBackend(nc)


def ws_url(node: Node, route: str = "/ws", **query: str) -> str:
    url = f"ws://127.0.0.1:{node.port}{route}"
    if query:
        url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    return url
