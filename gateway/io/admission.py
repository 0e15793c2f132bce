"""Who may open a WebSocket, decided before the upgrade.

:class:`Admission` is called from :class:`gateway.io.http.HttpRoutes` for every upgrade request on a
WebSocket route. In this order it refuses

- a browser ``Origin`` that is not allowed (by default with authentication on: any but the node's own):
  HTTP 403 (cross-site WebSocket hijacking);
- one connection more than the node holds (``max_connections``): HTTP 503 with ``Retry-After``;
- one connection more than one remote address holds (``max_connections_per_ip``): HTTP 429 with
  ``Retry-After``;
- a new connection over the node's accept rate: HTTP 503 with ``Retry-After``.

An admitted connection is counted until its TCP connection is lost, whatever happens after admission
(a later check refuses it, the handshake fails, the session ends), so the counts cannot leak: the
connection carries its address in ``admitted_ip`` and its server calls :meth:`Admission.release`.

The guards on an open socket (handshake timeout, ping budget, unread pongs) are the connection layer's,
:mod:`gateway.io.websocket`.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from websockets.http11 import Request, Response

from gateway.config import GatewayConfig
from gateway.core.limits import (
    ConnectionCounts,
    OriginPolicy,
    RatePolicy,
    Reason,
    TokenBucket,
    effective_max_connections,
    retry_after,
)
from gateway.io.websocket import WsConnection
from gateway.metrics import GatewayMetrics

log = logging.getLogger("prism.admission")

# Seconds a client refused for a connection cap is asked to wait: connections free up slowly.
CAP_RETRY_AFTER = 5


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

    def check(self, connection: WsConnection, request: Request) -> Response | None:
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
        connection.admitted_ip = ip  # released by its server once the TCP connection is gone
        return None

    def release(self, ip: str) -> None:
        self.counts.release(ip)

    @property
    def connections(self) -> int:
        """Admitted connections whose TCP connection is still there."""
        return self.counts.total


def _ip_of(connection: WsConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else ""
