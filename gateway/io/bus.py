"""The gateway's small, typed view of NATS: publish, subscribe, reply, and the KV it needs.

nats-py's client has a 35-argument ``connect()`` and a wide surface; the rest of the gateway sees only
:class:`Bus`. :class:`NatsBus` is the one implementation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.protocol import command as prot_command

from gateway.io import direct_subscription, nats_reader
from shared import nats_connection
from shared.nats_connection import ConnectionEvents, NatsConnection, NatsOptions

log = logging.getLogger("prism.bus")

Headers = dict[str, str]
# subject, reply, payload, headers. A handler returns an awaitable only when it has I/O left to do (a
# receipt to publish), so the common delivery costs no coroutine.
Handler = Callable[[str, str, bytes, Headers | None], Awaitable[None] | None]

# The exact bytes nats-server sends as "no responders" (status 503 in the header line). Every NATS client
# library reads it from the status line, so a node that owns the wildcard ``conn.<node>.*`` can answer a
# request for one of its connections that is gone exactly as the server would if nobody were listening.
_NO_RESPONDERS_HEADER = b"NATS/1.0 503\r\n\r\n"
DEFAULT_SUB_PENDING_MSGS = 65536
# Messages joined into one command by publish_many: a few hundred KB per write.
PUBLISH_MANY_CHUNK = 1000


# What :meth:`NatsBus.backlogged` calls a backlog: two of nats-py's 32 KB reads. A burst of a few hundred
# messages arriving at once stays under it, so only a real backlog makes the flusher wait for more.
BACKLOG_BYTES = 64 * 1024


class BusUnavailable(Exception):
    """NATS is not connected (or is draining); the message was not sent."""


class SubscriptionHandle(Protocol):
    async def unsubscribe(self) -> None: ...


class Bus(Protocol):
    @property
    def connected(self) -> bool: ...

    async def publish(self, subject: str, payload: bytes, headers: Headers | None = None) -> None: ...

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> SubscriptionHandle: ...

    async def publish_encoded(
        self, subject: str, reply: str, header_block: bytes, payload: bytes
    ) -> None: ...

    async def reply_no_responders(self, reply: str) -> None: ...

    async def publish_many(self, subject: str, messages: Sequence[tuple[bytes, bytes]]) -> None: ...

    def new_inbox(self) -> str: ...

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        """The first reply's payload; raises nats-py's ``NoRespondersError`` or ``TimeoutError``."""
        ...

    async def flush(self, timeout: float = 5.0) -> None: ...


class NatsBus:
    """:class:`Bus` over one nats-py connection."""

    def __init__(self, nc: NatsClient, events: ConnectionEvents | None = None) -> None:
        self.nc = nc
        self._connection = NatsConnection(nc, events)
        self._direct = direct_subscription.supported(nc)
        if not self._direct:
            log.warning("this nats-py lacks what direct subscriptions need; using one task per subscription")
        self._dispatch: dict[Handler, direct_subscription.Dispatch] = {}

    @classmethod
    async def connect(
        cls,
        options: NatsOptions,
        on_state: Callable[[bool], Awaitable[None]] | None = None,
        give_up_after: float | None = None,
    ) -> NatsBus:
        """:func:`shared.nats_connection.connect` (retries, log lines, :class:`NatsUnreachable`,
        :class:`ConfigError`), with Prism's reader in nats-py's parser's place."""
        connection = await nats_connection.connect(options, on_state, give_up_after, _install_reader)
        return cls(connection.nc, connection.events)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    def backlogged(self) -> bool:
        """Whether the connection holds a backlog: at least :data:`BACKLOG_BYTES` read from the socket
        and not yet parsed, so the next passes of the read loop will deliver more. (nats-py's TCP
        transport reads through an asyncio ``StreamReader``, which stops reading the socket at twice its
        32 KB limit; another transport answers False.)"""
        reader = getattr(self.nc._transport, "_io_reader", None)
        return len(getattr(reader, "_buffer", b"")) >= BACKLOG_BYTES

    async def publish(self, subject: str, payload: bytes, headers: Headers | None = None) -> None:
        if self.nc.is_closed or self.nc.is_draining:
            raise BusUnavailable("NATS connection is closed")
        await self.nc.publish(subject, payload, headers=headers)

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> SubscriptionHandle:
        if not queue and self._direct:
            dispatch = self._dispatch.get(handler)
            if dispatch is None:
                dispatch = self._dispatch[handler] = direct_subscription.Dispatch(handler)
            return await direct_subscription.subscribe(self.nc, subject, dispatch)

        async def on_msg(msg: Msg) -> None:
            try:
                pending = handler(msg.subject, msg.reply, msg.data, msg.headers)
                if pending is not None:
                    await pending
            except Exception:
                log.exception("handler for %s failed", msg.subject)

        sub: Subscription = await self.nc.subscribe(
            subject, queue=queue, cb=on_msg, pending_msgs_limit=DEFAULT_SUB_PENDING_MSGS
        )
        return sub

    async def publish_encoded(self, subject: str, reply: str, header_block: bytes, payload: bytes) -> None:
        """Publish with headers already in NATS wire form (see :func:`header_block`): a connection's
        identity headers are encoded once when it opens, not built and validated again per message."""
        nc = self.nc
        if nc.is_closed or nc.is_draining:
            raise BusUnavailable("NATS connection is closed")
        if not nc.is_connected and nc._pending_data_size + len(payload) > nc._max_pending_size:
            # As nats-py's publish(): while reconnecting, buffer only up to its limit (2 MB by default).
            raise BusUnavailable("NATS is reconnecting and the reconnect buffer is full")
        await nc._send_command(prot_command.hpub_cmd(subject, reply, header_block, payload))
        await self._kick_flusher()

    async def publish_many(self, subject: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """:meth:`publish_encoded` of many (header block, payload) pairs to ``subject``, written as a few
        large commands rather than one per message (a sweep announcing 50,000 disconnects)."""
        nc = self.nc
        for start in range(0, len(messages), PUBLISH_MANY_CHUNK):
            if nc.is_closed or nc.is_draining:
                raise BusUnavailable("NATS connection is closed")
            chunk = messages[start : start + PUBLISH_MANY_CHUNK]
            await nc._send_command(b"".join([prot_command.hpub_cmd(subject, "", h, p) for h, p in chunk]))
            await self._kick_flusher()

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        if self.nc.is_closed or self.nc.is_draining:
            raise BusUnavailable("NATS connection is closed")
        msg = await self.nc.request(subject, payload, timeout=timeout)
        return bytes(msg.data)

    def new_inbox(self) -> str:
        return str(self.nc.new_inbox())

    async def reply_no_responders(self, reply: str) -> None:
        # nats-py has no public way to publish a status line, so this writes the HPUB itself.
        await self.nc._send_command(prot_command.hpub_cmd(reply, "", _NO_RESPONDERS_HEADER, b""))
        await self._kick_flusher()

    async def _kick_flusher(self) -> None:
        # As nats-py's own publish(): wake its flusher only if no wake-up is queued already; each one
        # costs a Future and a task switch, and one pass writes everything pending.
        if self.nc._flush_queue is not None and self.nc._flush_queue.empty():
            await self.nc._flush_pending()

    async def flush(self, timeout: float = 5.0) -> None:
        await self.nc.flush(timeout=int(max(1, timeout)))

    @property
    def jetstream(self) -> Any:
        return self.nc.jetstream()

    async def drain(self) -> None:
        await self._connection.drain()

    async def close(self) -> None:
        await self._connection.close()


def _install_reader(nc: NatsClient) -> None:
    if not nats_reader.install(nc):
        log.warning("this nats-py's parser is not one Prism knows; delivery uses nats-py's own")


def encode_header_lines(headers: dict[str, str]) -> bytes:
    """``Key: value`` lines in NATS wire form. Callers pass validated tokens (ids, paths, addresses):
    nothing here may contain CR or LF."""
    return "".join([f"{k}: {v}\r\n" for k, v in headers.items()]).encode()


def header_block(lines: bytes) -> bytes:
    """A complete NATS header block from :func:`encode_header_lines` output."""
    return b"NATS/1.0\r\n" + lines + b"\r\n"
