"""The gateway's data plane: a NATS connection of Prism's own, an ``asyncio.Protocol`` over the sans-I/O
protocol of :mod:`gateway.core.nats_protocol`.

It carries what the gateway does per message: the delivery subscriptions (``conn.<node>.*``,
``user.<u>``, ``room.<r>``, broadcast, control, request inboxes), whose messages are handed to their
handler synchronously from ``data_received`` (no queue, task or ``Msg`` per message or per subscription),
and the publishes (client events, lifecycle events, receipts, "no responders" answers, batches of
events). nats-py keeps everything else (JetStream, KV) through its public API on a connection of its
own (:class:`gateway.io.bus.NatsBus`).

What a NATS client owes the server and its operator, it does here, as nats-py does:

- authentication with user and password, a token, an NKey seed or a credentials file (JWT), and TLS
  with a private CA and a client certificate (:class:`shared.nats_auth.NatsAuth`);
- the server's PINGs answered, its own PINGs every ``ping_interval`` (a connection whose PONGs stop
  coming is stale and dropped), ``max_payload`` respected;
- reconnect: to the next server of the list and of the ones the cluster advertises (``connect_urls``),
  with backoff between rounds; every subscription re-sent, and publishes made while disconnected
  buffered up to ``reconnect_buffer`` bytes (2 MB, as nats-py) and sent after them. Beyond that a
  publish fails with :class:`BusUnavailable`.

Writes are coalesced: everything published in one pass of the event loop is written with one system
call at its end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import itertools
import logging
import secrets
import ssl
import termios
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import nats.errors

from gateway.core import nats_protocol as wire
from gateway.core.nats_protocol import Err, Event, Info, Parser, ProtocolViolation
from shared.backoff import Backoff
from shared.errors import ConfigError
from shared.nats_connection import (
    CONNECT_BACKOFF,
    NatsOptions,
    NatsUnreachable,
    credentials_refused,
    reason,
)

log = logging.getLogger("prism.bus")

Headers = dict[str, str]
# subject, reply, payload, headers. A handler returns an awaitable only when it has I/O left to do (a
# receipt to publish), so the common delivery costs no coroutine.
Handler = Callable[[str, str, bytes, Headers | None], Awaitable[None] | None]

MAX_OUTSTANDING_PINGS: Final = 2  # unanswered PINGs before the connection counts as stale
WRITE_NOW: Final = 256 * 1024  # buffered bytes that are written at once instead of at the end of the pass
# What :meth:`NatsLink.backlogged` calls a backlog: bytes the kernel holds for this socket, unread. A
# burst of a few hundred messages arriving at once stays under it.
BACKLOG_BYTES: Final = 64 * 1024
DEFAULT_PORT: Final = 4222
INBOX_PREFIX: Final = "_INBOX."
PUBLISH_MANY_CHUNK: Final = 1000  # messages joined into one write by publish_many


class BusUnavailable(Exception):
    """NATS is not connected (or is draining); the message was not sent."""


class PayloadTooLarge(BusUnavailable):
    """The message is larger than the server's ``max_payload``; it was not sent (the server would have
    closed the connection for it)."""


class Refused(Exception):
    """The server refused this client's credentials (``-ERR 'Authorization Violation'``)."""


class NoTls(ConnectionError):
    """TLS was asked for (a ``tls://`` URL, a CA or a client certificate) and the server offers none."""


