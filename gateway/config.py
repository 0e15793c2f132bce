"""The gateway node's one configuration object, loaded once from flags and ``PRISM_*`` variables."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any

from gateway.core.room_presence import pattern_error as room_pattern_error
from shared.errors import ConfigError, InvalidName
from shared.nats_auth import NatsAuth
from shared.subjects import Subjects, validate_node_id, validate_prefix


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


def random_node_id() -> str:
    return "n" + secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    nats_url: str = _setting("nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
    nats_user: str = _setting("", "NATS user name (with nats_password)")
    nats_password: str = field(  # not in repr(), so a logged config does not show it
        default="", repr=False, metadata={"help": "NATS password (set it in the environment, not as a flag)"}
    )
    nats_token: str = field(default="", repr=False, metadata={"help": "NATS authentication token"})
    nats_nkey_seed_file: str = _setting("", "file holding this process's NATS NKey seed")
    nats_creds_file: str = _setting("", "NATS credentials file (user JWT and seed, decentralised auth)")
    nats_tls_ca_file: str = _setting("", "CA bundle of the NATS servers' certificates (turns TLS on)")
    nats_tls_cert_file: str = _setting("", "client certificate for NATS mutual TLS (with nats_tls_key_file)")
    nats_tls_key_file: str = _setting("", "private key of nats_tls_cert_file")
    host: str = _setting("0.0.0.0", "address to listen on")
    port: int = _setting(8080, "port for WebSocket routes, /healthz, /readyz and /metrics")
    node_id: str = _setting("", "node id, unique in the cluster (random when empty)")
    routes: tuple[str, ...] = _setting(("/ws",), "WebSocket paths, comma-separated")
    subject_prefix: str = _setting("", "prefix for every NATS subject, e.g. 'acme.'")
    listen_backlog: int = _setting(2048, "pending TCP connections the listener queues (bursts of reconnects)")
    compression: bool = _setting(False, "offer permessage-deflate (costs CPU and memory per connection)")
    max_message_bytes: int = _setting(65536, "largest client message accepted (bigger: close 1009)")
    max_outbound_bytes: int = _setting(
        1 << 20, "per-connection outbound queue limit in bytes (over it: close 4001 slow consumer)"
    )
    max_rooms_per_conn: int = _setting(100, "rooms one connection may be in at once")
    max_inflight_requests: int = _setting(16, "client requests awaiting a backend reply, per connection")
    request_timeout: float = _setting(5.0, "seconds a client request waits for a backend reply")
    ping_interval: float = _setting(20.0, "seconds between keepalive pings (0 disables)")
    ping_timeout: float = _setting(20.0, "seconds to wait for a pong before closing")
    presence_bucket: str = _setting("presence", "JetStream KV bucket of the presence registry")
    presence_replicas: int = _setting(1, "replicas of the presence bucket when this node creates it")
    presence_storage: str = _setting("file", "storage of the presence bucket: file or memory")
    room_presence: tuple[str, ...] = _setting(
        (), "rooms whose members get join/leave events: names or patterns like 'chat-*', comma-separated"
    )
    presence_debounce: float = _setting(
        5.0, "seconds a user must stay out of a room before its leave is announced (reconnects inside: none)"
    )
    presence_batch: float = _setting(0.2, "seconds over which a room's join/leave events are coalesced")
    close_timeout: float = _setting(
        3.0,
        "seconds to wait for a client's close frame before dropping TCP (bounds a slow consumer's memory)",
    )
    drain_seconds: float = _setting(10.0, "on SIGTERM, seconds over which clients are asked to reconnect")
    node_ttl: float = _setting(
        6.0, "seconds a node's heartbeat key lives; survivors sweep the entries of a node silent this long"
    )
    sweep_interval: float = _setting(
        30.0, "seconds between checks for dead nodes' leftovers that no watcher saw (0 disables)"
    )
    log_level: str = _setting("info", "log level: debug, info, warning, error")

    def validate(self) -> None:
        self.nats_auth.validate()
        try:
            validate_prefix(self.subject_prefix)
            if self.node_id:
                validate_node_id(self.node_id)
        except InvalidName as exc:
            raise ConfigError(str(exc)) from None
        if not self.routes or any(not r.startswith("/") for r in self.routes):
            raise ConfigError(f"routes must be paths starting with '/', got {self.routes!r}")
        if self.presence_storage not in ("file", "memory"):
            raise ConfigError(f"presence_storage must be 'file' or 'memory', got {self.presence_storage!r}")
        positive = ("max_message_bytes", "max_outbound_bytes", "max_rooms_per_conn", "max_inflight_requests")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if not 0 < self.request_timeout < math.inf:  # written this way round to refuse nan too
            raise ConfigError(f"request_timeout must be positive seconds, got {self.request_timeout}")
        if not 2 <= self.node_ttl < math.inf:  # NATS message TTLs count whole seconds
            raise ConfigError(f"node_ttl must be at least 2 seconds, got {self.node_ttl}")
        for name in ("ping_interval", "ping_timeout", "close_timeout", "drain_seconds", "sweep_interval"):
            seconds = getattr(self, name)
            if not 0 <= seconds < math.inf:
                raise ConfigError(f"{name} must be zero or a positive number of seconds, got {seconds}")
        for pattern in self.room_presence:
            if (problem := room_pattern_error(pattern)) is not None:
                raise ConfigError(problem)
        for name in ("presence_debounce", "presence_batch"):
            seconds = getattr(self, name)
            if not 0 <= seconds < math.inf:
                raise ConfigError(f"{name} must be zero or a positive number of seconds, got {seconds}")

    @property
    def nats_auth(self) -> NatsAuth:
        return NatsAuth(
            self.nats_user,
            self.nats_password,
            self.nats_token,
            self.nats_nkey_seed_file,
            self.nats_creds_file,
            self.nats_tls_ca_file,
            self.nats_tls_cert_file,
            self.nats_tls_key_file,
        )

    @property
    def nats_servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix)
