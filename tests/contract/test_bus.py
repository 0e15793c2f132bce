"""One contract for every Bus: the gateway's NatsBus on a real nats-server and MemoryBus, the fake.

What the gateway relies on: delivery with subject, reply and headers (a header block or a status line
parsed the same way), wildcards, queue groups, unsubscribing, order, handlers that return I/O to do,
request/reply with "no responders" and timeouts, batches, inboxes, max_payload, and the end (drain lets
handlers finish; a closed bus refuses)."""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import nats.errors
import pytest

from gateway.core.nats_protocol import encode_header_lines, header_block
from gateway.io.bus import Bus, BusUnavailable, Headers, PayloadTooLarge
from tests.contract.conftest import Connect
from tests.helpers import eventually

Received = tuple[str, str, bytes, Headers | None]


class Ending(Bus, Protocol):
    async def drain(self) -> None: ...

    async def close(self) -> None: ...


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Received] = []

    def __call__(self, subject: str, reply: str, payload: bytes, headers: Headers | None) -> None:
        self.messages.append((subject, reply, payload, headers))

    def payloads(self) -> list[bytes]:
        return [m[2] for m in self.messages]

    async def count(self, n: int) -> None:
        await eventually(lambda: len(self.messages) >= n, timeout=5, what=f"{n} messages")


async def subscribed(bus: Bus, subject: str, queue: str = "") -> Inbox:
    inbox = Inbox()
    await bus.subscribe(subject, inbox, queue)
    await bus.flush()
    return inbox


async def test_a_message_reaches_every_subscriber_with_its_subject_and_no_headers(connect: Connect) -> None:
    a, b = await connect(), await connect()
    first, second = await subscribed(a, "orders.new"), await subscribed(b, "orders.new")
    await b.publish("orders.new", b"one")
    await first.count(1)
    await second.count(1)
    assert first.messages == second.messages == [("orders.new", "", b"one", None)]


async def test_headers_arrive_as_a_dict_whichever_way_they_were_sent(connect: Connect) -> None:
    a, b = await connect(), await connect()
    inbox = await subscribed(a, "h.>")
    await b.publish("h.dict", b"1", {"Prism-Frame": "binary", "X": "y"})
    block = header_block(encode_header_lines({"Prism-Conn": "n1.a", "Prism-User": "ada"}))
    await b.publish_encoded("h.encoded", "", block, b"2")
    await b.publish_encoded("h.none", "", b"", b"3")
    await b.reply_no_responders("h.status")
    await inbox.count(4)
    assert inbox.messages == [
        ("h.dict", "", b"1", {"Prism-Frame": "binary", "X": "y"}),
        ("h.encoded", "", b"2", {"Prism-Conn": "n1.a", "Prism-User": "ada"}),
        ("h.none", "", b"3", None),
        ("h.status", "", b"", {"Status": "503"}),
    ]


async def test_wildcards(connect: Connect) -> None:
    a, b = await connect(), await connect()
    one, rest = await subscribed(a, "room.*"), await subscribed(a, "conn.n1.>")
    for subject in ("room.lobby", "room.a.b", "conn.n1.x", "conn.n1.x.y", "conn.n1", "conn.n2.x", "room"):
        await b.publish(subject, subject.encode())
    await b.publish("end.marker", b"")
    await one.count(1)
    await rest.count(2)
    await b.flush()
    await a.flush()
    assert one.payloads() == [b"room.lobby"]
    assert rest.payloads() == [b"conn.n1.x", b"conn.n1.x.y"]


async def test_a_queue_group_gets_each_message_once_beside_plain_subscribers(connect: Connect) -> None:
    a, b, c = await connect(), await connect(), await connect()
    workers = [await subscribed(a, "jobs", queue="w"), await subscribed(b, "jobs", queue="w")]
    watcher = await subscribed(c, "jobs")
    for i in range(20):
        await c.publish("jobs", b"%d" % i)
    await watcher.count(20)
    await eventually(lambda: sum(len(w.messages) for w in workers) == 20, what="each job to one worker")
    assert sorted(int(p) for w in workers for p in w.payloads()) == list(range(20))


async def test_unsubscribed_means_no_more_deliveries(connect: Connect) -> None:
    a, b = await connect(), await connect()
    inbox = Inbox()
    sub = await a.subscribe("gone", inbox)
    marker = await subscribed(a, "marker")
    await b.publish("gone", b"before")
    await inbox.count(1)
    await sub.unsubscribe()
    await a.flush()
    await b.publish("gone", b"after")
    await b.publish("marker", b"")
    await marker.count(1)
    assert inbox.payloads() == [b"before"]


async def test_order_is_kept(connect: Connect) -> None:
    a, b = await connect(), await connect()
    inbox = await subscribed(a, "seq")
    for i in range(300):
        await b.publish("seq", b"%d" % i)
    await inbox.count(300)
    assert inbox.payloads() == [b"%d" % i for i in range(300)]


