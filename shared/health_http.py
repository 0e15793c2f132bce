"""``GET /metrics``, ``/healthz`` and ``/readyz`` on a port of their own: a minimal HTTP/1.1 server on
asyncio streams (one request per connection), enough for Prometheus and Kubernetes probes.

The notification service's only port, and a gateway node's internal metrics port (``PRISM_METRICS_PORT``).
It runs on the process's event loop, not in a thread, so collectors that read live state (the gateway's
outbound-buffer gauges walk its connections) never race the code that changes it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared import listen

log = logging.getLogger("prism.notify")

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_MAX_HEADER_BYTES = 16384
LISTEN_SETTINGS = listen.Settings(
    host="--metrics-host or PRISM_METRICS_HOST", port="--metrics-port or PRISM_METRICS_PORT"
)


class HealthServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        is_ready: Callable[[], bool],
        not_ready_reason: Callable[[], str],
    ) -> None:
        self.registry = registry
        self.is_ready = is_ready
        self.not_ready_reason = not_ready_reason
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int, fallback: bool = False) -> None:
        """Listen on ``host``:``port``; if that port is taken and ``fallback`` is set, on any free port
        instead (a warning names it). Otherwise a port that cannot be used raises
        :class:`shared.errors.PortUnavailable`."""
        try:
            self._server = await asyncio.start_server(self._handle, host, port)
        except OSError as exc:
            if not (fallback and exc.errno == errno.EADDRINUSE):
                raise listen.unavailable(exc, host, port, LISTEN_SETTINGS) from None
            self._server = await asyncio.start_server(self._handle, host, 0)
            log.warning(
                "metrics port %d is in use (another prism notify?); serving /metrics, /healthz and /readyz "
                "on port %d instead (set PRISM_METRICS_PORT to choose one)",
                port,
                self._server.sockets[0].getsockname()[1],
            )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        route = path.partition("?")[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        if route == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if route == "/healthz":
            return 200, "text/plain", b"ok\n"
        if route == "/readyz":
            if self.is_ready():
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", f"not ready: {self.not_ready_reason()}\n".encode()
        return 404, "text/plain", f"no route {route!r}; try /metrics, /healthz or /readyz\n".encode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > _MAX_HEADER_BYTES:
                return
            method, path, *_ = [*head.split(b"\r\n", 1)[0].decode("latin-1").split(" "), "", ""]
            status, content_type, body = self.answer(method, path)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (body if method != "HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
