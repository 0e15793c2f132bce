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
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import nats
import nats.errors
from nats.aio.client import Client as NatsClient

from gateway.core.nats_protocol import encode_header_lines, header_block
from gateway.io.nats_link import (
    BACKLOG_BYTES,
    PUBLISH_MANY_CHUNK,
    BusUnavailable,
    Handler,
    Headers,
    NatsLink,
    NatsOptions,
    NatsUnreachable,
    PayloadTooLarge,
    credentials_refused,
    reason,
)
from shared.errors import ConfigError

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


@dataclass(slots=True)
class _ConnectionEvents:
    """nats-py's callbacks, which log only what an operator should act on."""

    on_state: Callable[[bool], Awaitable[None]] | None
    connected: bool = False  # the first connect succeeded: errors from now on are news
    closing: bool = False  # closed on purpose (drain, close): its disconnect is not a warning
    last_error: Exception | None = None  # the first connect's latest error, for its retry line
    refused: list[Exception] = field(default_factory=list)  # authorization errors of the first connect

    async def disconnected(self) -> None:
        if self.closing:
            log.debug("NATS connection closed")
        else:
            log.warning("NATS disconnected")
        if self.on_state:
            await self.on_state(False)

    async def reconnected(self) -> None:
        log.info("NATS reconnected")
        if self.on_state:
            await self.on_state(True)

    async def error(self, exc: Exception) -> None:
        if "authorization violation" in str(exc).lower():
            self.refused.append(exc)
        if not self.connected:  # the connect loop says what went wrong, once per attempt
            self.last_error = exc
            return
        log.warning("NATS error: %s", exc)


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

    def __init__(self, nc: NatsClient, link: NatsLink, events: _ConnectionEvents | None = None) -> None:
        self.nc = nc
        self.link = link
        self._events = events if events is not None else _ConnectionEvents(None, connected=True)

    @classmethod
    async def connect(
        cls,
        options: NatsOptions,
        on_state: Callable[[bool], Awaitable[None]] | None = None,
        give_up_after: float | None = None,
    ) -> NatsBus:
        """Connect both connections, retrying while no server answers (a node may start before NATS does):
        forever, or for ``give_up_after`` seconds and then raise :class:`NatsUnreachable`. Refused
        credentials and TLS failures raise :class:`ConfigError` at once: retrying cannot help."""
        health = _Health(on_state)
        loop = asyncio.get_running_loop()
        started = loop.time()
        nc, events = await _connect_nats_py(options, health.of("nats-py"), give_up_after)
        left = None if give_up_after is None else max(0.1, give_up_after - (loop.time() - started))
        try:
            link = await NatsLink.connect(
                replace(options, name=f"{options.name}-delivery"), health.of("delivery"), left
            )
        except BaseException:
            events.closing = True
            await nc.close()
            raise
        return cls(nc, link, events)

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
        self._events.closing = True
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except (nats.errors.ConnectionClosedError, nats.errors.FlushTimeoutError, TimeoutError):
                await self.nc.close()

    async def close(self) -> None:
        await self.link.close()
        self._events.closing = True
        if not self.nc.is_closed:
            await self.nc.close()


async def _connect_nats_py(
    options: NatsOptions, on_state: Callable[[bool], Awaitable[None]], give_up_after: float | None
) -> tuple[NatsClient, _ConnectionEvents]:
    events = _ConnectionEvents(on_state)
    servers = ", ".join(options.servers)
    loop = asyncio.get_running_loop()
    deadline = None if give_up_after is None else loop.time() + give_up_after
    # nats-py's own first connect retries silently forever when reconnects are unlimited. Try each
    # server a couple of times, say so in one line when NATS is not there, back off and try again,
    # then allow unlimited reconnects for the life of the connection.
    delay = 0.5
    while True:
        nc = NatsClient()
        events.last_error = None
        try:
            await nc.connect(
                servers=options.servers,
                name=options.name,
                connect_timeout=int(options.connect_timeout),
                max_reconnect_attempts=1,
                reconnect_time_wait=int(options.reconnect_time_wait),
                drain_timeout=int(options.drain_timeout),
                disconnected_cb=events.disconnected,
                reconnected_cb=events.reconnected,
                error_cb=events.error,
                **options.auth.connect_kwargs(),
            )
            break
        except ssl.SSLCertVerificationError as exc:
            raise ConfigError(f"TLS to NATS at {servers} failed: {exc}") from None
        except (nats.errors.NoServersError, OSError, TimeoutError) as exc:
            if events.refused:  # the servers answered, and said no: retrying cannot help
                raise credentials_refused(options) from None
            why = reason(events.last_error or exc)
            if deadline is not None and loop.time() + delay > deadline:
                raise NatsUnreachable(f"NATS at {servers} unreachable ({why})") from None
            log.warning("cannot reach NATS at %s (%s); retrying in %.1fs", servers, why, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        except nats.errors.Error as exc:
            if "authorization violation" not in str(exc).lower():
                raise
            raise credentials_refused(options) from None
    events.connected = True
    nc.options["max_reconnect_attempts"] = options.max_reconnect_attempts
    return nc, events
