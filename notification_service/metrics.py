"""The notification service's Prometheus metrics, on an injectable registry. Names are defined once, here."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from notification_service.core import Kind, Problem, SelfRefusal

NAMES = {
    "received": "prism_notify_received_total",
    "redelivered": "prism_notify_redelivered_total",
    "delivered": "prism_notify_delivered_total",
    "no_recipients": "prism_notify_no_recipients_total",
    "stored": "prism_notify_stored_total",
    "replayed": "prism_notify_replayed_total",
    "retries": "prism_notify_retries_total",
    "dead_lettered": "prism_notify_dead_lettered_total",
    "expired": "prism_notify_expired_total",
    "processing": "prism_notify_processing_seconds",
    "in_flight": "prism_notify_in_flight",
    "backlog": "prism_notify_backlog",
    "ready": "prism_notify_ready",
    "nats_connected": "prism_notify_nats_connected",
    "client_requests": "prism_notify_client_requests_total",
}

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Every label value known in advance: each series exists at 0 from the start (docs/notifications.md).
# received also counts notifications whose subject names no kind ("invalid").
RECEIVED_KINDS = (*(kind.value for kind in Kind), "invalid")
# Only a failed delivery or a failed store is tried again; every other problem is dead-lettered at once.
RETRY_REASONS = (Problem.NO_RECEIPT.value, Problem.NATS_ERROR.value)
EXPIRED_WHERE = ("stream", "inbox")
# How the worker settled a notification (prism_notify_processing_seconds{outcome}).
PROCESSING_OUTCOMES = ("delivered", "stored", "no_recipients", "expired", "retry", "dead_lettered", "error")


def _counter(name: str) -> str:
    return NAMES[name].removesuffix("_total")  # prometheus_client appends _total itself


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.received = Counter(
            _counter("received"),
            "Notifications taken from the stream for the first time, by kind (user, room, broadcast, ...)",
            ["kind"],
            registry=registry,
        )
        self.redelivered = Counter(
            _counter("redelivered"),
            "Notifications received again (after a retry, or from an instance that died holding them)",
            registry=registry,
        )
        self.delivered = Counter(
            _counter("delivered"),
            "Notifications a gateway confirmed written to at least one socket, by kind",
            ["kind"],
            registry=registry,
        )
        self.no_recipients = Counter(
            _counter("no_recipients"),
            "Room and broadcast notifications that had nobody to reach (nothing is stored for them)",
            ["kind"],
            registry=registry,
        )
        self.stored = Counter(
            _counter("stored"), "Notifications stored in an offline user's inbox", registry=registry
        )
        self.replayed = Counter(
            _counter("replayed"),
            "Inbox notifications delivered (receipt confirmed) and removed",
            registry=registry,
        )
        self.retries = Counter(
            _counter("retries"),
            "Tries that failed and were scheduled again with a delay, by reason",
            ["reason"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            _counter("dead_lettered"), "Notifications moved to the dead-letter stream, by reason", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.expired = Counter(
            _counter("expired"),
            "Notifications dropped because their ttl had passed, by where (stream, inbox)",
            ["where"],
            registry=registry,
        )
        self.processing = Histogram(
            NAMES["processing"],
            "Seconds from taking a notification from the stream to settling it, by outcome",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(NAMES["in_flight"], "Notifications being processed", registry=registry)
        self.backlog = Gauge(
            NAMES["backlog"],
            "Notifications in the stream not yet settled by any instance (read every 5 s)",
            registry=registry,
        )
        self.ready = Gauge(NAMES["ready"], "1 while the service takes notifications", registry=registry)
        self.nats_connected = Gauge(NAMES["nats_connected"], "1 while connected to NATS", registry=registry)
        self.client_requests = Counter(
            _counter("client_requests"),
            "Clients' notify.self requests (PRISM_NOTIFY_CLIENT_REQUESTS), by outcome: accepted or why not",
            ["outcome"],
            registry=registry,
        )
        # Series that exist from the start at 0, so dashboards and alerts see them before the first event.
        for kind in RECEIVED_KINDS:
            self.received.labels(kind=kind)
        for kind in Kind:
            self.delivered.labels(kind=kind.value)
            self.no_recipients.labels(kind=kind.value)
        for reason in RETRY_REASONS:
            self.retries.labels(reason=reason)
        for problem in Problem:
            self.dead_lettered.labels(reason=problem.value)
        for where in EXPIRED_WHERE:
            self.expired.labels(where=where)
        for outcome in PROCESSING_OUTCOMES:
            self.processing.labels(outcome=outcome)
        for outcome in ("accepted", *(refusal.value for refusal in SelfRefusal)):
            self.client_requests.labels(outcome=outcome)
