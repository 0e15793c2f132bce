"""One gateway node: wires hub, outbox, NATS, presence and the WebSocket server, and owns the lifecycle.

    start()  open the metrics port (if any), connect NATS, bind the presence bucket, subscribe, sweep
             leftovers, beat, listen -> ready
    drain()  unready, stop accepting, ask clients to reconnect (1012) over drain_seconds, wait for them
    stop()   remove this node from presence, drain NATS and close it, then close the metrics port

:func:`run` adds signal handling for the ``prism gateway`` process: the first SIGTERM/SIGINT drains,
a second one exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, replace

from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry

from gateway.config import GatewayConfig, random_node_id
from gateway.control import Control
from gateway.core.api_auth import ApiCredentials
from gateway.core.auth import choose_subprotocol
from gateway.core.history_layout import Recoverable, stream_specs
from gateway.core.http_backends import HttpBackend, HttpRouting
from gateway.core.hub import Hub, Scope
from gateway.delivery import Delivery, Recovering
from gateway.features import Features, NoHttpBackends, NoKeepalive, NoRecovery, NoRoomEvents
from gateway.io.admission import Admission, Rejections, rate_policy
from gateway.io.auth import Access, Authenticator, AuthzCallout, KeyRing, policy_of
from gateway.io.bus import NatsBus
from gateway.io.closer import Closer
from gateway.io.history import HistoryStore
from gateway.io.http import HttpRoutes
from gateway.io.http_api import HttpApi
from gateway.io.http_backends import HttpBackends
from gateway.io.http_hooks import HttpHooks
from gateway.io.http_polls import HttpPolls
from gateway.io.interests import InterestSync
from gateway.io.keepalive import Keepalive
from gateway.io.liveness import Liveness
from gateway.io.nats_link import NatsLink
from gateway.io.outbox import Flusher, LocalConn, Outgoing, is_open
from gateway.io.presence_api import PresenceApi
from gateway.io.presence_store import (
    WINDOW,
    BucketOptions,
    KvPresenceStore,
    open_layout,
)
from gateway.io.presence_writer import PresenceWriter
from gateway.io.room_presence import RoomPresence
from gateway.io.static import StaticSite
from gateway.io.tasks import cancel_and_wait
from gateway.io.websocket import WsConnection, WsServer, WsSettings
from gateway.membership import Membership
from gateway.metrics import GatewayMetrics, TimedPresence, watch_outbound
from gateway.recovery import Recovery
from gateway.session import Sessions
from gateway.traces import TracedDelivery
from shared import listen, logs, tracing
from shared.backoff import Backoff
from shared.close_codes import CloseCode
from shared.health_http import HealthServer
from shared.lifecycle import State, not_ready_reason, run_until_signalled
from shared.listen import check_can_listen
from shared.nats_connection import NatsOptions
from shared.presence import PresenceReader
from shared.presence_keys import Layout
from shared.startup import StartupSteps

log = logging.getLogger("prism.node")

# Seconds a stopping node waits for HTTP disconnect notifications still in flight.
HTTP_NOTIFY_GRACE = 10.0


@dataclass(frozen=True, slots=True)
class _Registry:
    """The presence registry as this node opened it."""

    js: JetStreamContext
    layout: Layout
    buckets: dict[str, KeyValue]
    store: KvPresenceStore
    writer: PresenceWriter


@dataclass(frozen=True, slots=True)
class _Parts:
    """What :meth:`Node._build` made and :meth:`Node._start_parts` starts."""

    sessions: Sessions
    handlers: Delivery | TracedDelivery
    delivery: Delivery
    control: Control
    http_backends: HttpBackends | None


class Node:
    def __init__(self, config: GatewayConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.node_id = config.node_id or random_node_id()
        self.subjects = config.subjects
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry, self.node_id, config.routes)
        self.metrics.build.info({"version": _version(), "node": self.node_id})
        watch_outbound(self.metrics, self.node_id, lambda: (m.handle for m in self.hub.conns.values()))
        self.hub: Hub[LocalConn] = Hub(config.max_rooms_per_conn)
        self.admission = Admission(config, Rejections(self.metrics, self.node_id))  # before the upgrade
        self.state = State.NEW
        self._written_frames = self.metrics.frames_out.labels(node=self.node_id)
        self._written_bytes = self.metrics.bytes_out.labels(node=self.node_id)
        slow = self.metrics.slow_consumers.labels(node=self.node_id)
        # The flusher reports slow consumers to the closer, which flushes before it closes: the one knot
        # between two parts, tied by a method of the node (_flush).
        self.closer = Closer(self._flush, config.max_outbound_bytes, slow.inc)
        self.flusher: Flusher = Flusher(
            config.max_outbound_bytes, self.closer.slow_consumer, self._on_written
        )
        self._bus: NatsBus | None = None
        self._steps = StartupSteps()  # what the start waits for (NATS, JetStream), in /readyz
        self._beats_bus: NatsLink | None = None  # liveness's own connection (gateway/io/liveness.py)
        self._sessions: Sessions | None = None
        self._server: WsServer | None = None
        self._draining: asyncio.Future[None] | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._room_presence: RoomPresence | None = None
        self._recovery: Recovery | None = None
        self._presence_api: PresenceApi | None = None
        self.liveness: Liveness | None = None
        self.writer: PresenceWriter | None = None
        self._repairing: asyncio.Task[None] | None = None
        self._keepalive: Keepalive | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._bucket = BucketOptions()
        self.port = config.port
        # /metrics on a port of its own (PRISM_METRICS_PORT), so a public listener never exposes it.
        self.metrics_server = HealthServer(self.registry, self.is_ready, self.not_ready_reason)
        self.api: HttpApi | None = None  # the HTTP API (PRISM_API_PORT)
        self._http: HttpHooks | None = None  # HTTP backends (PRISM_HTTP_BACKENDS_FILE)
        self._polls: HttpPolls | None = None  # their poll_url loops

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the ports, connect to NATS, open the presence registry, build the sessions and what they
        need, start them, join the cluster, and accept clients. A user mistake (a taken port, a bad key
        or routes file, refused credentials) fails it before this node touches the presence of its id."""
        self.state = State.STARTING
        keyring = KeyRing(self.config) if self.config.auth_enabled else None  # bad key files fail here
        http_backends = self.config.http_backends()  # a bad routes file too
        authenticator = await self._open_ports(keyring)
        bus, beats = await self._connect_nats()
        registry = await self._open_registry(bus)
        parts = self._build(bus, registry, authenticator, http_backends)
        await self._start_parts(bus, parts)
        await self._join_cluster(bus, beats, registry, parts.sessions)
        self._go_live(bus)

    async def _open_ports(self, keyring: KeyRing | None) -> Authenticator | None:
        """Every port this node serves, the public one last: a taken one fails here, before NATS. Then
        the public port listens while NATS and JetStream settle (a whole cluster starting at once):
        /healthz says alive, /readyz says what the node waits for, and upgrades get 503."""
        await check_can_listen(self.config.host, self.config.port, listen.GATEWAY)
        await self._open_metrics_port()
        await self._open_api_port(keyring)
        authenticator = None
        if keyring is not None:
            authenticator = Authenticator(keyring, policy_of(self.config), self.metrics, self.node_id)
        await self._listen(authenticator)
        return authenticator

    async def _connect_nats(self) -> tuple[NatsBus, NatsLink]:
        """The data-plane connection, and liveness's own (gateway/io/liveness.py): heartbeats must not
        queue behind deliveries."""
        options = NatsOptions(
            servers=self.config.nats_servers,
            name=f"prism-gateway-{self.node_id}",
            auth=self.config.nats_auth,
        )
        self._steps.waiting = f"NATS at {', '.join(self.config.nats_servers)}"
        bus = self._bus = await NatsBus.connect(options, self._on_nats_state)
        beats_options = replace(options, name=f"prism-gateway-{self.node_id}-liveness")
        beats = self._beats_bus = await NatsLink.connect(beats_options, self._on_beats_link)
        self.flusher.backlogged = bus.backlogged
        self.metrics.nats_connected.labels(node=self.node_id).set(1)
        return bus, beats

    async def _open_registry(self, bus: NatsBus) -> _Registry:
        """The presence buckets (created by the first node, waiting for JetStream) and this node's writer."""
        bucket = self._bucket = BucketOptions(
            self.config.presence_bucket,
            self.config.presence_replicas,
            self.config.presence_storage,
            self.config.presence_shards,
        )
        js = bus.nc.jetstream(publish_async_max_pending=WINDOW)
        layout, buckets = await self._steps.run(
            "JetStream to serve the presence buckets", lambda: open_layout(js, bucket)
        )
        store = KvPresenceStore(js, layout, bus)
        writer = self.writer = PresenceWriter(
            store,
            self.node_id,
            retry_for=self.config.presence_retry,
            on_failure=self._schedule_repair,
            on_written=self.metrics.presence_writes.labels(node=self.node_id).inc,
        )
        writer.start()
        return _Registry(js, layout, buckets, store, writer)

    def _build(
        self,
        bus: NatsBus,
        registry: _Registry,
        authenticator: Authenticator | None,
        http_backends: tuple[HttpBackend, ...],
    ) -> _Parts:
        """Every part of the data path, each built whole from the parts it needs (no I/O yet):
        recovery -> delivery -> subscriptions -> membership -> control and the sessions."""
        config, node_id, hub, flusher = self.config, self.node_id, self.hub, self.flusher
        recovery = self._recovery = self._make_recovery(bus)
        recovering = None
        if recovery is not None:
            channels = recovery.channels
            recovering = Recovering(channels[Scope.ROOM], channels[Scope.USER], recovery.recoverable.matches)
        delivery = Delivery(node_id, self.subjects, hub, flusher, bus, self.metrics, recovering)
        # With tracing on, deliveries that carry a traceparent continue the trace (gateway/traces.py).
        handlers = TracedDelivery(delivery) if tracing.tracer is not None else delivery
        wants = recovery.wants_core if recovery is not None else hub.wants
        interests = InterestSync(bus, wants, delivery.subject_for, handlers.handler_for)
        room_presence = None
        if config.room_presence:
            buckets, layout = registry.buckets, registry.layout
            room_presence = self._room_presence = RoomPresence(
                lambda room: buckets[layout.bucket_of(room)],
                flusher,
                hub,
                config.room_presence,
                config.presence_debounce,
                config.presence_batch,
            )
        close = self.closer.close
        if config.ping_interval > 0:
            self._keepalive = Keepalive(
                config.ping_interval,
                config.ping_timeout,
                lambda conn: close(conn, CloseCode.INTERNAL_ERROR, "keepalive ping timeout"),
            )
        backends = None
        if http_backends:
            backends = HttpBackends(HttpRouting(http_backends), node_id, self.metrics, _version())
            self._http = HttpHooks(backends, node_id, config.max_rooms_per_conn)
            self._polls = HttpPolls(backends, node_id, self._open_conns_of, delivery.to_local_conn)
        features = Features(
            recovery=recovery if recovery is not None else NoRecovery(self._send_frame),
            access=self._make_access(bus, authenticator),
            keepalive=self._keepalive if self._keepalive is not None else NoKeepalive(),
            room_events=room_presence if room_presence is not None else NoRoomEvents(),
            http=self._http if self._http is not None else NoHttpBackends(),
        )
        presence = TimedPresence(registry.writer, self.metrics, node_id)
        membership = Membership(
            node_id, hub, interests, presence, features.room_events, features.recovery, self.metrics
        )
        control = Control(node_id, self.subjects, hub, bus, membership, close)
        sessions = self._sessions = Sessions(
            config,
            node_id,
            hub,
            flusher,
            bus,
            presence,
            interests,
            membership,
            self.closer,
            self.metrics,
            features,
        )
        return _Parts(sessions, handlers, delivery, control, backends)

    async def _start_parts(self, bus: NatsBus, parts: _Parts) -> None:
        """The parts' own subscriptions and streams: the request inbox, the history streams, this node's
        delivery and control subjects, the HTTP backends' clients."""
        await parts.sessions.start()
        if self._recovery is not None:
            # Creates or updates the history streams (a refusal stops the start; JetStream not ready: wait).
            await self._recovery.start(self._steps)
        handlers, control = parts.handlers, parts.control
        await bus.subscribe(self.subjects.node_conns(self.node_id), handlers.on_conn)
        await bus.subscribe(self.subjects.broadcast, handlers.on_broadcast)
        await bus.subscribe(self.subjects.node_control_conns(self.node_id), control.on_control_conn)
        await bus.subscribe(self.subjects.control_users, control.on_control_user)
        if parts.http_backends is not None:
            await parts.http_backends.start()

    async def _join_cluster(
        self, bus: NatsBus, beats: NatsLink, registry: _Registry, sessions: Sessions
    ) -> None:
        """Before accepting anyone: sweep what an earlier process with this id left, start beating, and
        (once it has listened for a TTL) sweep nodes that died while no one was watching; then answer
        presence queries."""
        room_presence = self._room_presence
        liveness = self.liveness = Liveness(
            node_id=self.node_id,
            bus=bus,
            beats=beats,
            js=registry.js,
            store=registry.store,
            writer=registry.writer,
            subjects=self.subjects,
            ttl=self.config.node_ttl,
            sweep_interval=self.config.sweep_interval,
            stats=self._stats,
            local_state=sessions.local_state,
            on_restored=sessions.announce_restored,
            on_node_swept=room_presence.node_swept if room_presence is not None else lambda node: None,
            on_sweep=self._on_sweep,
            on_error=lambda op: self.metrics.presence_errors.labels(node=self.node_id, op=op).inc(),
        )
        await self._steps.run("JetStream to record this node in the presence registry", liveness.prepare)
        await liveness.run()
        reader = PresenceReader(registry.js, registry.layout)
        self._presence_api = PresenceApi(bus, reader, liveness.table.alive, self.subjects)
        await self._presence_api.start()
        await bus.flush()

    def _go_live(self, bus: NatsBus) -> None:
        """Ping clients, publish through the HTTP API, poll HTTP backends, and be ready."""
        if self._keepalive is not None:
            self._keepalive_task = asyncio.create_task(self._keepalive.run(), name="keepalive")
        if self.api is not None:
            self.api.attach(bus.nc)
        if self._polls is not None:
            self._polls.start()
        self.state = State.READY
        self.metrics.ready.labels(node=self.node_id).set(1)
        log.info("node %s ready on port %d", self.node_id, self.port)

    def _make_access(self, bus: NatsBus, authenticator: Authenticator | None) -> Access | None:
        """Authentication of open connections (token expiry, refresh, permissions, the callout)."""
        if authenticator is None:
            return None
        callout = None
        if self.config.authz_subject:
            subject = self.subjects.authz(self.config.authz_subject)
            callout = AuthzCallout(bus.nc, subject, self.config.authz_timeout, self.node_id)
        return Access(authenticator, callout, self.closer.close)

    def _flush(self) -> None:
        self.flusher.flush()

    def _send_frame(self, conn: LocalConn, frame: bytes) -> None:
        self.flusher.send(conn, Outgoing(frame, binary=False))

    async def _listen(self, authenticator: Authenticator | None) -> None:
        """Open the public port: health, readiness and static answers at once, WebSocket upgrades (503
        until the node is ready) handed to the sessions."""
        static = await asyncio.to_thread(
            StaticSite.load,
            console=self.config.console,
            console_nodes=self.config.console_nodes,
            console_notify=self.config.console_notify,
        )
        routes = HttpRoutes(
            self.config.routes,
            None if self.config.metrics_port else self.registry,  # /metrics: 404 on the public port
            self.is_ready,
            self.not_ready_reason,
            auth=authenticator,
            admission=self.admission,
            static=static,
            node_id=self.node_id,
        )
        server = self._server = self._ws_server(routes)
        try:
            await server.listen(self.config.host, self.config.port, self.config.listen_backlog)
        except OSError as exc:  # taken since the check above
            raise listen.unavailable(exc, self.config.host, self.config.port, listen.GATEWAY) from None
        self.port = server.port
        log.info(
            "node %s answers HTTP on port %d while it starts (/readyz: 503 until ready)",
            self.node_id,
            self.port,
        )

    async def _handle(self, ws: WsConnection) -> None:
        sessions = self._sessions
        if sessions is None:  # HttpRoutes refuses upgrades until ready; this is only a safety net
            ws.close(CloseCode.TRY_AGAIN_LATER, "node not ready")
            return
        await sessions.handle(ws)

    def _ws_server(self, routes: HttpRoutes) -> WsServer:
        config = self.config
        pings = rate_policy(config)
        settings = WsSettings(
            max_message_bytes=config.max_message_bytes,
            handshake_timeout=config.handshake_timeout,
            close_timeout=config.close_timeout,
            max_unread_bytes=config.max_outbound_bytes,
            ping_policy=pings if pings.enabled else None,  # a client's pings count like its messages
            compression=config.compression,
        )
        return WsServer(
            settings,
            routes,
            self._handle,
            on_limit=self.admission.rejections.count,
            release=self.admission.release,
            choose_subprotocol=choose_subprotocol,  # prism, for browsers
        )

    def _make_recovery(self, bus: NatsBus) -> Recovery | None:
        """Missed-message recovery, when some rooms or users have history (PRISM_RECOVER_*)."""
        config = self.config
        recoverable = Recoverable(config.recover_rooms, config.recover_users)
        if not recoverable:
            return None
        specs = stream_specs(
            recoverable,
            self.subjects,
            config.recover_stream,
            history=config.recover_history,
            ttl=config.recover_ttl,
            max_bytes=config.recover_max_bytes,
            replicas=config.recover_replicas,
            storage=config.recover_storage,
        )
        return Recovery(
            config,
            self.node_id,
            self.hub,
            self.flusher,
            bus,
            HistoryStore(bus.nc, specs, bus),
            self.metrics,
            close=self.closer.close,
            slow_consumer=self.closer.slow_consumer,
        )

    async def _open_metrics_port(self) -> None:
        if not self.config.metrics_port:
            return
        # A port that cannot be used is a user mistake: PortUnavailable, one line and no traceback.
        await self.metrics_server.start(self.config.host, self.config.metrics_port)
        log.info("node %s serves /metrics on port %d", self.node_id, self.metrics_server.port)

    async def _open_api_port(self, keyring: KeyRing | None) -> None:
        if not self.config.api_port:
            return
        config = self.config
        credentials = ApiCredentials(config.api_keys, config.api_jwt_audience, config.jwt_leeway)
        api = HttpApi(credentials, keyring, self.subjects, self.metrics, self.node_id, self._api_unavailable)
        await api.start(config.host, config.api_port)  # ConfigError if the port is taken
        self.api = api
        log.info("node %s serves the HTTP API on port %d", self.node_id, api.port)

    def _open_conns_of(self, route: str) -> list[str]:
        """This node's open connections of ``route``: what a poll of an HTTP backend asks for."""
        return [cid for cid, m in self.hub.conns.items() if m.handle.route == route and is_open(m.handle)]

    def _api_unavailable(self) -> str | None:
        """Why the HTTP API cannot publish now: it needs NATS, not the WebSocket listener (so it keeps
        working while this node drains)."""
        if self.state not in (State.READY, State.DRAINING):
            return str(self.state.value)
        if self._bus is None or not self._bus.connected:
            return "NATS disconnected"
        return None

    def is_ready(self) -> bool:
        return not_ready_reason(self.state, self._bus is not None and self._bus.connected) is None

    def not_ready_reason(self) -> str:
        if self.state is State.STARTING and self._steps.waiting:
            return f"starting: waiting for {self._steps.waiting}"
        return not_ready_reason(self.state, self._bus is not None and self._bus.connected) or "ready"

    async def drain(self) -> None:
        """Stop accepting and ask every client to reconnect elsewhere, spread over ``drain_seconds``.
        A call while a drain runs (``stop()`` during one, say) returns when that drain is done."""
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())
        await asyncio.shield(self._draining)

    async def _drain(self) -> None:
        self.state = State.DRAINING
        self.metrics.ready.labels(node=self.node_id).set(0)
        if self._server is None:
            return
        if self._sessions is None:  # stopped while starting: nobody is connected yet
            await self._close_listener()
            return
        # New upgrades now get 503 (not ready) while /healthz, /readyz and /metrics keep answering;
        # the listener closes once every connection has gone.
        conns = [m.handle for m in self.hub.conns.values()]
        window = max(0.0, self.config.drain_seconds)
        steps = max(1, min(len(conns), int(window * 20)))
        per_step = math.ceil(len(conns) / steps) if conns else 0
        for i in range(0, len(conns), max(1, per_step)):
            for conn in conns[i : i + per_step]:
                self._sessions.close(conn, CloseCode.SERVICE_RESTART, "node draining: reconnect")
            if window and i + per_step < len(conns):
                await asyncio.sleep(window / steps)
        try:
            await asyncio.wait_for(self._sessions.idle.wait(), self.config.close_timeout + 5)
        except TimeoutError:
            log.warning("%d connections still open after drain; closing them", len(self.hub))
        await self._close_listener()
        if self.closer.tasks:
            await asyncio.gather(*self.closer.tasks, return_exceptions=True)

    async def _close_listener(self) -> None:
        # A client whose upgrade request has not arrived is dropped (it would hold the stop for
        # handshake_timeout); one accepted as the listener closes is dropped on arrival. Both retry
        # elsewhere.
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def stop(self) -> None:
        """Drain, then stop everything the node started. Concurrent calls all return when it has."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        await self.drain()
        self.state = State.STOPPED
        if self._keepalive_task is not None:
            await cancel_and_wait([self._keepalive_task])
        if self._room_presence is not None:
            await self._room_presence.stop()
        if self._presence_api is not None:
            await self._presence_api.stop()
        if self._recovery is not None:
            await self._recovery.stop()
        if self.api is not None:
            await self.api.stop()
        if self._polls is not None:
            await self._polls.stop()
        if self._http is not None:  # disconnect notifications of the drained connections go out first
            await self._http.stop(grace=HTTP_NOTIFY_GRACE)
        if self._repairing is not None:
            await cancel_and_wait([self._repairing])
        if self.writer is not None:
            await self._settle_presence(self.writer)
        if self.liveness is not None:
            await self.liveness.stop()
        if self._beats_bus is not None:
            await self._beats_bus.drain()
        if self._bus is None:
            return  # it never started (a taken port, say): no "stopped" line under the error
        await self._bus.drain()
        self.metrics.nats_connected.labels(node=self.node_id).set(0)
        await self.metrics_server.stop()  # last: scrapes see the whole drain
        log.info("node %s stopped", self.node_id)

    async def _settle_presence(self, writer: PresenceWriter) -> None:
        """Every connection is closed and announced: make sure none of its keys is left (only a failed
        write leaves any), without announcing anything again, then stop the writer."""
        await writer.flush()
        if writer.dirty:
            try:
                await asyncio.wait_for(writer.repair(list), self.config.close_timeout + 5)
            except TimeoutError:
                log.warning("could not remove this node's leftover presence keys (survivors will sweep them)")
        await writer.stop()

    # -- callbacks -------------------------------------------------------------------------------------
    async def _on_beats_link(self, connected: bool) -> None:
        if self.liveness is not None:
            self.liveness.link(connected)

    async def _on_nats_state(self, connected: bool) -> None:
        self.metrics.nats_connected.labels(node=self.node_id).set(1 if connected else 0)
        if connected:
            self.metrics.nats_reconnects.labels(node=self.node_id).inc()
            self._schedule_repair(0.0)
            if self._recovery is not None:
                self._recovery.resync()  # republished messages sent while disconnected are lost

    def _schedule_repair(self, delay: float = 1.0) -> None:
        """Make the registry match this node's connections soon: after NATS comes back, or after presence
        writes failed for ``presence_retry`` seconds. Requests while one waits to start share it."""
        if self.state is not State.READY:
            return
        if self._repairing is None or self._repairing.done():
            self._repairing = asyncio.ensure_future(self._repair_presence(delay))

    async def _repair_presence(self, delay: float) -> None:
        """Make sure the buckets exist (a NATS with in-memory storage may have come back empty) and that
        this node was not swept meanwhile, then have the writer repair its keys."""
        if self.liveness is None or self._sessions is None or self._bus is None or self.writer is None:
            return
        await asyncio.sleep(delay)
        js = self._bus.nc.jetstream()
        schedule = Backoff(base=0.5, cap=5.0).schedule()
        while True:
            try:
                await open_layout(js, self._bucket)
                await self.liveness.check_not_swept()
                break
            except Exception as exc:  # JetStream may need a moment after a cluster election
                delay = schedule.next_delay() or 5.0
                log.warning("presence repair waits for JetStream (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
        self._repairing = None  # a failure from here on schedules a new repair, queued behind this one
        await self.repair_presence()

    async def repair_presence(self) -> tuple[int, int]:
        """Make this node's presence keys exactly those of its open connections, now (through the writer,
        between two of its batches). Returns (connections rewritten, keys purged)."""
        if self.writer is None or self._sessions is None:
            return 0, 0
        rewritten, purged = await self.writer.repair(self._sessions.local_state)
        self.metrics.presence_repairs.labels(node=self.node_id, action="rewrite").inc(rewritten)
        self.metrics.presence_repairs.labels(node=self.node_id, action="purge").inc(purged)
        return rewritten, purged

    def _stats(self) -> dict[str, int]:
        return {
            "connections": len(self.hub.conns),
            "users": len(self.hub.users),
            "rooms": len(self.hub.rooms),
        }

    def _on_sweep(self, node: str, conns: int, seconds: float) -> None:
        if node != self.node_id:
            self.metrics.presence_sweeps.labels(node=self.node_id).inc()
            self.metrics.presence_swept_connections.labels(node=self.node_id).inc(conns)

    def _on_written(self, frames: int, nbytes: int) -> None:
        self._written_frames.inc(frames)
        self._written_bytes.inc(nbytes)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prism-gateway")
    except PackageNotFoundError:
        return "0+unknown"


async def run(config: GatewayConfig) -> int:
    """Run one node until SIGTERM/SIGINT, then drain and stop; a second signal exits at once."""
    node = Node(config)
    logs.bind(node=node.node_id)  # JSON log lines name the node (tasks started from here inherit it)

    def ready() -> None:
        print(f"prism gateway {node.node_id} listening on ws://{config.host}:{node.port}", flush=True)

    return await run_until_signalled(node, ready)
