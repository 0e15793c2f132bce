"""Clients -> backends: one WebSocket connection's life on this node, from welcome to disconnect event.

Opening registers the connection in the hub and the presence bucket, announces it on
``client.connect`` and sends the welcome frame first. Each client frame is classified by
:func:`gateway.core.inbound.parse_client_frame` and carried out; closing undoes all of it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Callable

import orjson
from opentelemetry.trace import Span, SpanKind, use_span
from opentelemetry.util.types import AttributeValue
from prometheus_client import Counter, Gauge

from gateway.config import GatewayConfig
from gateway.core import session as core
from gateway.core.auth import Refresh
from gateway.core.http_backends import Deny, HttpBackend
from gateway.core.hub import Hub, JoinOutcome
from gateway.core.inbound import Command, Event, Join, Leave, Raw, parse_client_frame, ref_of
from gateway.core.lifecycle_events import disconnect_details, event_body, identity_headers
from gateway.core.limits import InboundGuard, Verdict
from gateway.core.presence_writes import LocalState
from gateway.core.recovery import user_recovery
from gateway.core.session import Close, Send, SessionRules
from gateway.features import Features
from gateway.io.admission import Rejections, rate_policy
from gateway.io.bus import Bus, BusUnavailable, Headers, encode_header_lines, header_block
from gateway.io.closer import Closer
from gateway.io.history import HistoryUnavailable
from gateway.io.http import split_path, user_from_query
from gateway.io.http_hooks import ClientError
from gateway.io.interests import InterestSync
from gateway.io.outbox import Flusher, LocalConn, Outgoing
from gateway.io.presence_writer import PresenceOps, PresenceUnavailable
from gateway.io.requests import RequestMux, end_span
from gateway.io.websocket import WsConnection
from gateway.membership import Membership, record_of
from gateway.metrics import FRAME_KINDS, GatewayMetrics
from gateway.recovery import UNAVAILABLE, Start
from shared import frames, logs, tracing
from shared import headers as h
from shared.close_codes import CloseCode
from shared.errors import FrameError
from shared.frames import ErrorCode, Ref
from shared.timestamps import utc_now

log = logging.getLogger("prism.session")

_EVENT_KEY = h.EVENT.encode()
_FRAME_BINARY_LINE = f"{h.FRAME}: {h.FRAME_BINARY}\r\n".encode()
_FRAME_TEXT_LINE = f"{h.FRAME}: {h.FRAME_TEXT}\r\n".encode()


class Sessions:
    """Every WebSocket connection of the node, from its upgrade to its disconnect event. Built whole:
    ``membership`` joins and leaves rooms, ``closer`` closes connections, and ``features`` holds the
    optional parts (each on, or a stand-in that does what "off" means)."""

    def __init__(
        self,
        config: GatewayConfig,
        node_id: str,
        hub: Hub[LocalConn],
        flusher: Flusher,
        bus: Bus,
        presence: PresenceOps,
        interests: InterestSync,
        membership: Membership,
        closer: Closer,
        metrics: GatewayMetrics,
        features: Features,
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.subjects = config.subjects
        self.hub = hub
        self.flusher = flusher
        self.bus = bus
        self.presence = presence
        self.interests = interests
        self.membership = membership
        self.closer = closer
        self.metrics = metrics
        self.access = features.access
        self.keepalive = features.keepalive
        self.room_events = features.room_events
        self.recovery = features.recovery
        self.http = features.http
        # Client requests to NATS backends: one inbox subscription for the node (start() subscribes it).
        self.requests = RequestMux(bus, config.request_timeout, self.on_answer)
        access = self.access
        self._parse: Callable[[str | bytes, int], Command | Refresh] = (
            parse_client_frame if access is None else access.parse
        )
        # Set while no connection is between its registration and its disconnect event (drain waits on
        # it): once set, every close has been written to the registry and announced.
        self.idle = asyncio.Event()
        self.idle.set()
        self._active = 0
        # Inbound limits: the message rate (per connection, state made on its first message) and the
        # idle timeout (a timer per connection, only when it is on).
        self.rejections = Rejections(metrics, node_id)
        self._rate = rate_policy(config)
        self.rules = SessionRules(
            config.max_rooms_per_conn,
            config.max_inflight_requests,
            config.request_timeout,
            config.idle_timeout,
            self._rate.rate,
        )
        self._guard_inbound = self._rate.enabled or config.idle_timeout > 0
        self._max_depth = config.max_json_depth
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}
        self._frames_in = {k: metrics.frames_in.labels(node=node_id, kind=k) for k in FRAME_KINDS}
        self._bytes_in = metrics.bytes_in.labels(node=node_id)
        self._per_route: dict[str, tuple[Counter, Gauge]] = {}
        # Read when Prometheus scrapes, so connects and joins do not pay for them.
        metrics.rooms_active.labels(node=node_id).set_function(lambda: len(hub.rooms))
        metrics.users_active.labels(node=node_id).set_function(lambda: len(hub.users))

    async def start(self) -> None:
        await self.requests.start()

    def new_conn_id(self) -> str:
        return f"{self.node_id}.{secrets.token_urlsafe(9)}"

    # -- the connection handler ------------------------------------------------------------------------
    async def handle(self, ws: WsConnection) -> None:
        route, query = split_path(ws.request.path if ws.request else "/")
        host, port = (ws.remote_address or ("", 0))[:2]
        identity = self.access.take(ws) if self.access is not None else None  # verified before the upgrade
        if self.access is not None and identity is None:
            ws.close(CloseCode.UNAUTHORIZED, "not authenticated")
            await ws.wait_closed()
            return
        conn = LocalConn(
            conn_id=self.new_conn_id(),
            user=identity.user if identity is not None else user_from_query(query),  # validated already
            route=route,
            remote=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",  # IPv6 in brackets
            ws=ws,
            connected_at=utc_now(),
            raw_frames=not ws.compressed,
        )
        logs.bind(self.node_id, conn.conn_id, conn.user)  # this connection's task logs with its ids
        # An HTTP connect backend may refuse it, or name its user and rooms.
        decision = await self.http.connect(conn, query, ws.request.headers if ws.request else {}, identity)
        if isinstance(decision, Deny):
            await self.closer.bounded_close(conn, decision.code, decision.reason)
            return
        rooms = decision.rooms
        if decision.user is not None:
            logs.bind(self.node_id, conn.conn_id, conn.user)
        try:
            wants_user_history, user_position = user_recovery(query)  # checked before the upgrade
        except ValueError:
            wants_user_history, user_position = False, None
        user_start: Start | None = None
        if wants_user_history:
            try:
                user_start = await self.recovery.reserve_user(conn, user_position)
            except HistoryUnavailable:
                await self.recovery.closed(conn)
                await self.closer.bounded_close(conn, CloseCode.TRY_AGAIN_LATER, UNAVAILABLE)
                return
        if not await self._open(conn, rooms):
            await self.recovery.closed(conn)
            return
        if self.access is not None and identity is not None:
            self.access.opened(conn, identity)  # closes it with 4501 when the token expires
        try:
            if wants_user_history:  # its user's recovery frame, what it missed, then live
                await self.recovery.start_user(conn, user_start)
            guard = self._watch_idle(conn) if self.config.idle_timeout > 0 else None
            async for message in ws:
                if self._guard_inbound:
                    if guard is None:
                        guard = InboundGuard(self._rate, time.monotonic())
                    verdict = guard.admit(self._rate, time.monotonic())
                    if verdict is not Verdict.PASS:
                        self._over_rate(conn, message, verdict)
                        continue
                await self._on_frame(conn, message)
        finally:
            await self.recovery.closed(conn)  # before the hub forgets it: see Recovery.wants_core
            await self._closed(conn)

    async def _open(self, conn: LocalConn, rooms: tuple[str, ...] = ()) -> bool:
        """Register ``conn`` (in ``rooms``, which a connect backend named): hub, subscriptions, presence
        keys, ``client.connect``, then the welcome, so the welcome means all of it is in place."""
        conn.header_lines = encode_header_lines(self._headers(conn))  # once, for all it will publish
        changes = self.hub.add(conn.conn_id, conn.user, conn)
        for room in rooms:  # beyond max_rooms_per_conn, the rest are left out
            if (joined := self.hub.join(conn.conn_id, room))[0] is JoinOutcome.JOINED:
                changes += joined[1]
        self._active += 1
        self.idle.clear()
        try:
            await self.interests.apply(changes)
            record = record_of(conn, self.node_id)
            written = [self.presence.register(record)]
            written += [
                self.presence.joined(record, room) for room in sorted(self.hub.rooms_of(conn.conn_id))
            ]
            await asyncio.gather(*written)
        except (PresenceUnavailable, BusUnavailable) as exc:
            # Whatever of it landed is purged by the repair the writer scheduled (it is not in the hub).
            log.warning("could not register %s: %s", conn.conn_id, exc)
            self.metrics.presence_errors.labels(node=self.node_id, op="register").inc()
            _, changes = self.hub.remove(conn.conn_id)
            await self.interests.apply(changes)
            await self.closer.bounded_close(conn, CloseCode.TRY_AGAIN_LATER, "presence registry unavailable")
            self._done()
            return False
        await self._lifecycle(self.subjects.client_connect, conn, {})
        self.keepalive.add(conn)
        welcome = frames.welcome(conn.conn_id, self.node_id, conn.user, conn.route)
        self.flusher.start(conn, Outgoing(welcome, binary=False))
        for room in sorted(self.hub.rooms_of(conn.conn_id)):
            self.room_events.joined(conn, room)
        connects, connections = self._route_metrics(conn.route)
        connects.inc()
        connections.inc()
        return True

    async def _closed(self, conn: LocalConn) -> None:
        conn.closing = True
        self._stop_idle_timer(conn)
        self.keepalive.discard(conn)
        if self.access is not None:
            self.access.closed(conn)
        member, changes = self.hub.remove(conn.conn_id)
        rooms = member.rooms if member else set()
        # Queued now, before anything can run in between: a join still in flight either sees the
        # connection closing, or was queued before this and is purged by it.
        removed = self.presence.unregister(record_of(conn, self.node_id), rooms)
        for room in rooms:
            self.room_events.left(conn, room)
        ws = conn.ws
        code = conn.close_code if conn.close_code is not None else ws.close_code
        reason = ws.close_reason or ""
        await self.interests.apply(changes)
        try:
            await removed
        except PresenceUnavailable as exc:  # the writer scheduled a repair, which purges the keys
            log.warning("could not unregister %s: %s", conn.conn_id, exc)
            self.metrics.presence_errors.labels(node=self.node_id, op="unregister").inc()
        extra = disconnect_details(code, reason, rooms, utc_now())
        await self._lifecycle(self.subjects.client_disconnect, conn, extra)
        self.http.disconnected(conn, extra)
        self._route_metrics(conn.route)[1].dec()
        self.metrics.disconnects.labels(node=self.node_id, code=str(code)).inc()
        self._done()

    def local_state(self) -> list[LocalState]:
        """Every open connection with its rooms: what the registry should hold for this node."""
        return [
            LocalState(record_of(member.handle, self.node_id), frozenset(member.rooms))
            for member in self.hub.conns.values()
            if not member.handle.closing
        ]

    async def announce_restored(self) -> None:
        """After this node was swept while alive and its keys were written back: announce each open
        connection on ``client.connect`` (``"restored": true``), since backends were told it had gone."""
        for member in list(self.hub.conns.values()):
            conn = member.handle
            if not conn.closing:
                extra = {"restored": True, "rooms": sorted(member.rooms)}
                await self._lifecycle(self.subjects.client_connect, conn, extra)

    def _done(self) -> None:
        self._active -= 1
        if not self._active:
            self.idle.set()

    def close(self, conn: LocalConn, code: int, reason: str) -> None:
        """Close ``conn`` with ``code`` once whatever is already queued for it has been written."""
        self.closer.close(conn, code, reason)

    def _route_metrics(self, route: str) -> tuple[Counter, Gauge]:
        """The connects counter and connections gauge of ``route`` (looked up once per route)."""
        found = self._per_route.get(route)
        if found is None:
            labels = {"node": self.node_id, "route": route}
            found = self._per_route[route] = (
                self.metrics.connects.labels(**labels),
                self.metrics.connections.labels(**labels),
            )
        return found

    # -- inbound limits --------------------------------------------------------------------------------
    def _over_rate(self, conn: LocalConn, message: str | bytes, verdict: Verdict) -> None:
        """A message over the connection's rate: dropped with an error frame, or (sustained) a close."""
        self._bytes_in.inc(len(message))
        if conn.closing:
            return
        self._act(conn, self.rules.over_rate(verdict, ref_of(message, self._max_depth)))

    def _watch_idle(self, conn: LocalConn) -> InboundGuard:
        guard = InboundGuard(self._rate, time.monotonic())
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.config.idle_timeout, self._check_idle, conn, guard)
        self._idle_timers[conn.conn_id] = timer
        return guard

    def _check_idle(self, conn: LocalConn, guard: InboundGuard) -> None:
        if conn.closing:
            self._idle_timers.pop(conn.conn_id, None)
            return
        decision = self.rules.idle(guard.idle_for(time.monotonic()))
        if isinstance(decision, Close):
            self._idle_timers.pop(conn.conn_id, None)
            self._act(conn, decision)
        else:
            loop = asyncio.get_running_loop()
            self._idle_timers[conn.conn_id] = loop.call_later(decision, self._check_idle, conn, guard)

    def _stop_idle_timer(self, conn: LocalConn) -> None:
        timer = self._idle_timers.pop(conn.conn_id, None)
        if timer is not None:
            timer.cancel()

    # -- client frames ---------------------------------------------------------------------------------
    async def _on_frame(self, conn: LocalConn, message: str | bytes) -> None:
        self._bytes_in.inc(len(message))
        try:
            command = self._parse(message, self._max_depth)
        except FrameError as exc:
            self._frames_in["invalid"].inc()
            self._act(conn, self.rules.invalid(exc.ref, ErrorCode(exc.code), exc.message))
            return
        if isinstance(command, Join):
            self._frames_in["command"].inc()
            if self.access is not None and (denied := await self.access.deny_join(conn, command.room)):
                self._act(conn, self.rules.forbidden(command.ref, denied))
                return
            try:
                outcome = await self._join_command(conn, command)
            except PresenceUnavailable:
                self._act(conn, self.rules.join_unavailable(command.ref))
                return
            self._act(conn, self.rules.join_answer(command.ref, outcome))
        elif isinstance(command, Refresh) and self.access is not None:  # parsed only with auth on
            self._frames_in["command"].inc()
            if (refused := self.access.refresh(conn, command.token)) is None:
                self._act(conn, core.ok(command.ref))
            else:
                self._act(conn, core.error(command.ref, refused.error_code, refused.message))
        elif isinstance(command, Leave):
            self._frames_in["command"].inc()
            await self.membership.leave_room(conn, command.room)
            self._act(conn, core.ok(command.ref))
        elif isinstance(command, Event):
            await self._on_event(conn, command)
        elif isinstance(command, Raw):
            self._frames_in["message"].inc()
            kind = _FRAME_BINARY_LINE if command.binary else _FRAME_TEXT_LINE
            block = header_block(conn.header_lines + kind)
            await self._publish(conn, self.subjects.client_message, block, command.payload, None)

    async def _join_command(self, conn: LocalConn, command: Join) -> JoinOutcome:
        """A client's join; with ``"recover": true`` through recovery (docs/protocol.md, "Recovery")."""
        if not command.recover:
            return await self.membership.join(conn, command.room)
        join = functools.partial(self.membership.join, conn, command.room)
        return await self.recovery.join_room(conn, command.room, command.position, join)

    async def _on_event(self, conn: LocalConn, event: Event) -> None:
        tracer = tracing.tracer
        if tracer is None:
            await self._send_event(conn, event, b"")
            return
        # Tracing on: the event is a span, and its context goes to the backend in the message's headers.
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.destination.name": self.subjects.client_event(event.name),
            "prism.event": event.name,
            "prism.request": event.ref is not None,
            "prism.conn": conn.conn_id,
            "prism.node": self.node_id,
        }
        name = f"prism.client_event {event.name}"
        # An event's span ends once it is published, a request's when its answer (or error) is in.
        kind = SpanKind.PRODUCER if event.ref is None else SpanKind.CLIENT
        span = tracer.start_span(name, kind=kind, attributes=attributes)
        handed_over = False
        try:
            with use_span(span, end_on_exit=False):
                handed_over = await self._send_event(conn, event, tracing.header_lines(), span)
        finally:
            if not handed_over:
                span.end()

    async def _send_event(
        self, conn: LocalConn, event: Event, trace_lines: bytes, span: Span | None = None
    ) -> bool:
        """Publish the event, or send the request; True if the request (and ``span``) is now pending."""
        if self.access is not None and (denied := await self.access.deny_event(conn, event.name)):
            self._frames_in["event" if event.ref is None else "request"].inc()
            self._act(conn, self.rules.forbidden(event.ref, denied))
            return False
        if (backend := self.http.backend_for(conn, event.name)) is not None:
            return await self._send_http_event(conn, event, backend, span)
        subject = self.subjects.client_event(event.name)
        event_line = b"%s: %s\r\n" % (_EVENT_KEY, event.name.encode())
        block = header_block(conn.header_lines + event_line + trace_lines)
        if event.ref is None:
            self._frames_in["event"].inc()
            await self._publish(conn, subject, block, event.data, None)
            return False
        self._frames_in["request"].inc()
        if self._too_many_requests(conn, event.ref):
            return False
        conn.inflight_requests += 1
        try:
            await self.requests.send(conn, subject, block, event.data, event.ref, event.name, span)
        except Exception as exc:
            conn.inflight_requests -= 1
            self._act(conn, self.rules.unreachable(event.ref, exc))
            return False
        return True

    def _too_many_requests(self, conn: LocalConn, ref: Ref) -> bool:
        """Refuse (with an error frame) a request over ``max_inflight_requests`` awaiting replies."""
        refused = self.rules.request_refused(conn.inflight_requests, ref)
        if refused is None:
            return False
        self._act(conn, refused)
        return True

    async def _send_http_event(
        self, conn: LocalConn, event: Event, backend: HttpBackend, span: Span | None
    ) -> bool:
        """An event or request for an HTTP backend. An event is sent before the connection's next frame
        is read (so a connection's events reach the backend in order); requests run side by side."""
        if event.ref is None:
            self._frames_in["event"].inc()
            failed = await self.http.event(conn, backend, event)
            if failed is not None:
                self._act(conn, core.error(None, *failed))
            return False
        self._frames_in["request"].inc()
        if self._too_many_requests(conn, event.ref):
            return False
        conn.inflight_requests += 1
        ref = event.ref

        def done(failed: ClientError | None, body: bytes) -> None:
            conn.inflight_requests -= 1
            self._act(conn, self.rules.answered(ref, failed, body))
            if span is not None:
                end_span(span, failed[0] if failed else None)

        self.http.request(conn, backend, event, done)
        return True

    def on_answer(
        self, conn: object, ref: Ref, event: str, data: bytes | None, error: ErrorCode | None
    ) -> None:
        """A backend's reply to a client request, or why there is none (from :class:`RequestMux`)."""
        assert isinstance(conn, LocalConn)
        conn.inflight_requests -= 1
        self._act(conn, self.rules.request_answer(ref, event, data, error))

    async def _publish(self, conn: LocalConn, subject: str, block: bytes, payload: bytes, ref: Ref) -> None:
        try:
            await self.bus.publish_encoded(subject, "", block, payload)
        except BusUnavailable as exc:
            self._act(conn, self.rules.not_sent(ref, exc))

    def _headers(self, conn: LocalConn) -> Headers:
        return identity_headers(record_of(conn, self.node_id))

    async def _lifecycle(self, subject: str, conn: LocalConn, extra: dict[str, object]) -> None:
        body = event_body(record_of(conn, self.node_id), **extra)
        try:
            await self.bus.publish_encoded(subject, "", header_block(conn.header_lines), orjson.dumps(body))
        except Exception as exc:
            log.warning("could not publish %s for %s: %s", subject, conn.conn_id, exc)

    def _act(self, conn: LocalConn, action: Send | Close) -> None:
        """Carry out a decision of the session core (gateway/core/session.py)."""
        if action.rejected is not None:
            self.rejections.count(action.rejected)
        if isinstance(action, Close):
            self.close(conn, action.code, action.reason)
            return
        if action.error is not None:
            self.metrics.client_errors.labels(node=self.node_id, code=action.error.value).inc()
        self.flusher.send(conn, Outgoing(action.frame, binary=False))
