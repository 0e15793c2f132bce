"""Hostile clients against a real node on real sockets, each next to a healthy client that must keep
receiving its messages on time, with the process's memory bounded (see ``conftest.witnessed``).

Raw clients (:mod:`tests.security.wire`) send what no library would: garbage, bad UTF-8, lying lengths,
fragment and ping floods, headers one byte at a time. ``websockets`` clients send floods of valid frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Opcode

from gateway.node import Node
from shared.close_codes import CloseCode
from shared.nats_connection import flush_all
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.security.conftest import HOSTILE_LIMITS, metric, rejections, witnessed
from tests.security.wire import RawClient, frame, upgrade_request


async def hostile_node(make_node: NodeFactory, **overrides: Any) -> Node:
    return await make_node(**{**HOSTILE_LIMITS, **overrides})


def node_subjects(node: Node) -> set[str]:
    """The subjects of the NATS subscriptions the node holds (its data plane's), without reply inboxes."""
    assert node._bus is not None
    return {subject for subject in node._bus.link.subscriptions if not subject.startswith("_INBOX.")}


async def counted(node: Node, reason: str, expected: float) -> None:
    """Wait until ``prism_rejections_total{reason}`` is ``expected`` (closes are counted as they end)."""
    await eventually(
        lambda: rejections(node, reason) == expected,
        timeout=5,
        what=f"{expected} rejections for {reason} (have {rejections(node, reason)})",
    )


# -- before and during the handshake ---------------------------------------------------------------------


async def test_garbage_before_the_handshake_is_refused_and_dropped(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await hostile_node(make_node)
    junk = random.Random(5).randbytes(8192)
    async with witnessed(node, nc):
        for payload in (
            junk,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + junk[:500],  # a TLS ClientHello on a plain port
            b"GARBAGE / HTTP/9.9\r\n\r\n",
            b"GET /ws HTTP/1.1\r\n" + b"X-Junk: " + b"a" * 20_000 + b"\r\n\r\n",  # one header line too long
            b"GET /ws HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(500)) + b"\r\n",  # too many
            b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",  # request line too long
        ):
            raw = await RawClient.open(node.port)
            raw.send(payload)
            with contextlib.suppress(ConnectionError):
                await raw.drain()
            assert await raw.closed_by_server(), payload[:40]
            await raw.close()
    await eventually(lambda: node.admission.connections == 0 and not node.hub.conns, what="no connections")


async def test_garbage_after_the_handshake_is_a_protocol_error(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await hostile_node(make_node)
    async with witnessed(node, nc):
        for attack in (
            frame(Opcode.TEXT, b"hello", mask=False),  # clients must mask
            frame(0x3, b"x"),  # a reserved opcode
            frame(Opcode.TEXT, b"x", rsv=0b100),  # RSV1 without an extension
            frame(Opcode.CONT, b"x"),  # a continuation of nothing
            frame(Opcode.PING, b"p" * 126),  # control frames carry at most 125 bytes
            frame(Opcode.PING, b"p", fin=False),  # control frames are never fragmented
        ):
            raw = await RawClient.open(node.port)
            await raw.welcome()
            raw.send(attack)
            assert await raw.close_code() == CloseCode.PROTOCOL_ERROR, attack[:4]
            await raw.close()
        # Plain random bytes after the upgrade: whatever they parse as, the node ends it.
        for seed in range(5):
            raw = await RawClient.open(node.port)
            await raw.welcome()
            raw.send(random.Random(seed).randbytes(4096))
            raw.writer.write_eof()
            assert await raw.closed_by_server(), seed
            await raw.close()
    await eventually(lambda: len(node.hub.conns) == 0, what="every hostile connection to be gone")
    await eventually(lambda: rejections(node, "protocol_error") >= 6, what="protocol errors counted")


async def test_invalid_utf8_in_text_frames_closes_with_1007(make_node: NodeFactory, nc: NatsClient) -> None:
    node = await hostile_node(make_node)
    async with witnessed(node, nc):
        for attack in (
            frame(Opcode.TEXT, b'{"prism":"join","room":"\xff\xfe"}'),
            frame(Opcode.TEXT, b"\xed\xa0\x80"),  # a UTF-16 surrogate, not allowed in UTF-8
            frame(Opcode.TEXT, b"ok \xc3", fin=False)
            + frame(Opcode.CONT, b"\x28"),  # broken across fragments
        ):
            raw = await RawClient.open(node.port)
            await raw.welcome()
            raw.send(attack)
            assert await raw.close_code() == CloseCode.INVALID_DATA
            await raw.close()
        # A character split across two fragments is fine.
        raw = await RawClient.open(node.port)
        await raw.welcome()
        raw.send(frame(Opcode.TEXT, b'{"prism":"leave","room":"a","ref":"\xc3', fin=False))
        raw.send(frame(Opcode.CONT, b'\xa9"}'))
        answer = await raw.read_frame()
        assert answer is not None
        assert orjson.loads(answer.payload) == {"prism": "ok", "ref": "\u00e9"}
        await raw.close()
    await counted(node, "invalid_utf8", 3)


async def test_oversized_frames_and_messages_close_with_1009(make_node: NodeFactory, nc: NatsClient) -> None:
    node = await hostile_node(make_node)
    limit = HOSTILE_LIMITS["max_message_bytes"]
    async with witnessed(node, nc):
        for attack in (
            frame(Opcode.TEXT, b"x" * (limit + 1)),
            frame(Opcode.BINARY, b"", length=1 << 40),  # claims a terabyte; nothing follows
            frame(Opcode.BINARY, b"", length=(1 << 63) - 1),
            # fragments that are small one by one but too big together
            frame(Opcode.TEXT, b"y" * 6000, fin=False)
            + frame(Opcode.CONT, b"y" * 6000, fin=False)
            # the third pushes the message over the limit
            + frame(Opcode.CONT, b"y" * 6000),
        ):
            raw = await RawClient.open(node.port)
            await raw.welcome()
            raw.send(attack)
            assert await raw.close_code() == CloseCode.MESSAGE_TOO_BIG
            await raw.close()
    await counted(node, "message_too_big", 4)


async def test_a_fragment_flood_is_closed_with_1009(make_node: NodeFactory, nc: NatsClient) -> None:
    node = await hostile_node(make_node)
    async with witnessed(node, nc):
        # Empty continuation frames never add to the message size: only their number stops them.
        raw = await RawClient.open(node.port)
        await raw.welcome()
        raw.send(frame(Opcode.TEXT, b"a", fin=False) + frame(Opcode.CONT, b"", fin=False) * 10_000)
        assert await raw.close_code() == CloseCode.MESSAGE_TOO_BIG
        await raw.close()
        # Many one-byte fragments: their sum stops them.
        raw = await RawClient.open(node.port)
        await raw.welcome()
        raw.send(frame(Opcode.BINARY, b"a", fin=False) + frame(Opcode.CONT, b"b", fin=False) * 20_000)
        assert await raw.close_code() == CloseCode.MESSAGE_TOO_BIG
        await raw.close()
    await counted(node, "message_too_big", 2)


async def test_a_ping_flood_is_answered_then_closed_with_1008(make_node: NodeFactory, nc: NatsClient) -> None:
    node = await hostile_node(make_node, message_rate=100.0, message_burst=50, rate_violations=100)
    async with witnessed(node, nc):
        raw = await RawClient.open(node.port)
        await raw.welcome()
        raw.send(frame(Opcode.PING, b"p" * 100) * 2000)
        pongs = 0
        code = None
        for _ in range(5000):  # bounded: the pongs and then the close frame
            received = await raw.read_frame()
            assert received is not None, "the node dropped TCP instead of closing"
            if received.opcode == Opcode.PONG:
                pongs += 1
            elif received.opcode == Opcode.CLOSE:
                code = received.close_code
                break
        assert code == CloseCode.POLICY_VIOLATION
        assert 50 <= pongs <= 2000
        await raw.close()
    await counted(node, "rate_abuse", 1)
    await counted(node, "ping_flood", 99)


async def test_pings_from_a_client_that_never_reads_are_not_buffered(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    # No rate limit here, so only the unread-pong guard can stop it.
    node = await hostile_node(make_node, message_rate=0.0)
    async with witnessed(node, nc):
        raw = await RawClient.open(node.port, rcvbuf=4096)
        await raw.welcome()
        batch = frame(Opcode.PING, b"p" * 125) * 1000  # 131 KB of pings, 127 KB of pongs
        for _ in range(400):  # bounded: 52 MB at most
            try:
                raw.send(batch)
                await asyncio.wait_for(raw.drain(), 5)
            except ConnectionError:
                break
            if rejections(node, "unread_pongs"):
                break
        assert rejections(node, "unread_pongs") == 1
        raw.abort()
    assert metric(node, "prism_slow_consumer_closes_total") == 0  # its own limit, not the Flusher's
    await eventually(lambda: len(node.hub.conns) == 0, what="the reader-less connection to be gone")


async def test_ten_thousand_joins_get_bounded_answers_and_no_more_rooms(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await hostile_node(make_node, max_rooms_per_conn=10, message_rate=0.0)
    async with witnessed(node, nc), connect(ws_url(node), compression=None) as ws:
        welcome = orjson.loads(await ws.recv())
        subscriptions = node_subjects(node)
        codes: dict[str, int] = {}

        async def read_answers() -> None:
            for _ in range(10_000):
                answer = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                key = answer.get("code", answer["prism"])
                codes[key] = codes.get(key, 0) + 1

        reading = asyncio.ensure_future(read_answers())
        for i in range(10_000):
            await ws.send(b'{"prism":"join","room":"r%d","ref":%d}' % (i, i), text=True)
        await reading
        assert codes == {"ok": 10, "too_many_rooms": 9_990}
        assert node.hub.conns[welcome["conn"]].rooms == {f"r{i}" for i in range(10)}
        assert node_subjects(node) - subscriptions == {f"room.r{i}" for i in range(10)}
    await counted(node, "too_many_rooms", 9_990)


HOSTILE_ROOMS = [
    "*",
    ">",
    "a.*",
    "lobby.>",
    "a.b",
    "",
    " ",
    "a b",
    "\t",
    "a\nb",
    "x" * 10_000,
    "\u00e9",
    "a\x00",
]
HOSTILE_EVENTS = ["*", ">", "chat.*", "chat.>", "", "a..b", ".a", "a.", "a b", "x" * 10_000, "a." * 9 + "a"]


async def test_hostile_names_get_error_frames_and_never_a_subscription(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await hostile_node(make_node)
    before = node_subjects(node)
    published: list[str] = []

    async def record(msg: Msg) -> None:
        published.append(msg.subject)

    await nc.subscribe("client.>", cb=record)
    await nc.subscribe("room.>", cb=record)
    async with witnessed(node, nc):
        async with connect(ws_url(node), compression=None) as ws:
            await ws.recv()  # welcome
            for ref, room in enumerate(HOSTILE_ROOMS):
                await ws.send(orjson.dumps({"prism": "join", "room": room, "ref": ref}).decode())
                answer = orjson.loads(await ws.recv())
                assert (answer["code"], answer["ref"]) == ("invalid_room", ref), answer
                assert len(answer["message"]) < 200
            for ref, name in enumerate(HOSTILE_EVENTS):
                await ws.send(orjson.dumps({"event": name, "ref": ref, "data": 1}).decode())
                answer = orjson.loads(await ws.recv())
                assert (answer["code"], answer["ref"]) == ("invalid_event", ref), answer
                assert len(answer["message"]) < 200
        for user in ("*", ">", "a.b", "a b", "x" * 1000, "", "a\x00"):
            with pytest.raises(InvalidStatus) as refused:
                await connect(ws_url(node, user=quote(user, safe="")), open_timeout=5)
            assert refused.value.response.status_code == 400
    await flush_all(nc)
    await eventually(lambda: node_subjects(node) == before, what="the node's subscriptions as before")
    assert not any(s.startswith(("client.event.", "room.")) for s in published), published
    assert node.hub.rooms == {}


async def test_deeply_nested_json_is_refused_without_parsing_it_deeper(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await hostile_node(make_node, max_message_bytes=64 * 1024)
    raw_messages: list[bytes] = []

    async def record(msg: Msg) -> None:
        raw_messages.append(msg.data)

    await nc.subscribe("client.message", cb=record)
    async with witnessed(node, nc), connect(ws_url(node), compression=None) as ws:
        await ws.recv()  # welcome
        for depth in (33, 100, 1000, 20_000):
            await ws.send(f'{{"event":"deep","ref":{depth},"data":' + "[" * depth + "]" * depth + "}")
            answer = orjson.loads(await ws.recv())
            assert answer["code"] == "invalid_frame", answer
            assert answer["ref"] in (depth, None)  # past orjson's 1024 levels the ref can't be read
            await ws.send('{"prism":"join","room":"a","x":' + "[" * depth + "]" * depth + "}")
            answer = orjson.loads(await ws.recv())
            assert answer["code"] == "invalid_frame", answer
        await ws.send("[" * 30_000)  # not a command: a raw message for the backends, passed on as is
        await ws.send('{"prism":"leave","room":"a","ref":"after"}')
        assert orjson.loads(await ws.recv()) == {"prism": "ok", "ref": "after"}
    await flush_all(nc)
    await eventually(lambda: raw_messages == [b"[" * 30_000], what="the raw message to reach client.message")
    await counted(node, "json_depth", 8)


async def test_slowloris_handshakes_are_dropped_after_the_handshake_timeout(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await hostile_node(make_node)  # handshake_timeout 0.5 s
    request = upgrade_request()

    async def trickle(raw: RawClient) -> None:
        for byte in request[:-2]:  # never the final CRLF
            try:
                raw.send(bytes([byte]))
                await raw.drain()
            except ConnectionError:
                return
            await asyncio.sleep(0.05)  # the attack's own pace

    async with witnessed(node, nc):
        clients = [await RawClient.open(node.port) for _ in range(20)]
        trickles = [asyncio.ensure_future(trickle(raw)) for raw in clients]
        started = time.monotonic()
        results = await asyncio.gather(*(raw.closed_by_server(timeout=5) for raw in clients))
        took = time.monotonic() - started
        for task in trickles:
            task.cancel()
        await asyncio.gather(*trickles, return_exceptions=True)
        assert all(results)
        assert took < 3, f"slow handshakes were dropped after {took:.1f}s"
        for raw in clients:
            await raw.close()
    await counted(node, "handshake_timeout", 20)
    assert node.admission.connections == 0


async def test_a_client_that_never_reads_is_closed_as_a_slow_consumer(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await hostile_node(make_node)
    async with witnessed(node, nc):
        raw = await RawClient.open(node.port, rcvbuf=4096)
        conn_id = orjson.loads(await raw.welcome())["conn"]
        payload = b"z" * 16_384
        for sent in range(1, 5001):  # bounded: 80 MB at most
            await nc.publish(f"conn.{conn_id}", payload)
            if sent % 50 == 0:
                await flush_all(nc)
                if metric(node, "prism_slow_consumer_closes_total"):
                    break
        await eventually(lambda: conn_id not in node.hub.conns, what="the slow consumer to be closed")
        assert metric(node, "prism_slow_consumer_closes_total") == 1
        assert metric(node, "prism_disconnects_total", code=str(int(CloseCode.SLOW_CONSUMER))) == 1
        raw.abort()


async def test_an_inbound_flood_is_rate_limited_then_closed_with_1008(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await hostile_node(make_node, message_rate=100.0, message_burst=50, rate_violations=50)
    async with witnessed(node, nc):
        async with connect(ws_url(node), compression=None) as ws:
            await ws.recv()  # welcome
            with contextlib.suppress(ConnectionClosed):
                for ref in range(3000):
                    await ws.send(f'{{"prism":"leave","room":"a","ref":{ref}}}')
            answers: list[dict[str, Any]] = []
            with contextlib.suppress(ConnectionClosed):
                for _ in range(3000):
                    answers.append(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))
            assert ws.close_code == CloseCode.POLICY_VIOLATION
        ok = [a for a in answers if a["prism"] == "ok"]
        limited = [a for a in answers if a.get("code") == "rate_limited"]
        assert 50 <= len(ok) < 500
        assert len(limited) == 49  # the 50th violation closes instead
        assert all(isinstance(a["ref"], int) for a in limited)  # each names the dropped frame
        assert len(ok) + len(limited) == len(answers)
    await counted(node, "rate_limited", 49)
    await counted(node, "rate_abuse", 1)


async def test_idle_connections_are_closed_and_pings_do_not_keep_them(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await hostile_node(make_node, idle_timeout=0.5)
    async with witnessed(node, nc, chatty=True):
        silent = await connect(ws_url(node), compression=None, ping_interval=None)
        pinging = await connect(ws_url(node), compression=None, ping_interval=0.1, ping_timeout=5)
        chatty = await connect(ws_url(node), compression=None, ping_interval=None)
        for ws in (silent, pinging, chatty):
            await ws.recv()  # welcome
        started = time.monotonic()
        for i in range(15):  # 1.5 s of a message every 0.1 s: three idle timeouts' worth
            await chatty.send(f'{{"prism":"leave","room":"a","ref":{i}}}')
            assert orjson.loads(await chatty.recv())["ref"] == i
            await asyncio.sleep(0.1)  # the client's own pace
        for ws in (silent, pinging):
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == CloseCode.GOING_AWAY
            assert ws.close_reason == "idle timeout: no message for 0.5s"
        assert time.monotonic() - started < 5
        assert chatty.close_code is None
        await chatty.close()
    await counted(node, "idle_timeout", 2)
