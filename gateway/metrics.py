"""The gateway's Prometheus metrics, on an injectable registry. Names are defined once, here.

Dashboards, alert rules and docs import :data:`NAMES` rather than spelling metric names again.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

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
    "ready": "prism_ready",
    "build": "prism_build",
}


def _strip_total(name: str) -> str:
    # prometheus_client appends _total to counters itself.
    return name.removesuffix("_total")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, node: str) -> None:
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
        self.ready = Gauge(n["ready"], "1 while the node is ready for traffic", ["node"], registry=registry)
        self.build = Info(_strip_total(n["build"]), "Prism build information", registry=registry)


class DeliveryCounters:
    """Per-message counts kept as plain ints on the delivery hot path (a prometheus_client Counter takes a
    lock per increment); :class:`_DeliveryCollector` exports them when Prometheus scrapes."""

    __slots__ = ("delivered", "outcomes")

    def __init__(self) -> None:
        self.delivered: Tally[str] = Tally()  # target -> messages queued to sockets, one per recipient
        self.outcomes: Tally[tuple[str, str]] = Tally()  # (target, outcome) -> backend messages


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
        yield deliveries
        yield delivered
