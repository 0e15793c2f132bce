"""Who may open a WebSocket, decided before the upgrade, and the per-socket guards websockets can't give.

:class:`Admission` is called from :class:`gateway.io.http.HttpRoutes` for every upgrade request on a
WebSocket route. In this order it refuses

- a browser ``Origin`` that is not allowed (by default with authentication on: any but the node's own):
  HTTP 403 (cross-site WebSocket hijacking);
- one connection more than the node holds (``max_connections``): HTTP 503 with ``Retry-After``;
- one connection more than one remote address holds (``max_connections_per_ip``): HTTP 429 with
  ``Retry-After``;
- a new connection over the node's accept rate: HTTP 503 with ``Retry-After``.

An admitted connection is counted until its TCP connection is lost, whatever happens after admission
(a later check refuses it, the handshake fails, the session ends), so the counts cannot leak.

:func:`connection_class` makes the :class:`websockets.asyncio.server.ServerConnection` subclass the node
serves with. It counts handshakes that time out, budgets pings like messages (a ping flood is closed with
1008), and drops the TCP connection of a client whose unread pongs pile up past ``max_outbound_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Callable, Generator
from typing import Any, ClassVar

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event, State
from websockets.server import ServerProtocol

from gateway.config import GatewayConfig
from gateway.core.limits import (
    ConnectionCounts,
    InboundGuard,
    OriginPolicy,
    RatePolicy,
    Reason,
    TokenBucket,
    Verdict,
    effective_max_connections,
    retry_after,
)
from gateway.metrics import GatewayMetrics
from shared.close_codes import CloseCode

log = logging.getLogger("prism.admission")

# Seconds a client refused for a connection cap is asked to wait: connections free up slowly.
CAP_RETRY_AFTER = 5
# Frames websockets buffers per connection before it stops reading the socket (its default, made explicit):
# with max_message_bytes that bounds a connection's inbound memory to about 16 x 64 KiB.
INBOUND_QUEUE_FRAMES = 16


def open_files_limit() -> int | None:
    """This process's soft limit of open files, or None if it is unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def rate_policy(config: GatewayConfig) -> RatePolicy:
    return RatePolicy(config.message_rate, config.message_burst, config.rate_violations, config.rate_window)


class Rejections:
    """``prism_rejections_total{node, reason}``, one child per reason, looked up once."""

    def __init__(self, metrics: GatewayMetrics, node_id: str) -> None:
        self._counter = metrics.rejections
        self._node = node_id
        self._children: dict[Reason, Any] = {}

    def count(self, reason: Reason) -> None:
        child = self._children.get(reason)
        if child is None:
            child = self._children[reason] = self._counter.labels(node=self._node, reason=reason.value)
        child.inc()


class Admission:
    def __init__(
        self,
        config: GatewayConfig,
        rejections: Rejections,
        clock: Callable[[], float] = time.monotonic,
        files_limit: int | None = None,
    ) -> None:
        self.clock = clock
        self.rejections = rejections
        # With authentication on, a browser page of another site must be allowed explicitly.
        self.origins = OriginPolicy(config.allowed_origins, same_origin_default=config.auth_enabled)
        limit = files_limit if files_limit is not None else open_files_limit()
        self.counts = ConnectionCounts(
            effective_max_connections(config.max_connections, limit), config.max_connections_per_ip
        )
        self.accept = (
            TokenBucket(config.accept_rate, config.accept_burst, clock()) if config.accept_rate > 0 else None
        )

    def check(self, connection: ServerConnection, request: Request) -> Response | None:
        """None to let the upgrade go on (the connection is then counted), or the refusal to send."""
        if not self.origins.allows(request.headers.get_all("Origin"), request.headers.get_all("Host")):
            self.rejections.count(Reason.ORIGIN)
            return connection.respond(403, "origin not allowed\n")
        ip = _ip_of(connection)
        if (reason := self.counts.refusal(ip)) is not None:
            self.rejections.count(reason)
            if reason is Reason.MAX_CONNECTIONS:
                response = connection.respond(503, f"node full: {self.counts.max_total} connections\n")
            else:
                limit = self.counts.max_per_ip
                response = connection.respond(429, f"too many connections from your address (max {limit})\n")
            response.headers["Retry-After"] = str(CAP_RETRY_AFTER)
            return response
        if self.accept is not None and not self.accept.take(self.clock()):
            self.rejections.count(Reason.ACCEPT_RATE)
            response = connection.respond(503, "too many new connections: retry later\n")
            response.headers["Retry-After"] = retry_after(self.accept.wait(self.clock()))
            return response
        self.counts.acquire(ip)
        if isinstance(connection, GuardedConnection):
            connection.admitted_ip = ip  # released in connection_lost
        else:  # a plain ServerConnection (not served by the node): release when its TCP connection ends
            connection.connection_lost_waiter.add_done_callback(lambda _: self.counts.release(ip))
        return None

    def release(self, ip: str) -> None:
        self.counts.release(ip)

    @property
    def connections(self) -> int:
        """Admitted connections whose TCP connection is still there."""
        return self.counts.total


def _ip_of(connection: ServerConnection) -> str:
    try:
        address = connection.remote_address
    except Exception:  # a transport that already went away
        return ""
    return str(address[0]) if address else ""