@dataclass(frozen=True, slots=True)
class Server:
    """One entry of the server pool: where, and whether TLS is asked for by the URL."""

    host: str
    port: int
    tls: bool = False
    user: str = ""  # credentials in the URL (nats://user:pass@host), as nats-py accepts them
    password: str = ""

    @classmethod
    def parse(cls, url: str) -> Server:
        if "://" not in url:
            url = "nats://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls"):
            raise ConfigError(f"NATS URL {url!r}: the scheme must be nats:// or tls://")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ConfigError(f"NATS URL {url!r}: bad port") from None
        host = parts.hostname or "127.0.0.1"
        return cls(host, port, parts.scheme == "tls", parts.username or "", parts.password or "")

    def __str__(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"


class ServerPool:
    """The servers to connect to, in order: the configured ones, then those the cluster advertised."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.servers = [Server.parse(url) for url in urls]
        if not self.servers:
            raise ConfigError("no NATS server URL given")
        self._next = 0

    def next(self) -> Server:
        server = self.servers[self._next % len(self.servers)]
        self._next = (self._next + 1) % len(self.servers)
        return server

    def learn(self, urls: Sequence[str], tls: bool) -> None:
        """Add the ``host:port`` entries of an INFO's ``connect_urls`` that are not known yet."""
        known = {(s.host, s.port) for s in self.servers}
        for entry in urls:
            found = Server.parse(("tls://" if tls else "nats://") + entry)
            if (found.host, found.port) not in known:
                self.servers.append(found)
                known.add((found.host, found.port))


class _Subscription:
    __slots__ = ("handler", "link", "queue", "sid", "subject")

    def __init__(self, link: NatsLink, sid: int, subject: str, queue: str, handler: Handler) -> None:
        self.link = link
        self.sid = sid
        self.subject = subject
        self.queue = queue
        self.handler = handler

    async def unsubscribe(self) -> None:
        self.link.unsubscribe(self)


class _Wire(asyncio.Protocol):
    """One TCP (or TLS) connection's callbacks, handed to the link with the connection they came from:
    a late callback from a connection already replaced is ignored."""

    def __init__(self, link: NatsLink) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.fd = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1

    def data_received(self, data: bytes) -> None:
        if self.link._wire is self:
            self.link.data_received(data)

    def eof_received(self) -> bool:
        return False  # close: the server has gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._lost(self, exc)

    def pause_writing(self) -> None:
        self.link._writable(self, False)

    def resume_writing(self) -> None:
        self.link._writable(self, True)


_Waiter = asyncio.Future[None]


class NatsLink:
    """:class:`gateway.io.bus.Bus` on a NATS connection of its own. Make one with :meth:`connect`."""

    def __init__(
        self, options: NatsOptions, on_state: Callable[[bool], Awaitable[None]] | None = None, label: str = ""
    ) -> None:
        self.options = options
        self.label = label or options.name
        self._on_state = on_state
        self._loop = asyncio.get_running_loop()
        self._pool = ServerPool(options.servers)
        self._parser = Parser()
        self._wire: _Wire | None = None
        self._transport: asyncio.Transport | None = None  # set while connected (handshake done)
        self._handshake: asyncio.Queue[Event | BaseException] | None = None
        self.server: Server | None = None
        self.info: dict[str, Any] = {}
        self.max_payload = 1024 * 1024
        self._subs: dict[int, _Subscription] = {}
        self._sids = itertools.count(1)
        self._control: list[bytes] = []  # SUB/UNSUB/PONG for the next write (re-made after a reconnect)
        self._out: list[bytes] = []  # publishes for the next write, kept across a reconnect
        self._out_size = 0
        self._write_scheduled = False
        self._ping_waiter: _Waiter | None = None  # a flush's PING for the next write, shared by its callers
        self._pongs: collections.deque[_Waiter | None] = collections.deque()  # PINGs written, oldest first
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._ping_timer: asyncio.TimerHandle | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._last_read = 0
        self._draining = False  # no new publishes: the link is draining or closed
        self._closed = False
        self._pings_out = 0  # keepalive PINGs since the last PONG
        self._inbox = INBOX_PREFIX + secrets.token_hex(11)
        self._requests: dict[str, asyncio.Future[tuple[bytes, Headers | None]]] = {}
        self._request_sub: _Subscription | None = None
        self._tokens = itertools.count(1)

    # -- connecting ------------------------------------------------------------------------------------
    @classmethod
    async def connect(
        cls,
        options: NatsOptions,
        on_state: Callable[[bool], Awaitable[None]] | None = None,
        give_up_after: float | None = None,
        label: str = "",
    ) -> NatsLink:
        """Connect, retrying while no server answers (a node may start before NATS does): forever, or for
        ``give_up_after`` seconds and then raise :class:`NatsUnreachable`. Refused credentials and TLS
        failures raise :class:`ConfigError` at once: retrying cannot help."""
        options.auth.validate()
        link = cls(options, on_state, label)
        servers = ", ".join(options.servers)
        deadline = None if give_up_after is None else link._loop.time() + give_up_after
        schedule = CONNECT_BACKOFF.schedule()
        while True:
            failure: BaseException | None = None
            for _ in link._pool.servers:
                try:
                    await link._open(link._pool.next())
                    return link
                except ssl.SSLCertVerificationError as exc:
                    raise ConfigError(f"TLS to NATS at {servers} failed: {exc}") from None
                except Refused:
                    raise credentials_refused(options) from None
                except NoTls as exc:
                    raise ConfigError(f"{exc} (a tls:// URL or PRISM_NATS_TLS_* settings)") from None
                except (OSError, TimeoutError, ProtocolViolation) as exc:
                    failure = exc
            why = reason(failure) if failure is not None else "no server"
            delay = schedule.next_delay() or CONNECT_BACKOFF.cap
            if deadline is not None and link._loop.time() + delay > deadline:
                raise NatsUnreachable(f"NATS at {servers} unreachable ({why})")
            log.warning("cannot reach NATS at %s (%s); retrying in %.1fs", servers, why, delay)
            await asyncio.sleep(delay)

    async def _open(self, server: Server) -> None:
        """One attempt: TCP, INFO, TLS if either side asks for it, CONNECT and the PONG that accepts it;
        then every subscription and whatever was published meanwhile."""
        auth = self.options.auth
        self._parser.reset()
        handshake: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._handshake = handshake
        transport: asyncio.Transport | None = None

        def made() -> _Wire:
            self._wire = _Wire(self)
            return self._wire

        try:
            async with asyncio.timeout(self.options.connect_timeout):
                transport, connection = await self._loop.create_connection(made, server.host, server.port)
                first = await handshake.get()
                if not isinstance(first, Info):
                    raise _failed(first, "the server's first line was not INFO")
                info = first.fields
                wants_tls = server.tls or auth.uses_tls
                if info.get("tls_required") or (wants_tls and info.get("tls_available")):
                    context = auth.tls_context() or ssl.create_default_context()
                    transport = await self._loop.start_tls(
                        transport,
                        connection,
                        context,
                        server_hostname=server.host,
                    )
                    if transport is None:
                        raise ConnectionError("TLS handshake with NATS failed")
                    connection.transport = transport
                elif wants_tls:
                    raise NoTls(f"NATS at {server} offers no TLS, but TLS was asked for")
                fields = self._connect_fields(server, info)
                transport.write(wire.connect(fields) + wire.PING_COMMAND)
                while (answer := await handshake.get()) is not wire.PONG:
                    if isinstance(answer, Info):  # the cluster changed meanwhile
                        info.update(answer.fields)
                    elif answer is wire.PING:
                        transport.write(wire.PONG_COMMAND)
                    elif isinstance(answer, Err) and "authorization" in answer.message.lower():
                        raise Refused(answer.message)
                    else:
                        raise _failed(answer, "CONNECT was not answered with PONG")
        except BaseException:
            self._wire = None
            if transport is not None:
                transport.abort()
            raise
        finally:
            self._handshake = None
        self.info = info
        self.server = server
        self.max_payload = int(info.get("max_payload", self.max_payload))
        self._learn(info)
        self._transport = transport
        self._can_write.set()
        self._pongs.clear()
        self._pings_out = 0
        self._control = [wire.sub(s.subject, s.sid, s.queue) for s in self._subs.values()]
        self._write_out()  # subscriptions first, then what waited, then a PING for flushes that waited
        self._arm_ping()

    def _connect_fields(self, server: Server, info: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "lang": "python3",
            "version": "prism",
            "protocol": 1,  # asynchronous INFO: the cluster's connect_urls as they change
            "headers": True,
            "no_responders": True,
            "name": self.options.name,
            "echo": True,
        }
        fields.update(self.options.auth.connect_fields(info.get("nonce"), server.user, server.password))
        return fields

    def _learn(self, info: dict[str, Any]) -> None:
        urls = info.get("connect_urls")
        if isinstance(urls, list):
            tls = self.server is not None and (self.server.tls or bool(info.get("tls_required")))
            with contextlib.suppress(ConfigError):
                self._pool.learn([str(u) for u in urls], tls)

    # -- state -----------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._transport is not None

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def subscriptions(self) -> list[str]:
        """The subjects subscribed now (what a reconnect re-sends)."""
        return [sub.subject for sub in self._subs.values()]

    def backlogged(self) -> bool:
        """Whether the kernel holds at least :data:`BACKLOG_BYTES` of this connection's input unread, so
        the next passes of the event loop will deliver more (the outbox waits a little for it). Asked
        only after a read of that size: a smaller one emptied the socket, and light load pays no system
        call for the answer."""
        connection = self._wire
        if self._last_read < BACKLOG_BYTES or connection is None or connection.fd < 0:
            return False
        try:
            unread = fcntl.ioctl(connection.fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return False
        return int.from_bytes(unread, "little") >= BACKLOG_BYTES

    # -- reading ---------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        """What the current connection read: messages go to their subscription's handler, now."""
        connection = self._wire
        self._last_read = len(data)
        try:
            events = self._parser.receive(data)
        except ProtocolViolation as exc:
            if connection is not None:
                self._fail(connection, exc)
            return
        if self._handshake is not None:
            for event in events:
                self._handshake.put_nowait(event)
            return
        subs = self._subs
        parse_headers = wire.parse_headers
        for event in events:
            if type(event) is tuple:
                sid, subject, reply, header, payload = event
                sub = subs.get(sid)
                if sub is None:
                    continue  # unsubscribed while the server was sending it
                try:
                    pending = sub.handler(subject, reply, payload, parse_headers(header))
                except Exception:
                    log.exception("handler for %s failed", subject)
                    continue
                if pending is not None:
                    self._spawn(pending)
            elif connection is not None:
                self._on_control(connection, event)
                if connection is not self._wire:
                    return  # the connection was dropped: the rest of this read is stale

    def _on_control(self, connection: _Wire, event: Event) -> None:
        if event is wire.PING:
            self._control.append(wire.PONG_COMMAND)
            self._schedule_write()
        elif event is wire.PONG:
            self._pings_out = 0
            if self._pongs:
                waiter = self._pongs.popleft()
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        elif isinstance(event, Info):
            self.info.update(event.fields)
            self._learn(event.fields)
            if event.fields.get("ldm"):
                log.info("NATS server %s is entering lame duck mode (%s)", self.server, self.label)
        elif isinstance(event, Err):
            text = event.message
            lowered = text.lower()
            if "permissions violation" in lowered:
                log.warning("NATS error (%s): %s", self.label, text)  # the connection stays
            else:  # the server closes the connection after any other error
                log.warning("NATS error (%s): %s", self.label, text)
                self._fail(connection, ConnectionError(text))

    def _spawn(self, pending: Awaitable[None]) -> None:
        task = asyncio.ensure_future(pending)
        self._tasks.add(task)
        task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handler I/O failed: %s", task.exception())

    # -- writing ---------------------------------------------------------------------------------------
    def _schedule_write(self) -> None:
        if not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write_out)

    def _write_out(self) -> None:
        self._write_scheduled = False
        transport = self._transport
        if transport is None:
            return  # kept for the reconnect (publishes and PINGs; SUBs are re-made from the table)
        chunks = self._control
        if self._out:
            chunks += self._out
            self._out = []
            self._out_size = 0
        if self._ping_waiter is not None:
            chunks.append(wire.PING_COMMAND)
            self._pongs.append(self._ping_waiter)
            self._ping_waiter = None
        self._control = []
        if chunks:
            transport.write(b"".join(chunks))

    def _enqueue(self, *chunks: bytes) -> None:
        if self._draining:
            raise BusUnavailable("NATS connection is closed")
        size = sum(map(len, chunks))
        if self._transport is None and self._out_size + size > self.options.reconnect_buffer:
            raise BusUnavailable("NATS is reconnecting and the reconnect buffer is full")
        self._out.extend(chunks)
        self._out_size += size
        if self._out_size >= WRITE_NOW:
            self._write_out()
        else:
            self._schedule_write()

    def _check_size(self, size: int) -> None:
        if size > self.max_payload:
            raise PayloadTooLarge(f"message of {size} bytes is over NATS max_payload ({self.max_payload})")

    def _writable(self, connection: _Wire, writable: bool) -> None:
        if connection is self._wire:
            if writable:
                self._can_write.set()
            else:
                self._can_write.clear()

    async def _room_to_write(self) -> None:
        if not self._can_write.is_set():
            await self._can_write.wait()

    # -- the Bus interface -----------------------------------------------------------------------------
    async def publish(self, subject: str, payload: bytes, headers: Headers | None = None) -> None:
        if headers:
            block = wire.header_block(wire.encode_header_lines(headers))
            await self.publish_encoded(subject, "", block, payload)
            return
        self._check_size(len(payload))
        self._enqueue(wire.pub_head(subject, "", len(payload)), payload, b"\r\n")
        await self._room_to_write()

    async def publish_encoded(self, subject: str, reply: str, header_block: bytes, payload: bytes) -> None:
        """Publish with headers already in NATS wire form (a :func:`gateway.core.nats_protocol.header_block`;
        empty for none): a connection's identity headers are encoded once when it opens."""
        size = len(header_block) + len(payload)
        self._check_size(size)
        if header_block:
            head = wire.hpub_head(subject, reply, len(header_block), len(payload))
            self._enqueue(head, header_block, payload, b"\r\n")
        else:
            self._enqueue(wire.pub_head(subject, reply, len(payload)), payload, b"\r\n")
        await self._room_to_write()

    async def publish_many(self, subject: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """:meth:`publish_encoded` of many (header block, payload) pairs to ``subject``, written a
        thousand at a time (a sweep announcing 50,000 disconnects)."""
        for start in range(0, len(messages), PUBLISH_MANY_CHUNK):
            chunk = messages[start : start + PUBLISH_MANY_CHUNK]
            for header, payload in chunk:
                self._check_size(len(header) + len(payload))
            self._enqueue(b"".join([wire.hpub(subject, "", h, p) for h, p in chunk]))
            await self._room_to_write()
            await asyncio.sleep(0)  # let the write happen and the loop breathe between chunks

    async def reply_no_responders(self, reply: str) -> None:
        """Answer a request as nats-server does when nobody listens: an empty message with status 503."""
        await self.publish_encoded(reply, "", wire.NO_RESPONDERS, b"")

    async def subscribe(self, subject: str, handler: Handler, queue: str = "") -> _Subscription:
        if self._closed:
            raise BusUnavailable("NATS connection is closed")
        sid = next(self._sids)
        sub = self._subs[sid] = _Subscription(self, sid, subject, queue, handler)
        if self._transport is not None:
            self._control.append(wire.sub(subject, sid, queue))
            self._schedule_write()
        return sub

    def unsubscribe(self, sub: _Subscription) -> None:
        if self._subs.pop(sub.sid, None) is not None and self._transport is not None:
            self._control.append(wire.unsub(sub.sid))
            self._schedule_write()

    def new_inbox(self) -> str:
        return INBOX_PREFIX + secrets.token_hex(11)

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        """The first reply's payload. Raises nats-py's ``NoRespondersError`` when nobody listens and
        ``nats.errors.TimeoutError`` when nobody answers in time (as nats-py's ``request``)."""
        if self._request_sub is None:
            self._request_sub = await self.subscribe(self._inbox + ".*", self._on_reply)
        token = f"{self._inbox}.{next(self._tokens)}"
        answer: asyncio.Future[tuple[bytes, Headers | None]] = self._loop.create_future()
        self._requests[token] = answer
        try:
            await self.publish_encoded(subject, token, b"", payload)
            try:
                data, headers = await asyncio.wait_for(answer, timeout)
            except TimeoutError:
                raise nats.errors.TimeoutError from None
        finally:
            self._requests.pop(token, None)
        if headers is not None and headers.get(wire.STATUS) == "503" and not data:
            raise nats.errors.NoRespondersError
        return data

    def _on_reply(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        answer = self._requests.get(subject)
        if answer is not None and not answer.done():
            answer.set_result((data, headers))

    async def flush(self, timeout: float = 5.0) -> None:
        """Return once the server has processed everything sent before (a PING and its PONG)."""
        if self._closed:
            raise BusUnavailable("NATS connection is closed")
        waiter = self._ping_waiter
        if waiter is None:
            waiter = self._ping_waiter = self._loop.create_future()
            self._schedule_write()
        await asyncio.wait_for(asyncio.shield(waiter), timeout)

    # -- keepalive -------------------------------------------------------------------------------------
    def _arm_ping(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        self._ping_timer = self._loop.call_later(self.options.ping_interval, self._ping)

    def _ping(self) -> None:
        self._ping_timer = None
        connection = self._wire
        if self._transport is None or connection is None:
            return
        if self._pings_out >= MAX_OUTSTANDING_PINGS:
            self._fail(connection, ConnectionError("stale connection: PINGs unanswered"))
            return
        self._pings_out += 1
        self._control.append(wire.PING_COMMAND)
        self._pongs.append(None)
        self._schedule_write()
        self._arm_ping()

    # -- losing the connection and getting it back -----------------------------------------------------
    def _fail(self, connection: _Wire, exc: BaseException) -> None:
        """Drop ``connection`` (a protocol error, a stale connection, a fatal -ERR): as if it were lost."""
        if connection.transport is not None:
            connection.transport.abort()
        self._lost(connection, exc)

    def _lost(self, connection: _Wire, exc: BaseException | None) -> None:
        if connection is not self._wire:
            return
        self._wire = None
        if self._handshake is not None:
            self._handshake.put_nowait(exc or ConnectionError("connection closed during the handshake"))
            return
        self._transport = None
        self._control = []
        self._can_write.set()  # publishes go to the reconnect buffer, which has its own limit
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        # Flushes whose PING went out on the lost connection wait for the first PING on the next one.
        unanswered = [waiter for waiter in self._pongs if waiter is not None and not waiter.done()]
        self._pongs.clear()
        if unanswered:
            if self._ping_waiter is None:
                self._ping_waiter = self._loop.create_future()
            for waiter in unanswered:
                self._ping_waiter.add_done_callback(_pass_on(waiter))
        if self._draining or self._closed:
            self._close_now()
            return
        log.warning("NATS disconnected (%s)%s", self.label, f": {reason(exc)}" if exc else "")
        self._reconnecting = asyncio.ensure_future(self._reconnect())
        self._notify(False)

    async def _reconnect(self) -> None:
        wait = max(0.1, self.options.reconnect_time_wait)
        schedule = Backoff(base=min(0.1, wait), cap=wait).schedule()
        rounds = 0
        while not self._closed:
            for _ in list(self._pool.servers):
                server = self._pool.next()
                try:
                    await self._open(server)
                except Refused as exc:
                    log.warning("NATS at %s refused the credentials (%s): %s", server, self.label, exc)
                except (OSError, TimeoutError, ProtocolViolation, ssl.SSLError) as exc:
                    log.debug("reconnect to %s failed: %s", server, reason(exc))
                else:
                    log.info("NATS reconnected (%s) to %s", self.label, server)
                    self._notify(True)
                    return
                if self._closed:
                    return
            rounds += 1
            limit = self.options.max_reconnect_attempts
            if 0 <= limit <= rounds:
                log.error("NATS reconnect (%s) gave up after %d rounds", self.label, rounds)
                self._close_now()
                return
            await asyncio.sleep(schedule.next_delay() or wait)

    def _notify(self, connected: bool) -> None:
        if self._on_state is not None:
            self._spawn(self._on_state(connected))

    # -- ending ----------------------------------------------------------------------------------------
    async def drain(self) -> None:
        """Stop every subscription, let the messages already on their way arrive and their handlers
        finish (up to ``drain_timeout``), write what was published, and close."""
        if self._closed or self._draining:
            return
        if self._transport is None:
            await self.close()
            return
        # UNSUB everything, but keep the table until the server has confirmed: the messages it sent
        # before it processed the UNSUBs still reach their handlers.
        self._control += [wire.unsub(sid) for sid in self._subs]
        self._schedule_write()
        try:
            async with asyncio.timeout(self.options.drain_timeout):
                await self.flush(self.options.drain_timeout)
                self._subs.clear()
                while self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
                await self.flush(self.options.drain_timeout)  # and what the handlers published is out
        except (TimeoutError, BusUnavailable) as exc:
            log.debug("drain (%s) cut short: %r", self.label, exc)
        self._draining = True
        self._close_now()

    async def close(self) -> None:
        self._draining = True
        self._close_now()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = self._draining = True
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        self._write_out()
        connection, self._wire, self._transport = self._wire, None, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()  # what is buffered is still written
        self._fail_waiters()
        for answer in self._requests.values():
            if not answer.done():
                answer.set_exception(BusUnavailable("NATS connection is closed"))
        log.debug("NATS connection closed (%s)", self.label)

    def _fail_waiters(self) -> None:
        waiters = [w for w in self._pongs if w is not None]
        self._pongs.clear()
        if self._ping_waiter is not None:
            waiters.append(self._ping_waiter)
            self._ping_waiter = None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(BusUnavailable("NATS connection is closed"))


def _pass_on(target: _Waiter) -> Callable[[_Waiter], None]:
    """A done-callback that hands a waiter's outcome on to ``target``."""

    def pass_on(source: _Waiter) -> None:
        if target.done():
            return
        if source.cancelled():
            target.cancel()
        elif (exc := source.exception()) is not None:
            target.set_exception(exc)
        else:
            target.set_result(None)

    return pass_on


def _failed(event: Event | BaseException, what: str) -> BaseException:
    if isinstance(event, BaseException):
        return event
    if isinstance(event, Err):
        return ConnectionError(f"NATS: {event.message}")
    return ProtocolViolation(what)
