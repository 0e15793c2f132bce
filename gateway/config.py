"""The gateway node's one configuration object, loaded once from flags and ``PRISM_*`` variables."""

from __future__ import annotations

import math
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core.auth import secret_key
from gateway.core.history_layout import entry_error as history_entry_error
from gateway.core.history_layout import stream_name_error
from gateway.core.http_backends import BackendConfigError, HttpBackend, parse_backends
from gateway.core.hub import Scope
from gateway.core.limits import origin_pattern_error
from gateway.core.liveness import DEFAULT_TTL
from gateway.core.room_presence import pattern_error as room_pattern_error
from shared.config import setting
from shared.errors import ConfigError, InvalidName
from shared.nats_auth import NatsSettings
from shared.presence_keys import MAX_SHARDS
from shared.subjects import Subjects, validate_node_id, validate_prefix


def random_node_id() -> str:
    return "n" + secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class GatewayConfig(NatsSettings):
    host: str = setting("0.0.0.0", "address to listen on")
    port: int = setting(8080, "port for WebSocket routes, /healthz, /readyz and /metrics (see metrics_port)")
    metrics_port: int = setting(
        0, "separate port of /metrics (and /healthz, /readyz), off the public one, e.g. 9090; 0: on port"
    )
    node_id: str = setting("", "node id, unique in the cluster (random when empty)")
    routes: tuple[str, ...] = setting(("/ws",), "WebSocket paths, comma-separated")
    subject_prefix: str = setting("", "prefix for every NATS subject, e.g. 'acme.'")
    listen_backlog: int = setting(2048, "pending TCP connections the listener queues (bursts of reconnects)")
    compression: bool = setting(False, "offer permessage-deflate (costs CPU and memory per connection)")
    max_message_bytes: int = setting(65536, "largest client message accepted (bigger: close 1009)")
    max_outbound_bytes: int = setting(
        1 << 20, "per-connection outbound queue limit in bytes (over it: close 4001 slow consumer)"
    )
    max_rooms_per_conn: int = setting(100, "rooms one connection may be in at once")
    max_inflight_requests: int = setting(16, "client requests awaiting a backend reply, per connection")
    request_timeout: float = setting(5.0, "seconds a client request waits for a backend reply")
    ping_interval: float = setting(20.0, "seconds between keepalive pings (0 disables)")
    ping_timeout: float = setting(20.0, "seconds to wait for a pong before closing")
    # Limits against hostile or broken clients (gateway/core/limits.py, gateway/io/admission.py).
    allowed_origins: tuple[str, ...] = setting(
        (),
        "browser origins allowed to connect, e.g. 'https://app.example.com,https://*.example.com', or '*' "
        "for any (others: HTTP 403; requests without Origin pass; empty: any origin with authentication "
        "off, with it on only the node's own: an Origin whose host:port is the request's Host)",
    )
    handshake_timeout: float = setting(
        10.0, "seconds a client has to complete the opening handshake (slowloris), then TCP is dropped"
    )
    max_connections: int = setting(
        0, "connections this node holds at most (over: HTTP 503); 0: 90 percent of the open-files limit"
    )
    max_connections_per_ip: int = setting(
        0, "connections one remote address may hold (over: HTTP 429; 0: no limit; a proxy counts as one)"
    )
    accept_rate: float = setting(
        1000.0, "new connections accepted per second, on average (over: HTTP 503; 0: no limit)"
    )
    accept_burst: int = setting(5000, "new connections accepted at once before accept_rate applies")
    message_rate: float = setting(
        500.0, "messages per second one connection may send (over: error rate_limited, dropped; 0: no limit)"
    )
    message_burst: int = setting(1000, "messages a connection may send at once before message_rate applies")
    rate_violations: int = setting(
        100, "messages dropped for the rate within rate_window seconds before the connection is closed 1008"
    )
    rate_window: float = setting(10.0, "seconds over which rate_violations are counted")
    idle_timeout: float = setting(
        0.0, "close (1001) a connection that sent no message for this long (pings do not count; 0: off)"
    )
    max_json_depth: int = setting(32, "deepest nesting of a command or event frame (deeper: invalid_frame)")
    presence_bucket: str = setting("presence", "JetStream KV bucket of the presence registry")
    presence_replicas: int = setting(1, "replicas of the presence bucket when this node creates it")
    presence_storage: str = setting("file", "storage of the presence bucket: file or memory")
    presence_shards: int = setting(
        16, "shard buckets of a new presence registry (an existing registry keeps its own; 1-256)"
    )
    presence_retry: float = setting(
        10.0, "seconds a presence write is retried (a JetStream leader election) before the change fails"
    )
    room_presence: tuple[str, ...] = setting(
        (), "rooms whose members get join/leave events: names or patterns like 'chat-*', comma-separated"
    )
    presence_debounce: float = setting(
        5.0, "seconds a user must stay out of a room before its leave is announced (reconnects inside: none)"
    )
    presence_batch: float = setting(0.2, "seconds over which a room's join/leave events are coalesced")
    # Missed-message recovery (docs/protocol.md, "Recovery"): rooms and users whose messages are kept in
    # JetStream, so a client that reconnects to any node with its positions gets what it missed.
    recover_rooms: tuple[str, ...] = setting(
        (), "rooms whose messages are kept for recovery: names, or '*' for every room, comma-separated"
    )
    recover_users: tuple[str, ...] = setting(
        (), "users whose messages are kept for recovery: ids, or '*' for every user, comma-separated"
    )
    recover_history: int = setting(1000, "messages kept per recoverable room and per user (oldest go first)")
    recover_ttl: float = setting(300.0, "seconds a message is kept for recovery")
    recover_max_bytes: int = setting(
        1 << 30, "bytes each history stream (rooms, users) keeps at most, oldest go first; -1: no limit"
    )
    recover_replicas: int = setting(1, "replicas of the history streams when this node creates them")
    recover_storage: str = setting("file", "storage of the history streams: file or memory")
    recover_stream: str = setting("RECOVERY", "name of the history streams: <name>_ROOMS, <name>_USERS")
    recover_sync: float = setting(
        10.0, "seconds between checks that move quiet positions forward and catch a live message missed"
    )
    close_timeout: float = setting(
        3.0,
        "seconds to wait for a client's close frame before dropping TCP (bounds a slow consumer's memory)",
    )
    drain_seconds: float = setting(10.0, "on SIGTERM, seconds over which clients are asked to reconnect")
    node_ttl: float = setting(
        DEFAULT_TTL,
        "seconds a node may go unheard (it beats every node_ttl/6 s on core NATS); survivors then ping it "
        "and, if it does not answer, sweep its presence keys",
    )
    sweep_interval: float = setting(
        30.0, "seconds between checks for dead nodes' leftovers that no watcher saw (0 disables)"
    )
    log_level: str = setting("info", "log level: debug, info, warning, error")
    # The web console (gateway/web/console, docs/browser.md); /prism.js is served either way.
    console: bool = setting(False, "serve the web console at / and /console/ (on in prism dev)")
    console_nodes: tuple[str, ...] = setting(
        (), "ws:// or wss:// URLs the console offers, comma-separated (empty: the page's own origin's /ws)"
    )
    console_notify: bool = setting(
        False, "show the console's button that sends a notification through the notification service"
    )
    # Authentication and authorization: any JWT key below turns authentication on.
    jwt_secret: str = field(  # not in repr(), so a logged config does not show it
        default="",
        repr=False,
        metadata={"help": "HMAC secret (32+ bytes) that signs client tokens (HS256/384/512); use the env"},
    )
    jwt_public_key_file: tuple[str, ...] = setting(
        (), "PEM files of public keys or certificates (RSA, EC, Ed25519) that verify tokens, comma-separated"
    )
    jwks_file: str = setting("", "JWKS file of keys that verify tokens, chosen by kid; re-read on change")
    jwt_audience: tuple[str, ...] = setting(
        (), "audiences a token's aud must name one of, comma-separated (empty: tokens with aud are refused)"
    )
    jwt_issuer: str = setting("", "issuer a token's iss must be (empty: not checked)")
    jwt_leeway: float = setting(5.0, "seconds of clock skew allowed on exp, nbf and iat")
    jwt_require_exp: bool = setting(True, "refuse tokens without an exp claim")
    jwt_user_claim: str = setting("sub", "claim that holds the user id")
    jwt_rooms_claim: str = setting("rooms", "claim listing the rooms a client may join (patterns)")
    jwt_events_claim: str = setting("events", "claim listing the events a client may send (patterns)")
    jwt_routes_claim: str = setting("routes", "claim listing the routes a token may open (absent: all)")
    authz_subject: str = setting(
        "", "NATS subject of the authorization callout asked about joins and events the token does not grant"
    )
    authz_timeout: float = setting(1.0, "seconds to wait for the authorization callout (then: denied)")
    # The HTTP API (gateway/io/http_api.py, docs/http-api.md) and HTTP backends (docs/http-backends.md).
    api_port: int = setting(0, "port of the authenticated HTTP API (publish, control, presence); 0: off")
    api_keys: tuple[str, ...] = field(  # secrets: not in repr(), so a logged config does not show them
        default=(),
        repr=False,
        metadata={
            "help": "API keys (32+ characters each, comma-separated) accepted as 'Bearer <key>'; use the env"
        },
    )
    api_jwt_audience: str = setting(
        "", "accept JWTs (verified with the PRISM_JWT_* keys) whose aud names this as API credentials"
    )
    http_backends_file: str = setting(
        "",
        "TOML file of HTTP backends: per route, the URLs for connects, events, disconnects and polls",
    )

    def validate(self) -> None:
        self.nats_auth.validate()
        try:
            validate_prefix(self.subject_prefix)
            if self.node_id:
                validate_node_id(self.node_id)
        except InvalidName as exc:
            raise ConfigError(str(exc)) from None
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be from 1 to 65535 (0: any free port), got {self.port}")
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
        if not 1 <= self.presence_shards <= MAX_SHARDS:
            raise ConfigError(f"presence_shards must be 1-{MAX_SHARDS}, got {self.presence_shards}")
        if not 0 <= self.presence_retry < math.inf:
            raise ConfigError(f"presence_retry must be 0 or more seconds, got {self.presence_retry}")
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
        self._validate_recovery()
        for url in self.console_nodes:
            if not url.startswith(("ws://", "wss://")) or any(c.isspace() for c in url):
                raise ConfigError(f"console_nodes must be ws:// or wss:// URLs, got {url!r}")
        self._validate_metrics_port()
        self._validate_auth()
        self._validate_limits()
        self._validate_api()
        self.http_backends()  # a routes file that cannot be used stops the start here

    def _validate_recovery(self) -> None:
        for scope, entries in ((Scope.ROOM, self.recover_rooms), (Scope.USER, self.recover_users)):
            for entry in entries:
                if (problem := history_entry_error(scope, entry)) is not None:
                    raise ConfigError(problem)
        if (problem := stream_name_error(self.recover_stream)) is not None:
            raise ConfigError(problem)
        if not 1 <= self.recover_history <= 1_000_000:
            raise ConfigError(f"recover_history must be 1 to 1000000 messages, got {self.recover_history}")
        if not 1 <= self.recover_ttl < math.inf:
            raise ConfigError(f"recover_ttl must be at least 1 second, got {self.recover_ttl}")
        if not 0 < self.recover_sync <= self.recover_ttl / 2:
            raise ConfigError(
                f"recover_sync must be positive and at most half of recover_ttl ({self.recover_ttl:g}s), "
                f"or positions of quiet rooms fall out of the history; got {self.recover_sync}"
            )
        if self.recover_max_bytes != -1 and self.recover_max_bytes < 1024:
            raise ConfigError(f"recover_max_bytes must be -1 or at least 1024, got {self.recover_max_bytes}")
        if not 1 <= self.recover_replicas <= 5:
            raise ConfigError(f"recover_replicas must be 1 to 5, got {self.recover_replicas}")
        if self.recover_storage not in ("file", "memory"):
            raise ConfigError(f"recover_storage must be 'file' or 'memory', got {self.recover_storage!r}")

    def _validate_metrics_port(self) -> None:
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be a port number (0: off), got {self.metrics_port}")
        if self.metrics_port and self.metrics_port == self.port:
            raise ConfigError(f"metrics_port must differ from port ({self.port}), or be 0 to share it")

    def _validate_limits(self) -> None:
        for pattern in self.allowed_origins:
            if (problem := origin_pattern_error(pattern)) is not None:
                raise ConfigError(problem)
        if not 0 < self.handshake_timeout < math.inf:
            raise ConfigError(f"handshake_timeout must be positive seconds, got {self.handshake_timeout}")
        for name in ("max_connections", "max_connections_per_ip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be zero or positive")
        for name in ("accept_rate", "message_rate", "idle_timeout"):
            value = getattr(self, name)
            if not 0 <= value < math.inf:
                raise ConfigError(f"{name} must be zero or a positive number, got {value}")
        for name in ("accept_burst", "message_burst", "rate_violations", "max_json_depth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not 0 < self.rate_window < math.inf:
            raise ConfigError(f"rate_window must be positive seconds, got {self.rate_window}")

    def _validate_auth(self) -> None:
        if self.jwt_secret:
            try:
                secret_key(self.jwt_secret, "jwt_secret")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not 0 <= self.jwt_leeway < math.inf:
            raise ConfigError(f"jwt_leeway must be zero or positive seconds, got {self.jwt_leeway}")
        if not 0 < self.authz_timeout < math.inf:
            raise ConfigError(f"authz_timeout must be positive seconds, got {self.authz_timeout}")
        for name in ("jwt_user_claim", "jwt_rooms_claim", "jwt_events_claim", "jwt_routes_claim"):
            if not getattr(self, name):
                raise ConfigError(f"{name} must name a claim")
        if self.authz_subject:
            if not self.auth_enabled:
                raise ConfigError("authz_subject needs authentication: set a JWT key as well")
            try:
                self.subjects.authz(self.authz_subject)
            except InvalidName:
                subject = self.authz_subject
                raise ConfigError(f"authz_subject must be dot-separated tokens, got {subject!r}") from None

    def _validate_api(self) -> None:
        if not 0 <= self.api_port <= 65535:
            raise ConfigError(f"api_port must be a port number (0: off), got {self.api_port}")
        if self.api_port and self.api_port in (self.port, self.metrics_port):
            raise ConfigError(f"api_port must differ from port and metrics_port, got {self.api_port}")
        for key in self.api_keys:
            if len(key) < 32 or any(c.isspace() for c in key):
                raise ConfigError("api_keys must be at least 32 characters each, without spaces")
        if self.api_jwt_audience:
            if not self.auth_enabled:
                raise ConfigError(
                    "api_jwt_audience needs a JWT key (PRISM_JWT_SECRET, ..._PUBLIC_KEY_FILE or JWKS)"
                )
            if self.api_jwt_audience in self.jwt_audience:
                raise ConfigError(
                    "api_jwt_audience must not be one of jwt_audience: client tokens would be API keys"
                )
        if self.api_port and not (self.api_keys or self.api_jwt_audience):
            raise ConfigError("api_port needs credentials: set api_keys or api_jwt_audience")

    def http_backends(self, environ: Mapping[str, str] | None = None) -> tuple[HttpBackend, ...]:
        """The backends of ``http_backends_file`` (none if unset); :class:`ConfigError` if unusable. Secrets
        are read from the environment variables the file names."""
        if not self.http_backends_file:
            return ()
        path = self.http_backends_file
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
            return parse_backends(document, self.routes, os.environ if environ is None else environ)
        except OSError as exc:
            raise ConfigError(f"http_backends_file {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, BackendConfigError) as exc:
            raise ConfigError(f"http_backends_file {path}: {exc}") from None

    @property
    def auth_enabled(self) -> bool:
        """Whether clients must present a verified token (any JWT key is set)."""
        return bool(self.jwt_secret or self.jwt_public_key_file or self.jwks_file)

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix)