async def test_handlers_may_return_io_and_a_failing_handler_stops_nothing(connect: Connect) -> None:
    a, b = await connect(), await connect()
    done: list[bytes] = []

    async def later(payload: bytes) -> None:
        await asyncio.sleep(0.01)
        done.append(payload)

    def handler(
        subject: str, reply: str, payload: bytes, headers: Headers | None
    ) -> asyncio.Future[None] | None:
        if payload == b"boom":
            raise RuntimeError("a broken handler")
        return asyncio.ensure_future(later(payload))

    await a.subscribe("io", handler)
    await a.flush()
    for payload in (b"1", b"boom", b"2"):
        await b.publish("io", payload)
    await eventually(lambda: done == [b"1", b"2"], what="both handlers' I/O")


async def test_request_and_reply(connect: Connect) -> None:
    a, b = await connect(), await connect()

    async def answer(reply: str, payload: bytes) -> None:
        await a.publish(reply, payload.upper())

    def responder(subject: str, reply: str, payload: bytes, headers: Headers | None) -> asyncio.Future[None]:
        return asyncio.ensure_future(answer(reply, payload))

    await a.subscribe("echo", responder)
    await a.flush()
    assert await b.request("echo", b"hi", timeout=5) == b"HI"
    with pytest.raises(nats.errors.NoRespondersError):
        await b.request("nobody.here", b"?", timeout=5)
    await a.subscribe("silent", Inbox())
    await a.flush()
    with pytest.raises(TimeoutError):
        await b.request("silent", b"?", timeout=0.3)


async def test_no_responders_reaches_a_reply_subject_and_can_be_sent_by_hand(connect: Connect) -> None:
    a, b = await connect(), await connect()
    inbox_subject = b.new_inbox()
    inbox = await subscribed(b, inbox_subject)
    await b.publish_encoded("nobody.listens", inbox_subject, b"", b"?")  # as a client request is sent
    await inbox.count(1)
    [(subject, reply, payload, headers)] = inbox.messages
    assert (subject, reply, payload) == (inbox_subject, "", b"")
    assert headers is not None
    assert headers["Status"] == "503"  # (nats-server adds Nats-Subject; the fake need not)

    def gone(subject: str, reply: str, payload: bytes, headers: Headers | None) -> asyncio.Future[None]:
        return asyncio.ensure_future(a.reply_no_responders(reply))  # a conn that no longer exists

    await a.subscribe("conn.n1.*", gone)
    await a.flush()
    with pytest.raises(nats.errors.NoRespondersError):
        await b.request("conn.n1.gone", b"x", timeout=5)


async def test_publish_many_sends_every_message_with_its_headers_in_order(connect: Connect) -> None:
    a, b = await connect(), await connect()
    inbox = await subscribed(a, "client.disconnect")
    messages = [(header_block(encode_header_lines({"N": str(i)})), b"%d" % i) for i in range(2500)]
    await b.publish_many("client.disconnect", messages)
    await inbox.count(2500)
    assert [(m[2], m[3]) for m in inbox.messages] == [(b"%d" % i, {"N": str(i)}) for i in range(2500)]


async def test_inboxes_are_unique(connect: Connect) -> None:
    bus = await connect()
    inboxes = {bus.new_inbox() for _ in range(100)}
    assert len(inboxes) == 100
    assert all(i.startswith("_INBOX.") and "*" not in i and ">" not in i for i in inboxes)


async def test_a_message_over_max_payload_is_refused_and_the_bus_goes_on(connect: Connect) -> None:
    a, b = await connect(), await connect()
    inbox = await subscribed(a, "big")
    with pytest.raises(PayloadTooLarge):
        await b.publish("big", b"x" * (1024 * 1024 + 1))
    with pytest.raises(BusUnavailable):  # PayloadTooLarge is a BusUnavailable: the message was not sent
        await b.publish_encoded("big", "", b"NATS/1.0\r\nK: v\r\n\r\n", b"x" * (1024 * 1024))
    await b.publish("big", b"fits")
    await inbox.count(1)
    assert b.connected


async def test_drain_lets_delivered_messages_finish_and_a_closed_bus_refuses(connect: Connect) -> None:
    a, b = cast(Ending, await connect()), await connect()
    finished: list[bytes] = []
    started = asyncio.Event()

    async def slow(payload: bytes) -> None:
        started.set()
        await asyncio.sleep(0.1)  # I/O still going on when the drain starts
        finished.append(payload)

    def handler(subject: str, reply: str, payload: bytes, headers: Headers | None) -> asyncio.Future[None]:
        return asyncio.ensure_future(slow(payload))

    await a.subscribe("work", handler)
    await a.flush()
    await b.publish("work", b"in flight")
    await asyncio.wait_for(started.wait(), 5)
    await a.drain()
    assert finished == [b"in flight"]
    assert not a.connected
    with pytest.raises(BusUnavailable):
        await a.publish("work", b"late")
    with pytest.raises(BusUnavailable):
        await a.flush()
    closed = cast(Ending, await connect())
    await closed.close()
    with pytest.raises(BusUnavailable):
        await closed.publish_encoded("x", "", b"", b"")
