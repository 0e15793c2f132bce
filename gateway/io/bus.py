"""The gateway's small, typed view of NATS: publish, subscribe, reply, and the KV it needs.

nats-py's client has a 35-argument ``connect()`` and a wide surface; the rest of the gateway sees only
:class:`Bus`. :class:`NatsBus` is the one implementation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.protocol import command as prot_command

from gateway.io import direct_subscription, nats_reader
from shared.errors import ConfigError
from shared.nats_auth import NatsAuth

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

    async def flush(self, timeout: float = 5.0) -> None: ...


@dataclass(frozen=True, slots=True)
class NatsOptions:
    servers: list[str]
    name: str
    connect_timeout: float = 5.0
    max_reconnect_attempts: int = -1
    reconnect_time_wait: float = 1.0
    drain_timeout: float = 10.0
    auth: NatsAuth = field(default_factory=NatsAuth)


class NatsUnreachable(Exception):
    """No NATS server answered within the time :meth:`NatsBus.connect` was given; the message says
    where and why (the last error, e.g. connection refused)."""


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


class NatsBus:
    """:class:`Bus` over one nats-py connection."""

    def __init__(self, nc: NatsClient, events: _ConnectionEvents | None = None) -> None:
        self.nc = nc
        self._events = events if events is not None else _ConnectionEvents(None, connected=True)
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
        """Connect, retrying while no server answers (a node may start before NATS does): forever, or
        for ``give_up_after`` seconds and then raise :class:`NatsUnreachable`. Refused credentials and
        TLS failures raise :class:`ConfigError` at once: retrying cannot help."""
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
            if not nats_reader.install(nc):
                log.warning("this nats-py's parser is not one Prism knows; delivery uses nats-py's own")
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
                    raise _credentials_refused(options) from None
                why = _reason(events.last_error or exc)
                if deadline is not None and loop.time() + delay > deadline:
                    raise NatsUnreachable(f"NATS at {servers} unreachable ({why})") from None
                log.warning("cannot reach NATS at %s (%s); retrying in %.1fs", servers, why, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except nats.errors.Error as exc:
                if "authorization violation" not in str(exc).lower():
                    raise
                raise _credentials_refused(options) from None
        events.connected = True
        nc.options["max_reconnect_attempts"] = options.max_reconnect_attempts
        return cls(nc, events)

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
        self._events.closing = True
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except (nats.errors.ConnectionClosedError, nats.errors.FlushTimeoutError, TimeoutError):
                await self.nc.close()

    async def close(self) -> None:
        self._events.closing = True
        if not self.nc.is_closed:
            await self.nc.close()


def _reason(exc: BaseException) -> str:
    """Why a connect failed, in words: "Connection refused" (the loop's own message varies: uvloop and
    asyncio word a refused connect differently), else the error's message or its type."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def _credentials_refused(options: NatsOptions) -> ConfigError:
    return ConfigError(
        f"NATS at {', '.join(options.servers)} refused this node's credentials: check "
        "PRISM_NATS_USER / PRISM_NATS_PASSWORD, PRISM_NATS_TOKEN, PRISM_NATS_NKEY_SEED_FILE or "
        "PRISM_NATS_CREDS_FILE"
    )


def encode_header_lines(headers: dict[str, str]) -> bytes:
    """``Key: value`` lines in NATS wire form. Callers pass validated tokens (ids, paths, addresses):
    nothing here may contain CR or LF."""
    return b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers.items())


def header_block(lines: bytes) -> bytes:
    """A complete NATS header block from :func:`encode_header_lines` output."""
    return b"NATS/1.0\r\n" + lines + b"\r\n"