class GuardedConnection(ServerConnection):
    """A :class:`ServerConnection` that releases its admission, counts handshake timeouts, budgets pings
    and refuses to buffer pongs for a client that does not read. Configured by :func:`connection_class`.
    """

    admission: ClassVar[Admission | None] = None
    rejections: ClassVar[Rejections | None] = None
    ping_policy: ClassVar[RatePolicy | None] = None
    max_unread: ClassVar[int] = 1 << 20
    closing_tasks: ClassVar[set[asyncio.Task[None]]] = set()
    # Every TCP connection accepted and not yet lost, handshaking or not: what stop() must not leave open.
    accepted: ClassVar[set[GuardedConnection]] = set()
    # Per instance, set only when used (class defaults cost idle connections nothing).
    admitted_ip: str | None = None
    pings: InboundGuard | None = None
    abusive = False  # closing for a ping flood

    @classmethod
    def abort_accepted(cls, silent_only: bool = False) -> int:
        """Drop the TCP connections still open (``silent_only``: those whose upgrade request has not
        arrived); how many there were. For a node that stops."""
        dropped = [c for c in cls.accepted if not silent_only or c.request is None]
        for connection in dropped:
            connection.transport.abort()
        return len(dropped)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.accepted.add(self)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().handshake(*args, **kwargs)
        except asyncio.CancelledError:  # websockets' open_timeout, or the task cancelled
            timed_out = self.protocol.state is State.CONNECTING and self.server.is_serving()
            if timed_out and self.rejections is not None:
                self.rejections.count(Reason.HANDSHAKE_TIMEOUT)
            # websockets' handler closes the TCP connection on errors but not on cancellation (its
            # client does both): a handshake cancelled with the event loop would leave the socket open.
            self.transport.abort()
            raise

    def process_event(self, event: Event) -> None:
        super().process_event(event)
        if type(event) is Frame and event.opcode is Opcode.PING and self.ping_policy is not None:
            self._on_ping(self.ping_policy)

    def _on_ping(self, policy: RatePolicy) -> None:
        # websockets has already queued the pong; a ping over the rate is counted, and a flood of them
        # closes the connection like a flood of messages does.
        now = self.loop.time()
        if self.pings is None:
            self.pings = InboundGuard(policy, now)
        verdict = self.pings.admit(policy, now)
        if verdict is Verdict.PASS or self.abusive or self.protocol.state is not State.OPEN:
            return
        if self.rejections is not None:
            self.rejections.count(Reason.PING_FLOOD if verdict is Verdict.DROP else Reason.RATE_ABUSE)
        if verdict is Verdict.CLOSE:
            self.abusive = True
            task = self.loop.create_task(self._fail(CloseCode.POLICY_VIOLATION, "ping rate limit exceeded"))
            self.closing_tasks.add(task)
            task.add_done_callback(self.closing_tasks.discard)

    async def _fail(self, code: int, reason: str) -> None:
        """Close at once, as websockets does for protocol errors: close frame, EOF, and the TCP connection
        dropped if the client has not closed it within close_timeout."""
        with contextlib.suppress(ConnectionClosed):
            async with self.send_context():
                self.protocol.fail(code, reason)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        before = transport.get_write_buffer_size()
        super().data_received(data)
        # What grew here is websockets' own answers (pongs, close frames); Prism's writes are checked by
        # the Flusher. A client that keeps pinging without reading would grow this without end.
        after = transport.get_write_buffer_size()
        if after > before and after > self.max_unread:
            if self.rejections is not None:
                self.rejections.count(Reason.UNREAD_PONGS)
            transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.accepted.discard(self)
        ip, self.admitted_ip = self.admitted_ip, None
        if ip is not None and self.admission is not None:
            self.admission.release(ip)
        break_cycles(self.protocol)


def break_cycles(protocol: ServerProtocol) -> None:
    """Let a closed connection be freed by reference counting, not by a full garbage collection.

    websockets 17 leaves reference cycles through every server protocol: its parser, a generator
    parked at its last ``yield`` once the connection is closed, whose frame holds the protocol; the
    ``select_subprotocol`` it binds onto the protocol, whose closure holds the connection; and, when the
    client vanished without a close frame, the parser's ``EOFError``, whose traceback holds the parser's
    frame. Without this, 1,000 closing connections left 57,000 objects for the next full collection,
    which took 77 ms with nothing delivered meanwhile (docs/benchmarks.md). Called once the TCP
    connection is gone, when the protocol is CLOSED and never steps its parser or negotiates again; the
    exception itself is kept (it explains the close), only its traceback is dropped.
    """
    parser = getattr(protocol, "parser", None)
    if isinstance(parser, Generator):
        parser.close()
    vars(protocol).pop("select_subprotocol", None)  # the class's own method remains
    error = getattr(protocol, "parser_exc", None)
    if isinstance(error, BaseException):
        error.__traceback__ = None


def connection_class(
    admission: Admission, rejections: Rejections, config: GatewayConfig
) -> type[GuardedConnection]:
    """A :class:`GuardedConnection` subclass bound to one node's admission, metrics and limits."""
    policy = rate_policy(config)

    class NodeConnection(GuardedConnection):
        pass

    NodeConnection.admission = admission
    NodeConnection.rejections = rejections
    NodeConnection.ping_policy = policy if policy.enabled else None
    NodeConnection.max_unread = config.max_outbound_bytes
    NodeConnection.closing_tasks = set()
    NodeConnection.accepted = set()
    return NodeConnection
