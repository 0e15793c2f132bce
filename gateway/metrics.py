"""The gateway's Prometheus metrics, on an injectable registry. Names are defined once, here.

Dashboards, alert rules and docs import :data:`NAMES` rather than spelling metric names again.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from gateway.core.auth import AUTH_REJECTIONS
from gateway.core.limits import Reason
from shared.close_codes import CloseCode
from shared.frames import ErrorCode

if TYPE_CHECKING:
    from gateway.core.presence_writes import ConnRecord
    from gateway.io.outbox import LocalConn
    from gateway.io.presence_writer import PresenceOps

NAMES = {
    "connections": "prism_connections",
    "connects": "prism_connects_total",
    "disconnects": "prism_disconnects_total",
    "frames_in": "prism_frames_in_total",
    "bytes_in": "prism_bytes_in_total",
    "frames_out": "prism_frames_out_total",
    "bytes_out": "prism_bytes_out_total",
    "deliveries": "prism_deliveries_total",
    "delivered_messages": "prism_delivered_messages_total",
    "slow_consumers": "prism_slow_consumer_closes_total",
    "client_errors": "prism_client_errors_total",
    "rejections": "prism_rejections_total",
    "rooms_active": "prism_rooms_active",
    "users_active": "prism_users_active",
    "nats_connected": "prism_nats_connected",
    "nats_reconnects": "prism_nats_reconnects_total",
    "presence_errors": "prism_presence_errors_total",
    "presence_sweeps": "prism_presence_sweeps_total",
    "presence_swept_connections": "prism_presence_swept_connections_total",
    "presence_repairs": "prism_presence_repaired_keys_total",
    "presence_writes": "prism_presence_writes_total",
    "ready": "prism_ready",
    "build": "prism_build_info",
    "delivery_latency": "prism_delivery_latency_seconds",
    "outbound_pending_bytes": "prism_outbound_pending_bytes",
    "outbound_max_pending_bytes": "prism_outbound_max_pending_bytes",
    "presence_op_latency": "prism_presence_op_seconds",
    "recoveries": "prism_recoveries_total",
    "recovery_replayed": "prism_recovery_replayed_messages_total",
    "recovery_delivered": "prism_recovery_delivered_messages_total",
    "recovery_repairs": "prism_recovery_repairs_total",
    "recovery_gaps": "prism_recovery_gaps_total",
    "recovery_members": "prism_recovery_members",
    "recovery_read_latency": "prism_recovery_read_seconds",
    "recovery_errors": "prism_recovery_errors_total",
    "http_backend_calls": "prism_http_backend_calls_total",
    "http_backend_latency": "prism_http_backend_seconds",
    "api_requests": "prism_api_requests_total",
}

# Seconds from a backend's publish (header ``Prism-Sent-At``) to the write into the client's socket.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Seconds a presence KV operation (register, unregister, join, leave) took.
PRESENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PRESENCE_OPS = ("register", "unregister", "join", "leave")
# The op label of prism_presence_errors_total: the writes above, and the liveness loop's heartbeat,
# dead-node check and sweep of a dead node's entries.
PRESENCE_ERROR_OPS = (*PRESENCE_OPS, "heartbeat", "check", "sweep")

# Every label value known in advance. Each series made of them exists at 0 from the node's start, so a
# fresh cluster's dashboards show 0 instead of "No data" and rate() has a first sample to start from
# (docs/observability.md lists them).
DELIVERY_TARGETS = ("conn", "user", "room", "broadcast")
# The outcome label of prism_deliveries_total for each target: a conn. message for a connection that is
# gone or closing is "gone"; a user., room. or broadcast message that found no open local recipient is
# "no_recipient"; "not_utf8" counts the ones sent as binary frames because they were not UTF-8.
DELIVERY_OUTCOMES: Mapping[str, tuple[str, ...]] = {
    "conn": ("delivered", "gone", "not_utf8"),
    "user": ("delivered", "no_recipient", "not_utf8"),
    "room": ("delivered", "no_recipient", "not_utf8"),
    "broadcast": ("delivered", "no_recipient", "not_utf8"),
}
FRAME_KINDS = ("command", "event", "request", "message", "invalid")
# prism_disconnects_total{code}: Prism's close codes, and what websockets reports for a close frame without
# a code (1005) and a TCP connection lost without a close frame (1006). Any other code a client or a backend
# uses gets its series when it first occurs.
DISCONNECT_CODES = tuple(str(code) for code in sorted({*map(int, CloseCode), 1005, 1006}))
CLIENT_ERROR_CODES = tuple(code.value for code in ErrorCode)
REJECTION_REASONS = (*(reason.value for reason in Reason), *AUTH_REJECTIONS)
# Recovery (gateway/recovery.py). scope: a room's or a user's history. The outcome of a request for
# positions: "fresh" (no position given: from now on), "recovered" (everything missed follows), "partial"
# (the history no longer covers the gap: the client is told), "epoch" (the position is from a stream
# that no longer exists), "not_recoverable" (no history for it: plain deliveries), "failed" (the history
# could not be read: closed with 1013 to try again). errors: the history operation that failed.
RECOVERY_SCOPES = ("room", "user")
RECOVERY_OUTCOMES = ("fresh", "recovered", "partial", "epoch", "not_recoverable", "failed")
RECOVERY_ERROR_OPS = ("read", "state", "sync")
RECOVERY_READ_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# prism_http_backend_calls_total{kind, outcome}: what a node asked an HTTP backend, and how the call ended
# (after its retries): ok (2xx), status (another HTTP status), refused (no connection), broken (the
# connection failed mid-call), timeout, busy (the node's concurrency limit and queue for it were full).
HTTP_BACKEND_KINDS = ("connect", "event", "request", "disconnect", "poll")
HTTP_BACKEND_OUTCOMES = ("ok", "status", "refused", "broken", "timeout", "busy")
# Seconds one call to an HTTP backend took, retries and the wait for a free slot included.
HTTP_BACKEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _strip_total(name: str) -> str:
    # prometheus_client appends _total to counters itself.
    return name.removesuffix("_total")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, node: str, routes: Iterable[str] = ("/ws",)) -> None:
        """``routes``: the node's WebSocket routes, whose connection series exist from the start."""
        self.registry = registry
        n = NAMES
        self.connections = Gauge(
            n["connections"], "Open WebSocket connections", ["node", "route"], registry=registry
        )
        self.connects = Counter(
            _strip_total(n["connects"]),
            "Accepted WebSocket connections",
            ["node", "route"],
            registry=registry,
        )
        self.disconnects = Counter(
            _strip_total(n["disconnects"]),
            "Closed connections by close code",
            ["node", "code"],
            registry=registry,
        )
        self.frames_in = Counter(
            _strip_total(n["frames_in"]), "Frames received from clients", ["node", "kind"], registry=registry
        )
        self.bytes_in = Counter(
            _strip_total(n["bytes_in"]), "Payload bytes received from clients", ["node"], registry=registry
        )
        self.frames_out = Counter(
            _strip_total(n["frames_out"]), "Frames written to clients", ["node"], registry=registry
        )
        self.bytes_out = Counter(
            _strip_total(n["bytes_out"]), "Bytes written to client sockets", ["node"], registry=registry
        )
        self.hot = DeliveryCounters()
        registry.register(_DeliveryCollector(node, self.hot))
        self.slow_consumers = Counter(
            _strip_total(n["slow_consumers"]),
            "Connections closed because they read too slowly",
            ["node"],
            registry=registry,
        )
        self.client_errors = Counter(
            _strip_total(n["client_errors"]),
            "Error frames sent, by code",
            ["node", "code"],
            registry=registry,
        )
        self.rejections = Counter(
            _strip_total(n["rejections"]),
            "Handshakes, frames and connections refused by a limit or by auth, by reason",
            ["node", "reason"],
            registry=registry,
        )
        self.rooms_active = Gauge(n["rooms_active"], "Rooms with a local member", ["node"], registry=registry)
        self.users_active = Gauge(
            n["users_active"], "Users with a local connection", ["node"], registry=registry
        )
        self.nats_connected = Gauge(
            n["nats_connected"], "1 while connected to NATS", ["node"], registry=registry
        )
        self.nats_reconnects = Counter(
            _strip_total(n["nats_reconnects"]), "NATS reconnections", ["node"], registry=registry
        )
        self.presence_errors = Counter(
            _strip_total(n["presence_errors"]),
            "Failed presence KV operations",
            ["node", "op"],
            registry=registry,
        )
        self.presence_sweeps = Counter(
            _strip_total(n["presence_sweeps"]),
            "Sweeps of a dead node's presence entries carried out by this node",
            ["node"],
            registry=registry,
        )
        self.presence_swept_connections = Counter(
            _strip_total(n["presence_swept_connections"]),
            "Dead nodes' connections removed from presence and announced on client.disconnect by this node",
            ["node"],
            registry=registry,
        )
        self.presence_repairs = Counter(
            _strip_total(n["presence_repairs"]),
            "Presence keys of this node rewritten or purged to match its connections (after NATS outages)",
            ["node", "action"],
            registry=registry,
        )
        self.presence_writes = Counter(
            _strip_total(n["presence_writes"]),
            "Presence KV writes (puts and purges) this node stored: the load it puts on the registry",
            ["node"],
            registry=registry,
        )
        self.ready = Gauge(n["ready"], "1 while the node is ready for traffic", ["node"], registry=registry)
        self.build = Info(n["build"].removesuffix("_info"), "Prism build information", registry=registry)
        self.delivery_latency = Histogram(
            n["delivery_latency"],
            "Seconds from a backend's publish (NATS header Prism-Sent-At) to the socket write, by target; "
            "only messages that carry the header are observed",
            ["node", "target"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.outbound_pending_bytes = Gauge(
            n["outbound_pending_bytes"],
            "Bytes queued for clients and not yet taken by their sockets, over all connections (at scrape)",
            ["node"],
            registry=registry,
        )
        self.outbound_max_pending_bytes = Gauge(
            n["outbound_max_pending_bytes"],
            "The largest outbound backlog of one connection, in bytes (at scrape)",
            ["node"],
            registry=registry,
        )
        self.presence_op_latency = Histogram(
            n["presence_op_latency"],
            "Seconds a presence KV operation took, by op (failed ones included)",
            ["node", "op"],
            buckets=PRESENCE_BUCKETS,
            registry=registry,
        )
        self._recovery_metrics(registry)
        self.http_backend_calls = Counter(
            _strip_total(n["http_backend_calls"]),
            "Calls to HTTP backends by backend, kind and outcome (after retries)",
            ["node", "backend", "kind", "outcome"],
            registry=registry,
        )
        self.http_backend_latency = Histogram(
            n["http_backend_latency"],
            "Seconds a call to an HTTP backend took, retries and the wait for a free slot included",
            ["node", "backend", "kind"],
            buckets=HTTP_BACKEND_BUCKETS,
            registry=registry,
        )
        self.api_requests = Counter(
            _strip_total(n["api_requests"]),
            "Requests to the HTTP API (PRISM_API_PORT) by operation and status",
            ["node", "operation", "status"],
            registry=registry,
        )
        self._start_at_zero(node, routes)

    def _recovery_metrics(self, registry: CollectorRegistry) -> None:
        n = NAMES
        self.recoveries = Counter(
            _strip_total(n["recoveries"]),
            "Requests for positions (a recover join, a connection with recover=user), by scope and outcome",
            ["node", "scope", "outcome"],
            registry=registry,
        )
        self.recovery_replayed = Counter(
            _strip_total(n["recovery_replayed"]),
            "Messages sent to clients from the history (what they missed), by scope",
            ["node", "scope"],
            registry=registry,
        )
        self.recovery_repairs = Counter(
            _strip_total(n["recovery_repairs"]),
            "History reads for a live message that never arrived (a republish lost in a NATS reconnect)",
            ["node", "scope"],
            registry=registry,
        )
        self.recovery_gaps = Counter(
            _strip_total(n["recovery_gaps"]),
            "Clients told that messages were lost (recovered: false) after they were live, by scope",
            ["node", "scope"],
            registry=registry,
        )
        self.recovery_members = Gauge(
            n["recovery_members"],
            "Recovering memberships on this node (a connection in a room or its user stream), by scope",
            ["node", "scope"],
            registry=registry,
        )
        self.recovery_read_latency = Histogram(
            n["recovery_read_latency"],
            "Seconds a history read took (the read and the stream state after it)",
            ["node"],
            buckets=RECOVERY_READ_BUCKETS,
            registry=registry,
        )
        self.recovery_errors = Counter(
            _strip_total(n["recovery_errors"]),
            "Failed history operations, by op",
            ["node", "op"],
            registry=registry,
        )

    def _start_at_zero(self, node: str, routes: Iterable[str]) -> None:
        """Create every series whose labels are known (see :data:`DELIVERY_OUTCOMES` and the others), at 0,
        so dashboards and alerts see them before the first event."""
        per_node: tuple[Counter | Gauge, ...] = (
            self.bytes_in,
            self.frames_out,
            self.bytes_out,
            self.slow_consumers,
            self.nats_reconnects,
            self.presence_sweeps,
            self.presence_swept_connections,
            self.presence_writes,
            self.nats_connected,
            self.ready,
        )
        for metric in per_node:
            metric.labels(node=node)
        for kind in FRAME_KINDS:
            self.frames_in.labels(node=node, kind=kind)
        for route in routes:
            self.connects.labels(node=node, route=route)
            self.connections.labels(node=node, route=route)
        for code in DISCONNECT_CODES:
            self.disconnects.labels(node=node, code=code)
        for target, outcomes in DELIVERY_OUTCOMES.items():
            self.hot.delivered[target] += 0
            for outcome in outcomes:
                self.hot.outcomes[target, outcome] += 0
            self.delivery_latency.labels(node=node, target=target)
        for error in CLIENT_ERROR_CODES:
            self.client_errors.labels(node=node, code=error)
        for reason in REJECTION_REASONS:
            self.rejections.labels(node=node, reason=reason)
        for op in PRESENCE_ERROR_OPS:
            self.presence_errors.labels(node=node, op=op)
        for op in PRESENCE_OPS:
            self.presence_op_latency.labels(node=node, op=op)
        for action in ("rewrite", "purge"):
            self.presence_repairs.labels(node=node, action=action)
        for scope in RECOVERY_SCOPES:
            for outcome in RECOVERY_OUTCOMES:
                self.recoveries.labels(node=node, scope=scope, outcome=outcome)
            for metric in (self.recovery_replayed, self.recovery_repairs):
                metric.labels(node=node, scope=scope)
            self.hot.recovered[scope] += 0
            self.recovery_gaps.labels(node=node, scope=scope)
        self.recovery_read_latency.labels(node=node)
        for op in RECOVERY_ERROR_OPS:
            self.recovery_errors.labels(node=node, op=op)


class DeliveryCounters:
    """Per-message counts kept as plain ints on the delivery hot path (a prometheus_client Counter takes a
    lock per increment); :class:`_DeliveryCollector` exports them when Prometheus scrapes."""

    __slots__ = ("delivered", "outcomes", "recovered")

    def __init__(self) -> None:
        self.delivered: Tally[str] = Tally()  # target -> messages queued to sockets, one per recipient
        self.outcomes: Tally[tuple[str, str]] = Tally()  # (target, outcome) -> backend messages
        self.recovered: Tally[str] = Tally()  # scope -> live messages with positions queued to sockets


class _DeliveryCollector(Collector):
    def __init__(self, node: str, counters: DeliveryCounters) -> None:
        self.node = node
        self.counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        deliveries = CounterMetricFamily(
            _strip_total(NAMES["deliveries"]),
            "Backend messages received from NATS, by target and outcome",
            labels=["node", "target", "outcome"],
        )
        for (target, outcome), count in sorted(self.counters.outcomes.items()):
            deliveries.add_metric([self.node, target, outcome], count)
        delivered = CounterMetricFamily(
            _strip_total(NAMES["delivered_messages"]),
            "Messages queued to client sockets (one per recipient)",
            labels=["node", "target"],
        )
        for target, count in sorted(self.counters.delivered.items()):
            delivered.add_metric([self.node, target], count)
        recovered = CounterMetricFamily(
            _strip_total(NAMES["recovery_delivered"]),
            "Live messages with positions queued to client sockets (one per recipient), by scope",
            labels=["node", "scope"],
        )
        for scope, count in sorted(self.counters.recovered.items()):
            recovered.add_metric([self.node, scope], count)
        yield deliveries
        yield delivered
        yield recovered


class TimedPresence:
    """:class:`~gateway.io.presence_writer.PresenceOps` that observes how long each connection's presence
    change takes from the call to its acknowledgement (``prism_presence_op_seconds{op}``), failures
    included."""

    def __init__(self, ops: PresenceOps, metrics: GatewayMetrics, node: str) -> None:
        self._ops = ops
        self._timers = {op: metrics.presence_op_latency.labels(node=node, op=op) for op in PRESENCE_OPS}

    def _timed(self, op: str, done: asyncio.Future[None]) -> asyncio.Future[None]:
        timer, started = self._timers[op], time.perf_counter()
        done.add_done_callback(lambda _: timer.observe(time.perf_counter() - started))
        return done

    def register(self, record: ConnRecord) -> asyncio.Future[None]:
        return self._timed("register", self._ops.register(record))

    def unregister(self, record: ConnRecord, rooms: Collection[str]) -> asyncio.Future[None]:
        return self._timed("unregister", self._ops.unregister(record, rooms))

    def joined(self, record: ConnRecord, room: str) -> asyncio.Future[None]:
        return self._timed("join", self._ops.joined(record, room))

    def left(self, record: ConnRecord, room: str) -> asyncio.Future[None]:
        return self._timed("leave", self._ops.left(record, room))


def watch_outbound(metrics: GatewayMetrics, node: str, conns: Callable[[], Iterable[LocalConn]]) -> None:
    """Compute the outbound queue gauges when Prometheus scrapes: bytes queued in the node plus bytes the
    sockets have not taken yet, per connection."""

    def backlogs() -> Iterator[int]:
        for conn in conns():
            yield conn.pending_bytes + conn.ws.unsent()

    metrics.outbound_pending_bytes.labels(node=node).set_function(lambda: sum(backlogs()))
    metrics.outbound_max_pending_bytes.labels(node=node).set_function(lambda: max(backlogs(), default=0))
