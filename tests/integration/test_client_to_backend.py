"""Client -> backend: events, requests with replies, raw messages, lifecycle events, error frames."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from shared.client import PrismClient
from shared.errors import RequestFailed
from shared.nats_connection import flush_all
from tests.conftest import NodeFactory, ws_url


async def collect(nc: NatsClient, subject: str, queue: str = "") -> asyncio.Queue[Msg]:
    received: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await received.put(msg)

    await nc.subscribe(subject, queue=queue, cb=on_msg)
    await flush_all(nc)
    return received


async def test_event_is_published_on_its_subject_with_identity_headers(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node()
    events = await collect(nc, "client.event.chat.>", queue="chat-service")
    async with await PrismClient.connect(ws_url(node), user="alice") as client:
        await client.send_event("chat.send", {"text": "hi"})
        msg = await asyncio.wait_for(events.get(), 5)
        assert msg.subject == "client.event.chat.send"
        assert orjson.loads(msg.data) == {"text": "hi"}
        assert msg.headers is not None
        assert msg.headers["Prism-Conn"] == client.conn_id
        assert msg.headers["Prism-User"] == "alice"
        assert msg.headers["Prism-Node"] == "node1"
        assert msg.headers["Prism-Route"] == "/ws"
        assert msg.headers["Prism-Event"] == "chat.send"
        assert msg.headers["Prism-Remote"].startswith("127.0.0.1:")


async def test_request_reply_round_trip_through_a_queue_group(make_node: NodeFactory, nc: NatsClient) -> None:
    node = await make_node()

    async def echo(msg: Msg) -> None:
        body = orjson.loads(msg.data)
        await msg.respond(orjson.dumps({"echo": body, "conn": msg.headers and msg.headers["Prism-Conn"]}))

    await nc.subscribe("client.event.echo", queue="echo-service", cb=echo)
    await flush_all(nc)
    async with await PrismClient.connect(ws_url(node)) as client:
        answers = await asyncio.gather(*(client.request("echo", {"n": i}) for i in range(10)))
        assert [a["echo"]["n"] for a in answers] == list(range(10))
        assert answers[0]["conn"] == client.conn_id


async def test_request_without_a_backend_gets_no_responders_error(make_node: NodeFactory) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node)) as client:
        with pytest.raises(RequestFailed) as failure:
            await client.request("nobody.home", {})
        assert failure.value.code == "no_responders"


async def test_request_that_times_out_gets_timeout_error(make_node: NodeFactory, nc: NatsClient) -> None:
    node = await make_node(request_timeout=0.3)

    async def silent(msg: Msg) -> None:
        return None

    await nc.subscribe("client.event.slow", cb=silent)
    await flush_all(nc)
    async with await PrismClient.connect(ws_url(node)) as client:
        with pytest.raises(RequestFailed) as failure:
            await client.request("slow", {})
        assert failure.value.code == "timeout"


async def test_non_json_reply_is_wrapped_as_string_or_base64(make_node: NodeFactory, nc: NatsClient) -> None:
    node = await make_node()

    async def answer(msg: Msg) -> None:
        await msg.respond(b"plain words" if msg.subject.endswith("text") else b"\xff\x00")

    await nc.subscribe("client.event.raw.*", cb=answer)
    await flush_all(nc)
    async with await PrismClient.connect(ws_url(node)) as client:
        assert await client.request("raw.text") == "plain words"
        assert await client.request("raw.bytes") == "/wA="


async def test_raw_text_and_binary_frames_go_to_client_message(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node()
    messages = await collect(nc, "client.message")
    async with await PrismClient.connect(ws_url(node), user="bob") as client:
        await client.send("just text")
        await client.send(b"\x00\x01binary")
        text = await asyncio.wait_for(messages.get(), 5)
        binary = await asyncio.wait_for(messages.get(), 5)
    assert (text.data, text.headers and text.headers["Prism-Frame"]) == (b"just text", "text")
    assert (binary.data, binary.headers and binary.headers["Prism-Frame"]) == (b"\x00\x01binary", "binary")
    assert text.headers is not None
    assert text.headers["Prism-User"] == "bob"


async def test_connect_and_disconnect_lifecycle_events(make_node: NodeFactory, nc: NatsClient) -> None:
    node = await make_node()
    connects = await collect(nc, "client.connect")
    disconnects = await collect(nc, "client.disconnect")
    client = await PrismClient.connect(ws_url(node), user="carol")
    connect: dict[str, Any] = orjson.loads((await asyncio.wait_for(connects.get(), 5)).data)
    assert connect["conn"] == client.conn_id
    assert (connect["user"], connect["node"], connect["route"]) == ("carol", "node1", "/ws")
    assert connect["remote"].startswith("127.0.0.1:")
    assert connect["connected_at"].endswith("Z")
    await client.join("room-a")
    await client.close(1000, "bye")
    gone: dict[str, Any] = orjson.loads((await asyncio.wait_for(disconnects.get(), 5)).data)
    assert gone["conn"] == client.conn_id
    assert gone["code"] == 1000
    assert gone["rooms"] == ["room-a"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"prism":"join","room":"a.b","ref":1}', "invalid_room"),
        ('{"prism":"join","room":"*","ref":1}', "invalid_room"),
        ('{"prism":"join","room":"has space","ref":1}', "invalid_room"),
        ('{"prism":"dance","ref":1}', "unknown_command"),
        ('{"prism":"join", broken', "invalid_json"),
        ('{"event":"chat.>","ref":1}', "invalid_event"),
        ('{"event":"a..b","ref":1}', "invalid_event"),
        ('{"prism":"join","room":"ok","ref":true}', "invalid_ref"),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_connection_goes_on(
    make_node: NodeFactory, frame: str, code: str
) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node)) as client:
        await client.send(frame)
        error = await asyncio.wait_for(client.errors.get(), 5)
        assert error["prism"] == "error"
        assert error["code"] == code
        assert error["message"]
        await client.join("still-works")


async def test_too_many_rooms_is_refused(make_node: NodeFactory) -> None:
    node = await make_node(max_rooms_per_conn=2)
    async with await PrismClient.connect(ws_url(node)) as client:
        await client.join("r1")
        await client.join("r2")
        with pytest.raises(RequestFailed) as failure:
            await client.join("r3")
        assert failure.value.code == "too_many_rooms"
