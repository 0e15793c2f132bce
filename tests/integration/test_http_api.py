"""The HTTP API against real nodes, walked from docs/openapi.yaml: every operation the document lists is
called, with every response it documents (but 503 and 504, which need a broken NATS), and each answer's
status must be documented for that operation and its body must validate against the documented schema.
The API's routes and the document's must be the same set. The clients are on node1, the API requests
go to node2: any node answers."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from yarl import URL

from gateway.config import GatewayConfig
from gateway.embedded_nats import NatsServer
from gateway.node import Node
from loadtest.targets.base import free_port
from shared.client import PrismClient
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
KEY = "test-api-key-" + "k" * 30
AUTH = {"Authorization": f"Bearer {KEY}"}
GONE = "node1.gone00000000"
NOT_WALKED = {"503", "504"}  # they need NATS to fail; tested in test_http_api_failures below


@cache
def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(DOC.read_text())
    return document


def operations() -> dict[str, tuple[str, str]]:
    """operationId -> (METHOD, path template)."""
    return {
        op["operationId"]: (method.upper(), path)
        for path, item in spec()["paths"].items()
        for method, op in item.items()
    }


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/components/")
        kind, _, key = name.partition("/")
        node = spec()["components"][kind][key]
    return node


def response_schema(operation: str, status: str) -> dict[str, Any]:
    method, path = operations()[operation]
    documented = spec()["paths"][path][method.lower()]["responses"]
    assert status in documented, f"{operation} answered {status}, which docs/openapi.yaml does not list"
    response = resolve(documented[status])
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def check(operation: str, status: int, body: Any, headers: Any) -> None:
    schema = response_schema(operation, str(status))
    root = {"components": spec()["components"], "allOf": [schema]}
    errors = sorted(Draft202012Validator(root).iter_errors(body), key=str)
    assert not errors, f"{operation} {status}: {body!r} does not match the schema: {errors[0].message}"
    assert headers["Content-Type"].startswith("application/json")
    if status == 401:
        assert headers["WWW-Authenticate"] == 'Bearer realm="prism-api"'


@dataclass
class Api:
    session: aiohttp.ClientSession
    base: str
    seen: set[tuple[str, str]]

    async def call(
        self,
        operation: str,
        expect: int,
        body: bytes | None = None,
        auth: bool = True,
        content_type: str = "text/plain",
        frame: str = "",
        **params: str,
    ) -> Any:
        method, template = operations()[operation]
        path = template.format(**{k: v.replace(" ", "%20") for k, v in params.items()})
        headers = {"Content-Type": content_type, **(AUTH if auth else {})}
        if frame:
            headers["Prism-Frame"] = frame
        data = (
            io.BytesIO(body) if body is not None and len(body) > 1 << 20 else body
        )  # aiohttp warns otherwise
        async with self.session.request(
            method, URL(self.base + path, encoded=True), data=data, headers=headers
        ) as response:
            answer = orjson.loads(await response.read())
            assert response.status == expect, f"{operation} {path}: {response.status} {answer}"
            check(operation, response.status, answer, response.headers)
            self.seen.add((operation, str(response.status)))
            return answer


@pytest.fixture
async def nodes(make_node: NodeFactory) -> tuple[Node, Node]:
    node1 = await make_node(node_id="node1")
    node2 = await make_node(node_id="node2", api_port=free_port(), api_keys=(KEY,))
    return node1, node2


@pytest.fixture
async def api(nodes: tuple[Node, Node]) -> AsyncIterator[Api]:
    _, node2 = nodes
    assert node2.api is not None
    async with aiohttp.ClientSession() as session:
        yield Api(session, f"http://127.0.0.1:{node2.api.port}", set())


def test_the_document_is_valid_openapi_3_1() -> None:
    validate_openapi(spec())
    assert spec()["openapi"].startswith("3.1")


def test_the_api_serves_exactly_the_documented_operations(nodes: tuple[Node, Node]) -> None:
    _, node2 = nodes
    assert node2.api is not None
    served = {
        (route.method, route.resource.canonical)
        for route in node2.api.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert served == set(operations().values())
    named = {route.name for route in node2.api.app.router.routes() if route.method != "HEAD"}
    assert named == set(operations())  # metrics label operations by the same names


async def test_every_documented_operation_and_response(nodes: tuple[Node, Node], api: Api) -> None:
    node1, _ = nodes
    big = b"x" * ((1 << 20) + 1)
    async with (
        await PrismClient.connect(ws_url(node1), user="alice") as alice,
        await PrismClient.connect(ws_url(node1), user="bob") as bob,
    ):
        await alice.join("lobby")
        a = alice.conn_id
        for operation in operations():
            await api.call(operation, 401, auth=False, conn=a, user="alice", room="lobby")

        # publish
        assert await api.call("publish_conn", 200, b"hi", conn=a) == {"node": "node1", "delivered": 1}
        assert await alice.receive(5) == "hi"
        await api.call("publish_conn", 200, b"AB", frame="binary", conn=a)
        assert await alice.receive(5) == b"AB"
        await api.call("publish_conn", 200, b"{}", content_type="application/octet-stream", conn=a)
        assert await alice.receive(5) == "{}"  # the Content-Type does not matter
        await api.call("publish_conn", 400, b"x", conn="no-dot")
        gone = await api.call("publish_conn", 410, b"x", conn=GONE)
        assert gone["error"] == "gone"
        await api.call("publish_conn", 410, b"x", conn="node9.deadnode")  # no such node at all
        await api.call("publish_conn", 413, big, conn=a)
        assert (await api.call("publish_user", 200, b"u", user="alice"))["delivered"] == 1
        assert await api.call("publish_user", 200, b"u", user="nobody") == {"delivered": 0, "receipts": []}
        await api.call("publish_user", 400, b"u", user="a b")
        await api.call("publish_user", 413, big, user="alice")
        assert (await api.call("publish_room", 200, b"r", room="lobby"))["delivered"] == 1
        await api.call("publish_room", 400, b"r", room="a b")
        await api.call("publish_room", 413, big, room="lobby")
        assert (await api.call("broadcast", 200, b"all"))["delivered"] == 2
        await api.call("broadcast", 413, big)
        assert [await alice.receive(5) for _ in range(3)] == ["u", "r", "all"]

        batch = {
            "messages": [
                {"to": "user", "id": "alice", "data": "b1"},
                {"to": "conn", "id": GONE, "data": "b2"},
                {"to": "room", "id": "lobby", "data_base64": base64.b64encode(b"b3").decode()},
                {"to": "conn", "id": a, "data": "b4"},
            ]
        }
        results = (await api.call("batch", 200, orjson.dumps(batch), content_type="application/json"))[
            "results"
        ]
        assert [r["status"] for r in results] == [200, 410, 200, 200]
        assert sorted([await alice.receive(5) for _ in range(3)], key=str) == [b"b3", "b1", "b4"]
        bad = {"messages": [{"to": "user", "id": "alice", "data": "x"}, {"to": "moon", "data": "x"}]}
        await api.call("batch", 400, orjson.dumps(bad), content_type="application/json")
        huge = orjson.dumps({"messages": [{"to": "broadcast", "data": "y" * (5 << 20)}]})
        await api.call("batch", 413, huge, content_type="application/json")

        # control
        joined = await api.call("join_conn", 200, conn=a, room="vip")
        assert joined == {"ok": True, "node": "node1", "conns": 1, "conn": a}
        await api.call("join_conn", 400, conn=a, room="a.b")
        await api.call("join_conn", 410, conn=GONE, room="vip")
        await api.call("leave_conn", 200, conn=a, room="vip")
        await api.call("leave_conn", 400, conn=a, room="a b")
        await api.call("leave_conn", 410, conn=GONE, room="vip")
        assert (await api.call("join_user", 200, user="alice", room="vip"))["conns"] == 1
        await api.call("join_user", 400, user="alice", room="a b")
        assert (await api.call("leave_user", 200, user="alice", room="vip"))["conns"] == 1
        await api.call("leave_user", 400, user="a b", room="vip")
        assert await api.call("close_user", 200, b"", user="nobody") == {"conns": 0, "replies": []}
        await api.call("close_user", 400, b'{"code":999}', content_type="application/json", user="alice")
        await api.call("close_conn", 400, b'{"code":999}', content_type="application/json", conn=a)
        await api.call("close_conn", 410, b"", conn=GONE)

        # presence
        presence = await api.call("user_presence", 200, user="alice")
        assert presence["online"] is True
        await api.call("user_presence", 400, user="a b")
        assert (await api.call("room_presence", 200, room="lobby"))["users"] == ["alice"]
        await api.call("room_presence", 400, room="a b")
        online = await api.call("online", 200, b'{"users":["alice","zed"]}', content_type="application/json")
        assert online == {"online": {"alice": True, "zed": False}}
        await api.call("online", 400, b'{"users":"alice"}', content_type="application/json")
        assert (await api.call("cluster", 200))["totals"]["nodes"] == 2

        # the kicks last
        closed = await api.call(
            "close_conn",
            200,
            b'{"code":4500,"reason":"kicked"}',
            content_type="application/json",
            conn=bob.conn_id,
        )
        assert closed["conns"] == 1
        assert await bob.wait_closed() == 4500
        kicked = await api.call(
            "close_user", 200, b'{"reason":"bye"}', content_type="application/json", user="alice"
        )
        assert kicked["conns"] == 1
        assert await alice.wait_closed() == 4500
    documented = {
        (op, status)
        for op, (method, path) in operations().items()
        for status in spec()["paths"][path][method.lower()]["responses"]
        if status not in NOT_WALKED
    }
    assert documented - api.seen == set(), "documented responses the walk never produced"
    _, node2 = nodes
    gone = {"node": "node2", "operation": "publish_conn", "status": "410"}
    assert node2.registry.get_sample_value("prism_api_requests_total", gone) == 2


async def test_unknown_paths_and_methods_answer_json_and_need_credentials(api: Api) -> None:
    async with api.session.get(api.base + "/v1/nope") as response:
        assert response.status == 401
    async with api.session.get(api.base + "/v1/nope", headers=AUTH) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"
    async with api.session.get(api.base + "/v1/broadcast", headers=AUTH) as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"


async def test_the_api_is_unavailable_without_nats_and_says_so(tmp_path: Path) -> None:
    first = NatsServer.start(tmp_path / "nats", log_file=tmp_path / "nats.log")
    config = GatewayConfig(
        nats_url=first.url, host="127.0.0.1", port=0, node_id="n1", api_port=free_port(), api_keys=(KEY,)
    )
    node = Node(config)
    await node.start()
    assert node.api is not None
    url = f"http://127.0.0.1:{node.api.port}/v1/cluster"
    try:
        first.kill()
        await eventually(lambda: not node.is_ready(), what="the node to see NATS gone")
        async with aiohttp.ClientSession() as session, session.get(url, headers=AUTH) as response:
            body = await response.json()
            check("cluster", response.status, body, response.headers)
            assert response.status == 503
            assert body == {"error": "unavailable", "message": "node not available: NATS disconnected"}
            assert response.headers["Retry-After"] == "1"
        # NATS back on its port: the node reconnects, and the API answers again
        second = NatsServer.start(
            tmp_path / "nats", log_file=tmp_path / "nats.log", client_port=first.client_port
        )
        try:
            await eventually(node.is_ready, timeout=20, what="the node to reconnect")
            async with aiohttp.ClientSession() as session, session.get(url, headers=AUTH) as response:
                assert response.status == 200
        finally:
            await node.stop()
            second.stop()
    finally:
        first.stop()
