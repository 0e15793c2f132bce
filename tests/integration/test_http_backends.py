"""HTTP backends against real HTTP servers: connect decisions, events, requests, disconnect notifications,
signatures, retries, limits and the error frames clients get; NATS backends beside them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.node import Node
from loadtest.targets.base import free_port
from shared.backend import PrismBackend
from shared.client import PrismClient
from shared.errors import RequestFailed
from shared.nats_connection import flush_all
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.integration.http_backend_support import SECRET, RecordingBackend, reply, routes_file

pytestmark = pytest.mark.usefixtures("signing_secret")


@pytest.fixture
def signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HTTP_SECRET", SECRET)


@pytest.fixture
async def http() -> AsyncIterator[RecordingBackend]:
    backend = await RecordingBackend().start()
    yield backend
    await backend.stop()


def app(http: RecordingBackend, **extra: Any) -> dict[str, Any]:
    return {
        "name": "app",
        "event_url": http.url("event"),
        "events": ["app.*"],
        "secret_env": "TEST_HTTP_SECRET",
        "retry_backoff": 0.01,
    } | extra


async def node_with(
    make_node: NodeFactory, tmp_path: Path, *backends: dict[str, Any], **settings: Any
) -> Node:
    return await make_node(http_backends_file=routes_file(tmp_path, *backends), **settings)


async def test_a_request_is_answered_by_the_http_backend_and_other_events_still_go_to_nats(
    make_node: NodeFactory, tmp_path: Path, http: RecordingBackend, nc: NatsClient
) -> None:
    node = await node_with(make_node, tmp_path, app(http))

    async def nats_echo(msg: Msg) -> None:
        await msg.respond(b'{"from":"nats"}')

    await nc.subscribe("client.event.echo", cb=nats_echo)
    await nc.subscribe("client.event.app.>", cb=nats_echo)  # never reached: app.* goes over HTTP
    await flush_all(nc)
    async with await PrismClient.connect(ws_url(node), user="alice") as client:
        assert await client.request("app.echo", {"n": 1}) == {"n": 1}
        assert await client.request("echo", {}) == {"from": "nats"}
        http.then("event", reply(200, b"plain text"))
        assert await client.request("app.text") == "plain text"
        http.then("event", reply(204))
        assert await client.request("app.empty") is None
    call = http.of("event")[0]
    assert call.signed
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["User-Agent"].startswith("prism-gateway/")
    assert call.body | {"id": "x", "remote": "x"} == {
        "type": "event",
        "id": "x",
        "event": "app.echo",
        "request": True,
        "conn": client.conn_id,
        "user": "alice",
        "node": "node1",
        "route": "/ws",
        "remote": "x",
        "claims": {},
        "data": {"n": 1},
    }
    assert len({c.body["id"] for c in http.calls}) == len(http.calls)


async def test_events_reach_the_backend_in_the_order_the_client_sent_them(
    make_node: NodeFactory, tmp_path: Path, http: RecordingBackend
) -> None:
    node = await node_with(make_node, tmp_path, app(http))
    async with await PrismClient.connect(ws_url(node)) as client:
        for i in range(30):
            await client.send_event("app.tick", {"i": i})
        calls = await http.wait_for("event", 30)
    assert [c.body["data"]["i"] for c in calls] == list(range(30))
    assert {c.body["request"] for c in calls} == {False}


async def test_the_connect_backend_names_the_user_joins_rooms_and_gives_claims(
    make_node: NodeFactory, tmp_path: Path, http: RecordingBackend, backend: PrismBackend
) -> None:
    node = await node_with(
        make_node, tmp_path, app(http, connect_url=http.url("connect"), forward_headers=["X-Session"])
    )
    http.then(
        "connect", reply(200, {"allow": True, "user": "bob", "rooms": ["lobby"], "claims": {"plan": "pro"}})
    )
    async with await PrismClient.connect(
        ws_url(node, session="s1", token="never-forwarded"), additional_headers={"X-Session": "abc"}
    ) as client:
        assert client.welcome["user"] == "bob"
        receipts = await backend.deliver("room.lobby", "hello lobby")
        assert receipts == [{"node": "node1", "delivered": 1}]
        assert (await client.receive(5)) == "hello lobby"
        await client.request("app.who")
    (connect_call,) = http.of("connect")
    assert connect_call.signed
    assert connect_call.body["type"] == "connect"
    assert connect_call.body["user"] is None
    assert connect_call.body["query"] == {"session": "s1"}
    assert connect_call.body["headers"] == {"X-Session": "abc"}
    assert http.of("event")[0].body["claims"] == {"plan": "pro"}
    assert http.of("event")[0].body["user"] == "bob"


@pytest.mark.parametrize(
    ("answer", "code", "reason"),
    [
        (reply(200, {"allow": False, "reason": "banned"}), 4503, "banned"),
        (reply(200, {"allow": False, "code": 4501, "reason": "log in first"}), 4501, "log in first"),
        (reply(403, b"members only"), 4503, "members only"),
        (reply(401), 4501, "unauthorized"),
        (reply(200, b"not json"), 1011, "connect backend sent an invalid answer"),
        (reply(500), 1013, "connect backend unavailable"),
    ],
)
async def test_a_refused_connection_is_closed_before_its_welcome(
    make_node: NodeFactory, tmp_path: Path, http: RecordingBackend, answer: Any, code: int, reason: str
) -> None:
    node = await node_with(make_node, tmp_path, app(http, connect_url=http.url("connect"), retries=0))
    http.then("connect", answer)
    async with connect(ws_url(node)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, reason)
    await eventually(lambda: len(node.hub.conns) == 0, what="no connection registered")


async def test_an_unreachable_connect_backend_closes_with_try_again_later(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/connect"
    node = await node_with(
        make_node, tmp_path, {"name": "gone", "connect_url": dead, "unsigned": True, "retries": 1}
    )
    async with connect(ws_url(node)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1013


async def test_a_disconnect_notification_is_retried_until_the_backend_takes_it(
    make_node: NodeFactory, tmp_path: Path, http: RecordingBackend
) -> None:
    node = await node_with(make_node, tmp_path, app(http, disconnect_url=http.url("disconnect")))
    http.then("disconnect", reply(503), reply(502))
    async with await PrismClient.connect(ws_url(node), user="carol") as client:
        await client.join("lobby")
        conn = client.conn_id
        await client.close(4000, "bye")
    calls = await http.wait_for("disconnect", 3)
    assert len({c.body["id"] for c in calls}) == 1  # one notification, tried three times
    body = calls[-1].body
    assert (body["conn"], body["user"], body["code"], body["reason"], body["rooms"]) == (
        conn,
        "carol",
        4000,
        "bye",
        ["lobby"],
    )
    assert body["connected_at"] < body["disconnected_at"]
    await asyncio.sleep(0)
    assert len(http.of("disconnect")) == 3


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (
            reply(500, b"Traceback (most recent call last)"),
            "backend_error",
            "HTTP backend 'app' failed on 'app.x' (500)",
        ),
        (
            reply(422, {"message": "text too long"}),
            "backend_error",
            "HTTP backend 'app' refused 'app.x' (422): text too long",
        ),
        (reply(403, b"not your room"), "forbidden", "not your room"),
        (reply(503), "backend_unavailable", "HTTP backend 'app' answered 503"),
        (reply(200, b"{}", delay=2.0), "timeout", "no answer from HTTP backend 'app' to 'app.x' in 0.3s"),
    ],
)
async def test_a_failed_request_gets_a_clear_error_frame_and_is_not_retried(
    make_node: NodeFactory, tmp_path: Path, http: RecordingBackend, answer: Any, code: str, message: str
) -> None:
    node = await node_with(make_node, tmp_path, app(http, timeout=0.3))
    http.then("event", answer, answer, answer)
    async with await PrismClient.connect(ws_url(node)) as client:
        with pytest.raises(RequestFailed) as failed:
            await client.request("app.x", {})
        assert (failed.value.code, failed.value.message) == (code, message)
    assert len(http.of("event")) == 1  # a request may have side effects: never sent twice


async def test_an_idempotent_request_is_retried_and_an_event_failure_is_reported(
    make_node: NodeFactory, tmp_path: Path, http: RecordingBackend
) -> None:
    node = await node_with(make_node, tmp_path, app(http, idempotent_events=["app.get"]))
    http.then("event", reply(503), reply(200, {"ok": 1}))
    async with await PrismClient.connect(ws_url(node)) as client:
        assert await client.request("app.get", {}) == {"ok": 1}
        assert len(http.of("event")) == 2
        http.then("event", reply(500))
        await client.send_event("app.fire", {})
        error = await asyncio.wait_for(client.errors.get(), 5)
    assert error["code"] == "backend_error"
    assert error["ref"] is None


async def test_an_unreachable_backend_is_unavailable(make_node: NodeFactory, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/event"
    node = await node_with(
        make_node,
        tmp_path,
        {"name": "gone", "event_url": dead, "events": [">"], "unsigned": True, "retries": 1},
    )
    async with await PrismClient.connect(ws_url(node)) as client:
        with pytest.raises(RequestFailed) as failed:
            await client.request("anything", {})
    assert failed.value.code == "backend_unavailable"
    assert failed.value.message == "cannot reach HTTP backend 'gone': connection refused"


async def test_the_concurrency_limit_and_queue_refuse_what_does_not_fit(
    make_node: NodeFactory, tmp_path: Path, http: RecordingBackend
) -> None:
    node = await node_with(make_node, tmp_path, app(http, max_concurrency=1, max_queue=0))
    http.then("event", reply(200, {"slow": True}, delay=0.5))
    async with await PrismClient.connect(ws_url(node)) as client:
        slow = asyncio.ensure_future(client.request("app.slow", {}))
        await http.wait_for("event")
        with pytest.raises(RequestFailed) as failed:
            await client.request("app.fast", {})
        assert failed.value.code == "backend_unavailable"
        assert "busy" in failed.value.message
        assert await slow == {"slow": True}
    busy = {"node": "node1", "backend": "app", "kind": "request", "outcome": "busy"}
    assert node.registry.get_sample_value("prism_http_backend_calls_total", busy) == 1


async def test_claims_of_a_token_reach_the_connect_backend(
    make_node: NodeFactory, tmp_path: Path, http: RecordingBackend
) -> None:
    secret = "j" * 32
    node = await node_with(make_node, tmp_path, app(http, connect_url=http.url("connect")), jwt_secret=secret)
    token = jwt.encode(
        {"sub": "dave", "exp": int(time.time()) + 60, "team": "red"}, secret, algorithm="HS256"
    )
    http.then("connect", reply(200, {"allow": True, "user": "mallory"}))  # another user than the token's
    async with connect(ws_url(node, token=token)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011
    (call,) = http.of("connect")
    assert call.body["user"] == "dave"
    assert call.body["token_claims"]["team"] == "red"
    assert "token" not in call.body["query"]
    assert orjson.dumps(call.body).count(token.encode()) == 0


async def test_a_polled_backend_delivers_to_the_nodes_own_connections_with_its_cursor(
    make_node: NodeFactory, tmp_path: Path, http: RecordingBackend
) -> None:
    backend = {
        "name": "poller",
        "poll_url": http.url("poll"),
        "poll_interval": 0.05,
        "secret_env": "TEST_HTTP_SECRET",
    }
    node = await node_with(make_node, tmp_path, backend)
    async with await PrismClient.connect(ws_url(node), user="erin") as client:
        gone = "node1.gone00000000"
        http.then(
            "poll",
            reply(
                200,
                {
                    "messages": [{"conn": client.conn_id, "data": "polled"}, {"conn": gone, "data": "x"}],
                    "cursor": "c1",
                },
            ),
            reply(200, b"not json"),  # logged and skipped; the next poll keeps the cursor
            reply(200, {"messages": [{"conn": client.conn_id, "data_base64": "AAE="}]}),
        )
        assert await client.receive(5) == "polled"
        assert await client.receive(5) == b"\x00\x01"
        polls = await http.wait_for("poll", 4)
    assert polls[0].signed
    assert [p.body["cursor"] for p in polls[:4]] == [None, "c1", "c1", "c1"]
    assert {p.body["route"] for p in polls} == {"/ws"}
    assert all(p.body["conns"] == [client.conn_id] for p in polls[:4])  # never polled without a connection
    assert polls[0].body["type"] == "poll"
    assert polls[0].body["node"] == "node1"


async def test_http_requests_count_against_the_connections_inflight_limit(
    make_node: NodeFactory, tmp_path: Path, http: RecordingBackend
) -> None:
    node = await node_with(make_node, tmp_path, app(http), max_inflight_requests=1)
    http.then("event", reply(200, {"slow": True}, delay=0.3))
    async with await PrismClient.connect(ws_url(node)) as client:
        slow = asyncio.ensure_future(client.request("app.slow", {}))
        await http.wait_for("event")
        with pytest.raises(RequestFailed) as failed:
            await client.request("app.more", {})
        assert (failed.value.code, failed.value.message) == (
            "too_many_requests",
            "at most 1 requests at once",
        )
        assert await slow == {"slow": True}
        assert await client.request("app.after", {"n": 2}) == {"n": 2}  # the slot came back
