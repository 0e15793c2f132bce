"""Plain HTTP on the gateway's port: /healthz, /readyz, /metrics, the static files (the browser SDK and
the console, gateway/io/static.py), and the checks made before an upgrade.

One request per TCP connection: the node closes the connection after any answer but ``101``
(:mod:`gateway.io.websocket`), so every answer says ``Connection: close`` (RFC 9112 section 9.6) and
keep-alive clients open a new connection for their next request instead of writing into a closed one
("socket hang up")."""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gateway.core.recovery import user_recovery
from gateway.io.admission import Admission
from gateway.io.auth import Authenticator
from gateway.io.static import StaticSite
from gateway.io.websocket import WsConnection
from shared.errors import InvalidName
from shared.subjects import validate_user_id


def split_path(path: str) -> tuple[str, dict[str, list[str]]]:
    route, _, query = path.partition("?")
    return route, parse_qs(query, keep_blank_values=True)


def user_from_query(query: dict[str, list[str]]) -> str | None:
    """The dev-mode identity from ``?user=``; raises :class:`InvalidName` if it is not a valid id."""
    values = query.get("user")
    if not values:
        return None
    if len(values) > 1:
        raise InvalidName("user may be given once")
    return validate_user_id(values[0])


class HttpRoutes:
    """The ``process_request`` hook: answers plain HTTP paths, vets upgrade requests, 404s the rest."""

    def __init__(
        self,
        ws_routes: tuple[str, ...],
        registry: CollectorRegistry | None,
        is_ready: Callable[[], bool],
        not_ready_reason: Callable[[], str],
        auth: Authenticator | None = None,
        admission: Admission | None = None,
        static: StaticSite | None = None,
        node_id: str = "",
    ) -> None:
        self.static = static  # /prism.js, /prism.d.ts and (console on) /, /console/*
        self.admission = admission  # origins, connection caps, accept rate (403/503/429)
        self.auth = auth  # with authentication on: the token check (401/403), instead of ?user=
        self.ws_routes = frozenset(ws_routes)
        self.registry = registry  # None: /metrics is served on a separate port (PRISM_METRICS_PORT)
        self.is_ready = is_ready
        self.not_ready_reason = not_ready_reason
        # /readyz says which process answers, so that `prism dev` never takes another process that holds
        # the port (a second `prism dev`, say) for the node it started.
        self.identity = (("Prism-Node", node_id), ("Prism-Pid", str(os.getpid())))

    def __call__(self, connection: WsConnection, request: Request) -> Response | None:
        response = self._answer(connection, request)
        if response is not None and "Connection" not in response.headers:
            response.headers["Connection"] = "close"  # see the module docstring
        return response

    def _answer(self, connection: WsConnection, request: Request) -> Response | None:
        route, query = split_path(request.path)
        if route in self.ws_routes:
            if not self.is_ready():
                response = connection.respond(503, f"not ready: {self.not_ready_reason()}\n")
                response.headers["Retry-After"] = "1"
                return response
            if self.admission is not None:
                refusal = self.admission.check(connection, request)  # before auth: the cheap refusals
                if refusal is not None:
                    return refusal
            try:
                user_recovery(query)  # ?recover=user&user_epoch=..&user_seq=.. (docs/protocol.md, "Recovery")
            except ValueError as exc:
                return connection.respond(400, f"invalid recover: {exc}\n")
            if self.auth is not None:
                return self.auth.check(connection, request, route, query)
            try:
                user_from_query(query)
            except InvalidName as exc:
                return connection.respond(400, f"invalid user: {exc}\n")
            return None
        if route == "/healthz":
            return connection.respond(200, "ok\n")
        if route == "/readyz":
            if self.is_ready():
                response = connection.respond(200, "ready\n")
            else:
                response = connection.respond(503, f"not ready: {self.not_ready_reason()}\n")
            response.headers.update(self.identity)
            return response
        if route == "/metrics" and self.registry is not None:
            body = generate_latest(self.registry)
            headers = Headers([("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
            return Response(200, "OK", headers, body)
        if self.static is not None and (asset := self.static.get(route, request)) is not None:
            return asset
        return connection.respond(404, f"no route {route!r}; WebSocket routes: {sorted(self.ws_routes)}\n")
