"""The node's WebSocket server: one asyncio protocol per TCP connection, and the listener that owns them.

Everything the node does with a client socket happens here, through documented APIs only: asyncio's
``Protocol`` and ``Transport``, websockets' sans-I/O ``ServerProtocol`` for the opening handshake
(``receive_data``, ``events_received``, ``accept``, ``reject``, ``send_response``, ``data_to_send``) and
its ``Extension`` interface for permessage-deflate. Frames are parsed by
:class:`gateway.core.frame_reader.FrameReader` (which says why) and written here.

A connection goes through websockets' four states (:class:`websockets.protocol.State`):

- CONNECTING: bytes go to the handshake until the request head is complete, for at most
  ``handshake_timeout`` seconds from the TCP connect, else the TCP connection is dropped (slowloris).
  Then ``process_request`` (the node's :class:`gateway.io.http.HttpRoutes`) answers, or websockets'
  ``accept()`` does. Any answer but ``101`` is written with EOF, and the TCP connection is dropped if the
  client has not closed it ``close_timeout`` later.
- OPEN: the handler task (the node's session) reads the messages (``async for message in conn``). At most
  ``inbound_queue`` of them wait for it; then the socket is not read until it has taken most of them.
  Pings are answered (and budgeted by ``ping_policy``), pongs acknowledge :meth:`WsConnection.ping`.
  The node writes with :meth:`WsConnection.write` (frames built once for every recipient) or
  :meth:`WsConnection.encode` first (compressed connections).
- CLOSING: a close frame went out or came in. The TCP connection is dropped if it is still up
  ``close_timeout`` seconds later, whoever closed, so a client cannot hold a closed connection open.
- CLOSED: the TCP connection is gone; the handler's iteration ends once it has read what was queued.

A connection refers to nothing that refers back to it but its server's set of live connections, so a
closed one is freed by reference counting, without waiting for the cyclic garbage collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from websockets.extensions import Extension, ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import ExtensionName, ExtensionParameter, Subprotocol

from gateway.core.frame_reader import Close, Failure, FrameReader, Ping, Pong
from gateway.core.framing import CLOSE, PING, PONG, close_payload, encode_control, encode_frame
from gateway.core.limits import InboundGuard, RatePolicy, Reason, Verdict
from gateway.core.session import limit_broken
from shared.close_codes import CloseCode

log = logging.getLogger("prism.websocket")

# The end of an HTTP request head. websockets reads header lines up to CRLF and the head ends at the
# first empty one, so the first CRLFCRLF is its end; what follows is already WebSocket frames.
_HEAD_END = b"\r\n\r\n"
_NO_CLOSE_FRAME = 1006  # the close code of a connection that ended without a close frame (RFC 6455 7.1.5)


@dataclass(frozen=True, slots=True)
class WsSettings:
    """What every connection of one server shares."""

    max_message_bytes: int | None = 1 << 20
    inbound_queue: int = 16  # messages waiting for the handler before the socket is no longer read
    handshake_timeout: float = 10.0
    close_timeout: float = 10.0
    max_unread_bytes: int = 1 << 20  # answers (pongs, close frames) a client may leave unread
    ping_policy: RatePolicy | None = None  # the client's pings over this rate are counted, then closed
    compression: bool = False  # offer permessage-deflate
    server_header: str | None = "Prism"
    write_limit: int = 1 << 15  # write buffer size over which drain() waits (as websockets)


ProcessRequest = Callable[["WsConnection", Request], Response | None]
Handler = Callable[["WsConnection"], Awaitable[None]]


def _deflate_factory() -> ServerPerMessageDeflateFactory:
    # websockets' own default settings for servers (a 4 KB window each way, memLevel 5).
    return ServerPerMessageDeflateFactory(
        server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
    )


class _Negotiated(ServerExtensionFactory):
    """Hands websockets' handshake the node's permessage-deflate factory, and keeps the extension it
    negotiated for this one connection (the documented way to learn it)."""

    name = ExtensionName("permessage-deflate")

    def __init__(self, factory: ServerExtensionFactory) -> None:
        self.factory = factory
        self.extension: Extension | None = None

    def process_request_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> tuple[list[ExtensionParameter], Extension]:
        response, extension = self.factory.process_request_params(params, accepted_extensions)
        self.extension = extension
        return response, extension


class _Handshake(ServerProtocol):
    """websockets' sans-I/O server protocol, fed only the request head and used only to answer it."""

    def __init__(
        self,
        choose: Callable[[Sequence[str]], str | None],
        extensions: Sequence[ServerExtensionFactory] | None,
    ) -> None:
        super().__init__(extensions=extensions)
        self.prism_choose = choose

    def select_subprotocol(self, subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
        chosen = self.prism_choose(subprotocols)
        return Subprotocol(chosen) if chosen is not None else None


class WsConnection(asyncio.Protocol):
    """One client's TCP connection, from accept to close. Made by :class:`WsServer`."""

    __slots__ = (
        "__weakref__",
        "_closed_waiter",
        "_drain_waiter",
        "_extension",
        "_handshake",
        "_head_tail",
        "_inbox",
        "_negotiated",
        "_ping_guard",
        "_pings",
        "_reader",
        "_reading_paused",
        "_received",
        "_server",
        "_timer",
        "_waiter",
        "_writing_paused",
        "admitted_ip",
        "latency",
        "remote_address",
        "request",
        "state",
        "transport",
    )

    def __init__(self, server: WsServer) -> None:
        self._server = server
        self.state = State.CONNECTING
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None  # the upgrade request, once it has arrived
        self.remote_address: Any = None  # the peer's (host, port, ...), as asyncio reports it
        self.admitted_ip: str | None = None  # set by admission: released when the TCP connection ends
        self.latency = 0.0  # seconds between the last answered keepalive ping and its pong
        self._handshake: _Handshake | None = None
        self._negotiated: _Negotiated | None = None
        self._head_tail = b""  # the last bytes of the request head so far (a CRLFCRLF may straddle reads)
        self._timer: asyncio.TimerHandle | None = None  # handshake, then close deadline
        self._reader: FrameReader | None = None
        self._extension: Extension | None = None
        self._inbox: list[str | bytes] | None = None
        self._waiter: asyncio.Future[str | bytes] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self._received: Close | None = None  # the client's close frame
        self._ping_guard: InboundGuard | None = None  # made on the client's first ping
        self._pings: list[tuple[bytes, float]] | None = None  # keepalive pings awaiting their pong

    # -- what the node uses ----------------------------------------------------------------------------
    @property
    def compressed(self) -> bool:
        """Whether permessage-deflate was negotiated (then frames cannot be shared: :meth:`encode`)."""
        return self._extension is not None

    @property
    def close_code(self) -> int | None:
        """Once CLOSED: the code of the client's close frame, 1005 if it had none, 1006 if none came."""
        if self.state is not State.CLOSED:
            return None
        return self._received.code if self._received is not None else _NO_CLOSE_FRAME

    @property
    def close_reason(self) -> str | None:
        if self.state is not State.CLOSED:
            return None
        return self._received.reason if self._received is not None else ""

    def respond(self, status: int, text: str) -> Response:
        """A plain text answer to the upgrade request, for ``process_request`` to return (or amend)."""
        assert self._handshake is not None, "respond() is for process_request"
        return self._handshake.reject(status, text)

    def write(self, frames: list[bytes]) -> int:
        """Write complete server frames (:func:`gateway.core.framing.encode_frame`, or :meth:`encode`'s)
        while OPEN; returns the bytes the socket has not taken yet."""
        transport = self.transport
        assert transport is not None
        if self.state is State.OPEN:
            transport.writelines(frames)
        return transport.get_write_buffer_size()

    def encode(self, payload: bytes, binary: bool) -> bytes:
        """The frame of one message for this connection alone: compressed if it negotiated compression
        (each message must then be encoded in the order it is written)."""
        extension = self._extension
        if extension is None:
            return encode_frame(payload, binary=binary)
        frame = extension.encode(Frame(Opcode.BINARY if binary else Opcode.TEXT, payload))
        return encode_frame(bytes(frame.data), binary=binary, compressed=frame.rsv1)

    def unsent(self) -> int:
        """Bytes written to the socket and not yet taken by it."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (nothing if it has started). What is written before goes out
        first; the TCP connection is dropped if it is still up ``close_timeout`` seconds later."""
        if self.state is not State.OPEN:
            return
        self._send_close(code, reason)
        self._expire_in(self._server.settings.close_timeout)

    def abort(self) -> None:
        """Drop the TCP connection now, unsent data with it."""
        if self.state is State.OPEN:
            self.state = State.CLOSING  # nothing more is written to it
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        """Return once the TCP connection is gone."""
        if self.state is State.CLOSED:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._server.loop.create_future()
        await asyncio.shield(self._closed_waiter)

    async def drain(self) -> None:
        """Wait until the socket has taken most of what was written (returns at once once it is gone)."""
        if not self._writing_paused or self.state is State.CLOSED:
            return
        if self._drain_waiter is None:
            self._drain_waiter = self._server.loop.create_future()
        await asyncio.shield(self._drain_waiter)

    def ping(self) -> bytes | None:
        """Send a keepalive ping with a payload of its own and return it (None unless OPEN); its pong, or
        one to a later ping, makes :meth:`awaiting_pong` false for it and sets :attr:`latency`."""
        if self.state is not State.OPEN or self.transport is None:
            return None
        pings = self._pings if self._pings is not None else []
        payload = struct.pack("!I", random.getrandbits(32))
        while any(sent == payload for sent, _ in pings):
            payload = struct.pack("!I", random.getrandbits(32))
        pings.append((payload, self._server.loop.time()))
        self._pings = pings
        self.transport.write(encode_control(PING, payload))
        return payload

    def awaiting_pong(self, payload: bytes) -> bool:
        return self._pings is not None and any(sent == payload for sent, _ in self._pings)

    def __aiter__(self) -> WsConnection:
        return self

    def __anext__(self) -> asyncio.Future[str | bytes]:
        """The next message (str for text, bytes for binary); the iteration ends once the TCP connection
        is gone and every message that came before has been read."""
        future: asyncio.Future[str | bytes] = self._server.loop.create_future()
        inbox = self._inbox
        if inbox:
            future.set_result(inbox.pop(0))
            if not inbox:
                self._inbox = None
            if self._reading_paused and len(inbox) <= self._server.resume_below:
                self._resume_reading()
        elif self.state is State.CLOSED:
            future.set_exception(StopAsyncIteration())
        else:
            self._waiter = future
        return future

    # -- asyncio callbacks -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        server = self._server
        if not server.accept(self):  # the listener closed while this one waited in the accept queue
            transport.abort()
            return
        self.remote_address = transport.get_extra_info("peername")
        transport.set_write_buffer_limits(high=server.settings.write_limit)
        negotiated = self._negotiated = _Negotiated(server.deflate) if server.deflate is not None else None
        self._handshake = _Handshake(server.choose_subprotocol, [negotiated] if negotiated else None)
        self._timer = server.loop.call_later(server.settings.handshake_timeout, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._reader is not None:
            self._receive_frames(data)
        elif self._handshake is not None:
            self._receive_handshake(data)
        # else: closing after a failure or a refusal; what the client sends now is not read

    def eof_received(self) -> bool | None:
        # The client will send nothing more: nothing more goes to it either, and asyncio closes the
        # transport once what is buffered is written, which a client that does not read never allows.
        if self.state is not State.CLOSED:
            self.state = State.CLOSING
            self._reader = None
            self._handshake = None
            self._expire_in(self._server.settings.close_timeout)  # unless a deadline runs already
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = State.CLOSED
        self._reader = None
        self._handshake = None
        self._negotiated = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(StopAsyncIteration())
        for future in (self._drain_waiter, self._closed_waiter):
            if future is not None and not future.done():
                future.set_result(None)
        self._server.lost(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the opening handshake -------------------------------------------------------------------------
    def _receive_handshake(self, data: bytes) -> None:
        handshake = self._handshake
        assert handshake is not None
        seen = self._head_tail + data
        end = seen.find(_HEAD_END)
        if end < 0:
            self._head_tail = seen[-3:]
            head, rest = data, b""
        else:
            cut = end + len(_HEAD_END) - len(self._head_tail)
            head, rest = data[:cut], data[cut:]
        handshake.receive_data(head)
        events = handshake.events_received()
        if not events:  # more to come, or websockets refused the request (414, 431, not HTTP)
            if self._write_out(handshake.data_to_send()):
                self._refused()
            return
        request = events[0]
        assert isinstance(request, Request)
        self._answer(handshake, request)
        if rest and self._reader is not None:
            self._receive_frames(rest)

    def _answer(self, handshake: _Handshake, request: Request) -> None:
        self.request = request
        server = self._server
        try:
            response = server.process_request(self, request)
        except Exception:
            log.exception("process_request failed")
            response = handshake.reject(
                500, "Failed to open a WebSocket connection.\nSee server log for more information.\n"
            )
        if response is None:
            response = handshake.accept(request)
        if server.settings.server_header is not None:
            response.headers["Server"] = server.settings.server_header
        if response.status_code == 101 and not server.is_serving():
            response = handshake.reject(503, "Server is shutting down.\n")
        handshake.send_response(response)
        if self._write_out(handshake.data_to_send()):  # anything but 101: the answer, then EOF
            self._refused()
            return
        self._open()

    def _write_out(self, chunks: list[bytes]) -> bool:
        """Write what the handshake produced; True if it ended with EOF (it refused the request)."""
        transport = self.transport
        assert transport is not None
        for chunk in chunks:
            if chunk:
                transport.write(chunk)
            else:
                self._write_eof()
                return True
        return False

    def _refused(self) -> None:
        self._handshake = None
        self._negotiated = None
        self.state = State.CLOSING
        self._expire_in(self._server.settings.close_timeout, restart=True)

    def _open(self) -> None:
        settings = self._server.settings
        negotiated = self._negotiated
        self._extension = negotiated.extension if negotiated is not None else None
        self._handshake = None
        self._negotiated = None
        self._head_tail = b""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._reader = FrameReader(settings.max_message_bytes, self._extension)
        self.state = State.OPEN
        self._server.opened(self)

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self.state is State.CONNECTING and self._server.is_serving():
            self._server.on_limit(Reason.HANDSHAKE_TIMEOUT)
        self.abort()

    # -- frames ----------------------------------------------------------------------------------------
    def _receive_frames(self, data: bytes) -> None:
        reader = self._reader
        transport = self.transport
        assert reader is not None
        assert transport is not None
        events = reader.receive(data)
        replies: list[bytes] | None = None
        for event in events:
            kind = type(event)
            if kind is str or kind is bytes:
                self._deliver(cast(str | bytes, event))
            elif kind is Ping:
                if replies is None:
                    replies = []
                replies.append(encode_control(PONG, cast(Ping, event).data))
                if self._server.settings.ping_policy is not None and not self._ping_allowed():
                    self._write_replies(replies)
                    self._fail(CloseCode.POLICY_VIOLATION, "ping rate limit exceeded")
                    return
            elif kind is Pong:
                self._acknowledge(cast(Pong, event).data)
            elif kind is Close:
                self._write_replies(replies)
                replies = None
                self._close_received(cast(Close, event))
            else:
                failure = cast(Failure, event)
                self._write_replies(replies)
                replies = None
                if (reason := limit_broken(failure.code)) is not None:
                    self._server.on_limit(reason)
                self._fail(failure.code, failure.reason)
        self._write_replies(replies)
        if reader.stopped:
            self._reader = None

    def _write_replies(self, replies: list[bytes] | None) -> None:
        """Answer pings; a client that pings without reading loses its TCP connection past
        ``max_unread_bytes`` of answers (Prism's own frames are checked by the Flusher)."""
        if not replies or self.transport is None:
            return
        before = self.transport.get_write_buffer_size()
        self.transport.writelines(replies)
        after = self.transport.get_write_buffer_size()
        if after > before and after > self._server.settings.max_unread_bytes:
            self._server.on_limit(Reason.UNREAD_PONGS)
            self.abort()

    def _deliver(self, message: str | bytes) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(message)
                return
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = []
        inbox.append(message)
        if len(inbox) > self._server.settings.inbound_queue and not self._reading_paused:
            self._reading_paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self.transport is not None and self.state is not State.CLOSED:
            self.transport.resume_reading()

    def _ping_allowed(self) -> bool:
        """Count the client's ping against the ping rate: False once that is sustained abuse."""
        policy = self._server.settings.ping_policy
        assert policy is not None
        now = self._server.loop.time()
        guard = self._ping_guard
        if guard is None:
            guard = self._ping_guard = InboundGuard(policy, now)
        verdict = guard.admit(policy, now)
        if verdict is Verdict.PASS:
            return True
        if verdict is Verdict.DROP:  # answered all the same; it counts towards the close
            self._server.on_limit(Reason.PING_FLOOD)
            return True
        self._server.on_limit(Reason.RATE_ABUSE)
        return False

    def _acknowledge(self, payload: bytes) -> None:
        """A pong acknowledges its ping and every earlier one (RFC 6455 allows answering the last)."""
        pings = self._pings
        if pings is None:
            return
        for index, (sent, at) in enumerate(pings):
            if sent == payload:
                self.latency = self._server.loop.time() - at
                del pings[: index + 1]
                if not pings:
                    self._pings = None
                return

    # -- closing ---------------------------------------------------------------------------------------
    def _send_close(self, code: int, reason: str) -> None:
        assert self.transport is not None
        self.transport.write(encode_control(CLOSE, close_payload(code, reason)))
        self.state = State.CLOSING

    def _close_received(self, close: Close) -> None:
        self._received = close
        if self.state is State.OPEN:  # echo it, as websockets does
            assert self.transport is not None
            self.transport.write(encode_control(CLOSE, close.data))
            self.state = State.CLOSING
        self._write_eof()
        self._expire_in(self._server.settings.close_timeout)

    def _fail(self, code: int, reason: str) -> None:
        """Close at once for a broken rule: the close frame (unless one went out), EOF, and nothing more
        read; the TCP connection is dropped if the client has not closed it within ``close_timeout``."""
        self._reader = None
        if self.state is State.OPEN:
            self._send_close(code, reason)
        self._write_eof()
        self._expire_in(self._server.settings.close_timeout)

    def _write_eof(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            with contextlib.suppress(Exception):  # uvloop may raise RuntimeError on a socket going away
                transport.write_eof()
        else:
            transport.close()

    def _expire_in(self, seconds: float, restart: bool = False) -> None:
        if self._timer is not None:
            if not restart:
                return
            self._timer.cancel()
        self._timer = self._server.loop.call_later(seconds, self._expired)

    def _expired(self) -> None:
        self._timer = None
        self.abort()


class WsServer:
    """The listening socket, and every TCP connection accepted on it until it is gone.

    ``process_request(conn, request)`` answers an upgrade request itself (a :class:`Response`) or lets
    websockets accept it (None); ``handler(conn)`` runs once the connection is open, in a task of its own
    (when it returns the connection is closed with 1000, when it raises with 1011). ``on_limit`` counts what
    a limit refused, ``release(ip)`` is called for an admitted connection (``admitted_ip``) once its TCP
    connection is gone, ``choose_subprotocol(offered)`` picks the subprotocol to answer."""

    def __init__(
        self,
        settings: WsSettings,
        process_request: ProcessRequest,
        handler: Handler,
        *,
        on_limit: Callable[[Reason], None] = lambda reason: None,
        release: Callable[[str], None] = lambda ip: None,
        choose_subprotocol: Callable[[Sequence[str]], str | None] = lambda offered: None,
    ) -> None:
        self.settings = settings
        self.process_request = process_request
        self.handler = handler
        self.on_limit = on_limit
        self.release = release
        self.choose_subprotocol = choose_subprotocol
        self.deflate = _deflate_factory() if settings.compression else None
        self.resume_below = settings.inbound_queue // 4  # websockets' low-water mark
        self.loop = asyncio.get_running_loop()
        self.connections: set[WsConnection] = set()  # accepted and not yet gone, in any state
        self._handlers: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Server | None = None
        self._closing = False
        self._all_gone: asyncio.Event | None = None

    async def listen(self, host: str | None, port: int, backlog: int = 100) -> None:
        """Bind and accept (OSError if the port cannot be used)."""
        self._listener = await self.loop.create_server(
            lambda: WsConnection(self), host, port, backlog=backlog
        )

    @property
    def port(self) -> int:
        assert self._listener is not None
        assert self._listener.sockets
        return int(self._listener.sockets[0].getsockname()[1])

    def is_serving(self) -> bool:
        return not self._closing and self._listener is not None and self._listener.is_serving()

    def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Stop accepting; close open connections with ``code`` and drop those whose upgrade request has
        not arrived (one that has gets ``503``). :meth:`wait_closed` waits for all of them to go."""
        self._closing = True
        if self._listener is not None:
            self._listener.close()
        for conn in list(self.connections):
            if conn.state is State.OPEN:
                conn.close(code, reason)
            elif conn.state is State.CONNECTING and conn.request is None:
                conn.abort()

    async def wait_closed(self) -> None:
        """After :meth:`close`: return once every TCP connection is gone and every handler has returned
        (each is bounded: by ``handshake_timeout`` while connecting, by ``close_timeout`` once closing)."""
        if self.connections:
            self._all_gone = asyncio.Event()
            await self._all_gone.wait()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._listener is not None:
            await self._listener.wait_closed()

    # -- called by the connections ---------------------------------------------------------------------
    def accept(self, conn: WsConnection) -> bool:
        if self._closing:
            return False
        self.connections.add(conn)
        return True

    def opened(self, conn: WsConnection) -> None:
        task = self.loop.create_task(self._run(conn))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    def lost(self, conn: WsConnection) -> None:
        self.connections.discard(conn)
        ip, conn.admitted_ip = conn.admitted_ip, None
        if ip is not None:
            self.release(ip)
        if not self.connections and self._all_gone is not None:
            self._all_gone.set()

    async def _run(self, conn: WsConnection) -> None:
        try:
            await self.handler(conn)
        except Exception:
            log.exception("connection handler failed")
            conn.close(CloseCode.INTERNAL_ERROR)
        else:
            conn.close(CloseCode.NORMAL)
