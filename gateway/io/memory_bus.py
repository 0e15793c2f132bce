"""A :class:`~gateway.io.bus.Bus` in memory: the fake that core and session tests run on, held to the same
contract suite as the real bus (tests/contract/test_bus.py).

:class:`MemoryNats` stands in for a NATS server: subjects with ``*`` and ``>`` wildcards, queue groups
(one member each, in turn), "no responders" (a publish with a reply subject that no one hears gets an
empty status-503 message on that reply subject, as nats-server answers a client that asked for it), and
``max_payload``. Each :meth:`MemoryNats.connect` is one client. A message reaches its subscribers on a
later pass of the event loop, never inside ``publish``, and in the order it was published, as it would
from a server.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

import nats.errors

from gateway.core import nats_protocol as wire
from gateway.io.nats_link import BusUnavailable, Handler, Headers, PayloadTooLarge

log = logging.getLogger("prism.bus")

DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default


def matches(pattern: str, subject: str) -> bool:
    """Whether NATS would deliver ``subject`` to a subscription on ``pattern``."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


@dataclass(eq=False)
class _Subscription:
    bus: MemoryBus
    subject: str
    queue: str
    handler: Handler
    active: bool = True

    async def unsubscribe(self) -> None:
        self.active = False
        self.bus.server.remove(self)


@dataclass
class MemoryNats:
    """The server: every client's subscriptions, and where each message goes."""

    max_payload: int = DEFAULT_MAX_PAYLOAD
    subscriptions: list[_Subscription] = field(default_factory=list)
    _turns: itertools.count[int] = field(default_factory=itertools.count)

    def connect(self) -> MemoryBus:
        return MemoryBus(self)

    def remove(self, sub: _Subscription) -> None:
        if sub in self.subscriptions:
            self.subscriptions.remove(sub)

    def route(self, subject: str, reply: str, payload: bytes, headers: Headers | None) -> None:
        plain: list[_Subscription] = []
        groups: dict[str, list[_Subscription]] = {}
        for sub in self.subscriptions:
            if matches(sub.subject, subject):
                if sub.queue:
                    groups.setdefault(sub.queue, []).append(sub)
                else:
                    plain.append(sub)
        chosen = plain + [members[next(self._turns) % len(members)] for members in groups.values()]
        if not chosen:
            if reply:
                self.route(reply, "", b"", {wire.STATUS: "503"})
            return
        loop = asyncio.get_running_loop()
        for sub in chosen:
            loop.call_soon(sub.bus.deliver, sub, subject, reply, payload, dict(headers) if headers else None)


class MemoryBus:
    """One client of a :class:`MemoryNats`."""

    def __init__(self, server: MemoryNats) -> None:
        self.server = server
        self._closed = False
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def connected(self) -> bool:
        return not self._closed

    @property
    def subscriptions(self) -> list[str]:
        return [sub.subject for sub in self.server.subscriptions if sub.bus is self]

    def deliver(
        self, sub: _Subscription, subject: str, reply: str, payload: bytes, headers: Headers | None
    ) -> None:
        if not sub.active or self._closed:
            return
        try:
            pending = sub.handler(subject, reply, payload, headers)
        except Exception:
            log.exception("handler for %s failed", subject)
            return
        if pending is not None:
            self._spawn(pending)

    def _spawn(self, pending: Awaitable[None]) -> None:
        task = asyncio.ensure_future(pending)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, subject: str, reply: str, payload: bytes, headers: Headers | None, size: int) -> None:
        if self._closed:
            raise BusUnavailable("NATS connection is closed")
        if size > self.server.max_payload:
            raise PayloadTooLarge(
                f"message of {size} bytes is over NATS max_payload ({self.server.max_payload})"
            )
        self.server.route(subject, reply, payload, headers)

    async def publish(self, subject: str, payload: bytes, headers: Headers | None = None) -> None:
        block = wire.header_block(wire.encode_header_lines(headers)) if headers else b""
        self._send(subject, "", payload, wire.parse_headers(block), len(block) + len(payload))

    async def publish_encoded(self, subject: str, reply: str, header_block: bytes, payload: bytes) -> None:
        self._send(
            subject, reply, payload, wire.parse_headers(header_block), len(header_block) + len(payload)
        )

    async def publish_many(self, subject: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        for header_block, payload in messages:
            await self.publish_encoded(subject, "", header_block, payload)

    async def reply_no_responders(self, reply: str) -> None:
        await self.publish_encoded(reply, "", wire.NO_RESPONDERS, b"")

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> _Subscription:
        if self._closed:
            raise BusUnavailable("NATS connection is closed")
        sub = _Subscription(self, subject, queue, handler)
        self.server.subscriptions.append(sub)
        return sub

    def new_inbox(self) -> str:
        return wire_inbox()

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        inbox = self.new_inbox()
        answer: asyncio.Future[tuple[bytes, Headers | None]] = asyncio.get_running_loop().create_future()

        def on_reply(subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
            if not answer.done():
                answer.set_result((data, headers))

        sub = await self.subscribe(inbox, on_reply)
        try:
            await self.publish_encoded(subject, inbox, b"", payload)
            try:
                data, headers = await asyncio.wait_for(answer, timeout)
            except TimeoutError:
                raise nats.errors.TimeoutError from None
        finally:
            await sub.unsubscribe()
        if headers is not None and headers.get(wire.STATUS) == "503" and not data:
            raise nats.errors.NoRespondersError
        return data

    async def flush(self, timeout: float = 5.0) -> None:
        if self._closed:
            raise BusUnavailable("NATS connection is closed")
        await asyncio.sleep(0)  # what was published is routed already; let its deliveries start

    async def drain(self) -> None:
        """Stop routing to this client, let what was routed already reach its handlers and those finish."""
        mine = [sub for sub in self.server.subscriptions if sub.bus is self]
        for sub in mine:
            self.server.remove(sub)
        await asyncio.sleep(0)  # deliveries scheduled before this run first
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for sub in mine:
            sub.active = False
        self._closed = True

    async def close(self) -> None:
        for sub in list(self.server.subscriptions):
            if sub.bus is self:
                await sub.unsubscribe()
        self._closed = True


def wire_inbox() -> str:
    return "_INBOX." + secrets.token_hex(11)
