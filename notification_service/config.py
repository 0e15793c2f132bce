"""The notification service's one configuration object, loaded like the gateway's (``PRISM_*`` / flags).

The NATS connection settings have the same names as the gateway's (``PRISM_NATS_URL``,
``PRISM_NATS_USER``, ...), so one environment can serve both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.config import setting
from shared.errors import ConfigError, InvalidName
from shared.nats_auth import NatsSettings
from shared.subjects import Subjects, validate_prefix

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class NotifyConfig(NatsSettings):
    subject_prefix: str = setting("", "prefix for every NATS subject, e.g. 'acme.' (as the gateway's)")
    stream: str = setting(
        "NOTIFICATIONS",
        "input stream name; the inbox and dead-letter streams are <stream>_INBOX, <stream>_DEAD",
    )
    consumer: str = setting("prism-notify", "durable consumer shared by every instance")
    stream_replicas: int = setting(1, "replicas of the three streams when the service creates them")
    stream_storage: str = setting("file", "storage of the three streams: file or memory")
    stream_max_age: float = setting(7 * DAY, "seconds an unprocessed notification is kept (0: no limit)")
    stream_max_msgs: int = setting(
        -1, "unprocessed notifications kept at most (-1: no limit; then publishes fail)"
    )
    stream_max_bytes: int = setting(-1, "bytes of unprocessed notifications kept at most (-1: no limit)")
    duplicate_window: float = setting(120.0, "seconds over which a repeated Nats-Msg-Id is dropped")
    inbox_max_age: float = setting(7 * DAY, "seconds a notification waits in an offline user's inbox")
    inbox_max_per_user: int = setting(100, "notifications kept per offline user; the oldest go first")
    dead_max_age: float = setting(14 * DAY, "seconds a dead letter is kept")
    max_deliveries: int = setting(5, "tries per notification before it is dead-lettered")
    retry_delay: float = setting(1.0, "seconds before the first retry; doubles each time")
    retry_max_delay: float = setting(30.0, "longest delay between two tries")
    receipt_timeout: float = setting(2.0, "seconds to wait for a gateway's delivery receipt")
    ack_wait: float = setting(
        30.0, "seconds before a notification held by a dead or stuck instance is redelivered to another"
    )
    concurrency: int = setting(64, "notifications one instance processes at once")
    metrics_host: str = setting("0.0.0.0", "address of the /metrics, /healthz and /readyz endpoint")
    metrics_port: int = setting(8090, "port of /metrics, /healthz and /readyz (0: any free port)")
    drain_timeout: float = setting(10.0, "on SIGTERM, seconds to finish notifications in flight")
    log_level: str = setting("info", "log level: debug, info, warning, error")
    notify_client_requests: bool = setting(
        False,
        "answer client requests on client.event.notify.self: a connected, named user may send a "
        "notification to themself (the web console's 'Notify me'); off unless set",
    )
    notify_client_rate: float = setting(
        10.0, "client 'notify.self' requests allowed per user per minute, per instance"
    )
    notify_client_burst: int = setting(5, "client 'notify.self' requests a user may send at once")
    notify_client_max_bytes: int = setting(4096, "largest 'notify.self' request body (bytes) accepted")

    def validate(self) -> None:
        self.nats_auth.validate()
        try:
            validate_prefix(self.subject_prefix)
        except InvalidName as exc:
            raise ConfigError(str(exc)) from None
        for name in ("stream", "consumer"):
            value = getattr(self, name)
            if not value or any(c in value for c in " .*>\t\r\n/\\"):
                raise ConfigError(
                    f"{name} must be a name without spaces, '.', '*', '>' or slashes: {value!r}"
                )
        if self.stream_storage not in ("file", "memory"):
            raise ConfigError(f"stream_storage must be 'file' or 'memory', got {self.stream_storage!r}")
        for name in (
            "stream_replicas",
            "inbox_max_per_user",
            "max_deliveries",
            "concurrency",
            "notify_client_burst",
            "notify_client_max_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name in ("stream_max_msgs", "stream_max_bytes"):
            if getattr(self, name) < -1 or getattr(self, name) == 0:
                raise ConfigError(f"{name} must be positive, or -1 for no limit")
        if not 0 <= self.stream_max_age < math.inf:
            raise ConfigError(f"stream_max_age must be zero or positive seconds, got {self.stream_max_age}")
        for name in (
            "duplicate_window",
            "inbox_max_age",
            "dead_max_age",
            "retry_delay",
            "retry_max_delay",
            "receipt_timeout",
            "ack_wait",
            "drain_timeout",
        ):
            seconds = getattr(self, name)
            if not 0 < seconds < math.inf:
                raise ConfigError(f"{name} must be positive seconds, got {seconds}")
        if self.ack_wait < 2 * self.receipt_timeout + 1:
            raise ConfigError(
                f"ack_wait ({self.ack_wait}s) must be at least twice receipt_timeout + 1s "
                f"({2 * self.receipt_timeout + 1}s): a notification must not be redelivered while one "
                "instance still waits for its receipt"
            )
        if not 0 < self.notify_client_rate < math.inf:
            raise ConfigError(
                f"notify_client_rate must be a positive number per minute, got {self.notify_client_rate}"
            )
        if not 0 <= self.metrics_port <= 65535:
            port = self.metrics_port
            raise ConfigError(f"metrics_port must be from 1 to 65535 (0: any free port), got {port}")

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix)

    @property
    def inbox_stream(self) -> str:
        return f"{self.stream}_INBOX"

    @property
    def dead_stream(self) -> str:
        return f"{self.stream}_DEAD"
