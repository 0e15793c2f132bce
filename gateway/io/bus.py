"""The gateway's small, typed view of NATS: publish, subscribe, reply, and the KV it needs.

nats-py's client has a 35-argument ``connect()`` and a wide surface; the rest of the gateway sees only
:class:`Bus`. :class:`NatsBus` is the product's implementation: the data plane (every subscription and
publish) on Prism's own connection (:class:`gateway.io.nats_link.NatsLink`), and nats-py beside it for
JetStream and KV (:attr:`NatsBus.nc`, public API only). :class:`gateway.io.memory_bus.MemoryBus` is the
fake; one contract suite (tests/contract/test_bus.py) runs against both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient

from gateway.core.nats_protocol import encode_header_lines, header_block
from gateway.io.nats_link import (
    BACKLOG_BYTES,
    PUBLISH_MANY_CHUNK,
    BusUnavailable,
    Handler,
    Headers,
    NatsLink,
    PayloadTooLarge,
)
from shared import nats_connection
from shared.nats_connection import NatsConnection, NatsOptions, NatsUnreachable

__all__ = [
    "BACKLOG_BYTES",
    "PUBLISH_MANY_CHUNK",
    "Bus",
    "BusUnavailable",
    "Handler",
    "Headers",
    "NatsBus",
    "NatsOptions",
    "NatsUnreachable",
    "PayloadTooLarge",
    "SubscriptionHandle",
    "encode_header_lines",
    "header_block",
]

log = logging.getLogger("prism.bus")


class SubscriptionHandle(Protocol):
    async def unsubscribe(self) -> None: ...


class Bus(Protocol):
    """What the gateway does on NATS. Implementations: :class:`NatsBus`, and
    :class:`gateway.io.memory_bus.MemoryBus` (the fake); tests/contract/test_bus.py holds both to it.

    A handler gets ``(subject, reply, payload, headers)``, ``reply`` ``""`` and ``headers`` ``None`` when
    there are none (a status line reads as ``{"Status": "503"}``), and returns an awaitable only when it
    has I/O left to do. Messages reach a subscription in the order they were published. A publish raises
    :class:`BusUnavailable` when the message was not sent (closed, reconnect buffer full, or
    :class:`PayloadTooLarge`)."""

    @property
    def connected(self) -> bool: ...

    async def publish(self, subject: str, payload: bytes, headers: Headers | None = None) -> None: ...

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> SubscriptionHandle:
        """Subscribe ``subject`` (``*`` and ``>`` wildcards; with ``queue``, one member of the group
        gets each message)."""
        ...

    async def publish_encoded(self, subject: str, reply: str, header_block: bytes, payload: bytes) -> None:
        """Publish with a header block in wire form (:func:`header_block`; ``b""`` for none). A message
        with a ``reply`` that nobody hears brings an empty status-503 message to ``reply``."""
        ...

    async def reply_no_responders(self, reply: str) -> None:
        """Answer a request as nats-server does when nobody listens (status 503)."""
        ...

    async def publish_many(self, subject: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """:meth:`publish_encoded` of each (header block, payload) pair to ``subject``, in order."""
        ...

    def new_inbox(self) -> str:
        """A subject no one else uses, under ``_INBOX.``."""
        ...

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        """The first reply's payload; raises nats-py's ``NoRespondersError`` or ``TimeoutError``."""
        ...

    async def flush(self, timeout: float = 5.0) -> None:
        """Return once NATS has everything sent before, subscriptions included."""
        ...


class _Health:
    """One connected/disconnected signal for a bus of two connections: down when either is, up when both
    are again."""

    def __init__(self, on_state: Callable[[bool], Awaitable[None]] | None) -> None:
        self.on_state = on_state
        self.down: set[str] = set()

    def of(self, part: str) -> Callable[[bool], Awaitable[None]]:
        async def changed(connected: bool) -> None:
            was_up = not self.down
            if connected:
                self.down.discard(part)
            else:
                self.down.add(part)
            if was_up != (not self.down) and self.on_state is not None:
                await self.on_state(not self.down)

        return changed


class NatsBus:
    """:class:`Bus` on a :class:`NatsLink`, with a nats-py client (:attr:`nc`) for JetStream and KV."""

    def __init__(self, connection: NatsConnection, link: NatsLink) -> None:
        self.nc: NatsClient = connection.nc
        self.link = link
        self._connection = connection

    @classmethod
    async def connect(
        cls,
        options: NatsOptions,
        on_state: Callable[[bool], Awaitable[None]] | None = None,
        give_up_after: float | None = None,
    ) -> NatsBus:
        """Connect both connections, retrying while no server answers (a node may start before NATS does):
        forever, or for ``give_up_after`` seconds and then raise :class:`NatsUnreachable`. Refused
        credentials and TLS failures raise :class:`ConfigError` at once: retrying cannot help. nats-py's
        is the connection every Prism process makes (:func:`shared.nats_connection.connect`)."""
        health = _Health(on_state)
        loop = asyncio.get_running_loop()
        started = loop.time()
        connection = await nats_connection.connect(options, health.of("nats-py"), give_up_after)
        left = None if give_up_after is None else max(0.1, give_up_after - (loop.time() - started))
        try:
            link = await NatsLink.connect(
                replace(options, name=f"{options.name}-delivery"), health.of("delivery"), left
            )
        except BaseException:
            await connection.close()
            raise
        return cls(connection, link)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected) and self.link.connected

    def backlogged(self) -> bool:
        """Whether the data plane has a backlog of input (:meth:`NatsLink.backlogged`)."""
        return self.link.backlogged()

    async def publish(self, subject: str, payload: bytes, headers: Headers | None = None) -> None:
        await self.link.publish(subject, payload, headers)

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> SubscriptionHandle:
        return await self.link.subscribe(subject, handler, queue)

    async def publish_encoded(self, subject: str, reply: str, header_block: bytes, payload: bytes) -> None:
        """Publish with headers already in NATS wire form (see :func:`header_block`; empty for none): a
        connection's identity headers are encoded once when it opens, not built again per message."""
        await self.link.publish_encoded(subject, reply, header_block, payload)

    async def publish_many(self, subject: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        await self.link.publish_many(subject, messages)

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        return await self.link.request(subject, payload, timeout)

    def new_inbox(self) -> str:
        return self.link.new_inbox()

    async def reply_no_responders(self, reply: str) -> None:
        await self.link.reply_no_responders(reply)

    async def flush(self, timeout: float = 5.0) -> None:
        await self.link.flush(timeout)

    @property
    def jetstream(self) -> Any:
        return self.nc.jetstream()

    async def drain(self) -> None:
        await self.link.drain()
        await self._connection.drain()

    async def close(self) -> None:
        await self.link.close()
        await self._connection.close()
