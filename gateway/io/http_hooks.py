"""What a connection's life asks of HTTP backends: a connect decision before the welcome, its events and
requests, and a notification once it has closed. Called by :class:`gateway.session.Sessions`, which
keeps everything that is not HTTP (NATS events go on as before).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from gateway.core.auth import Identity
from gateway.core.http_backends import (
    Allow,
    BadAnswer,
    ConnInfo,
    Deny,
    HttpBackend,
    client_error,
    connect_body,
    connect_decision,
    disconnect_body,
    event_body,
)
from gateway.core.inbound import Event
from gateway.core.retry import Outcome
from gateway.io.http_backends import HttpBackends
from gateway.io.outbox import LocalConn
from shared.close_codes import CloseCode
from shared.frames import ErrorCode

log = logging.getLogger("prism.http_hooks")

# What a failed event or request tells its client: the error frame's code and message.
ClientError = tuple[ErrorCode, str]
# A request's end: the error (None if answered) and the answer's body.
RequestDone = Callable[[ClientError | None, bytes], None]
_NEVER_FORWARDED = frozenset({"token"})  # a JWT in the query: the backend gets its verified claims instead


def _forwarded(request_headers: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """The upgrade request's headers named in ``names``; a header sent twice is left out (which of the
    two would be meant?)."""
    found = {}
    for name in names:
        try:
            found[name] = request_headers[name]
        except LookupError:  # absent, or websockets' MultipleValuesError
            continue
    return found


class HttpHooks:
    def __init__(self, backends: HttpBackends, node_id: str, max_rooms: int) -> None:
        self.backends = backends
        self.routing = backends.routing
        self.node_id = node_id
        self.max_rooms = max_rooms
        self._requests: set[asyncio.Task[None]] = set()

    def _info(self, conn: LocalConn) -> ConnInfo:
        return ConnInfo(conn.conn_id, conn.user, self.node_id, conn.route, conn.remote)

    # -- connect ----------------------------------------------------------------------------------------
    async def connect(
        self,
        conn: LocalConn,
        query: Mapping[str, list[str]],
        request_headers: Mapping[str, str],
        identity: Identity | None,
    ) -> Allow | Deny:
        """Ask the route's connect backend (if any) whether ``conn`` may open. On :class:`Allow` the
        connection's user and claims are set from the answer and its rooms are to be joined; on
        :class:`Deny` it is to be closed with that code, before its welcome."""
        backend = self.routing.connect(conn.route)
        if backend is None:
            return Allow()
        forwarded = {k: v[0] for k, v in query.items() if v and k not in _NEVER_FORWARDED}
        headers = _forwarded(request_headers, backend.forward_headers)
        claims = identity.claims if identity is not None else None
        body = connect_body(self.backends.call_id(), self._info(conn), forwarded, headers, claims)
        result = await self.backends.call(backend, "connect", backend.connect_url, body, idempotent=True)
        attempt = result.attempt
        if not result.ok and not (attempt.outcome is Outcome.STATUS and attempt.status in (401, 403)):
            log.warning(
                "connect backend %r: %s %s %s",
                backend.name,
                attempt.outcome.value,
                attempt.status or "",
                result.detail,
            )
            return Deny(CloseCode.TRY_AGAIN_LATER, "connect backend unavailable")
        try:
            decision = connect_decision(attempt.status, result.body, self.max_rooms)
        except BadAnswer as exc:
            log.warning("connect backend %r sent an invalid answer: %s", backend.name, exc)
            return Deny(CloseCode.INTERNAL_ERROR, "connect backend sent an invalid answer")
        if isinstance(decision, Deny):
            return decision
        if decision.user is not None and identity is not None and decision.user != identity.user:
            log.warning(
                "connect backend %r named user %r for a token of %r",
                backend.name,
                decision.user,
                identity.user,
            )
            return Deny(CloseCode.INTERNAL_ERROR, "connect backend sent an invalid answer")
        if decision.user is not None:
            conn.user = decision.user
        conn.claims = decision.claims
        return decision

    # -- events and requests ------------------------------------------------------------------------------
    def backend_for(self, conn: LocalConn, event: str) -> HttpBackend | None:
        """The HTTP backend that takes ``event`` on this connection's route; None: it goes to NATS."""
        return self.routing.event(conn.route, event)

    async def event(self, conn: LocalConn, backend: HttpBackend, event: Event) -> ClientError | None:
        """Send an event (no ``ref``) and wait until the backend took it; the client's error if not."""
        body = event_body(
            self.backends.call_id(), self._info(conn), conn.claims, event.name, False, event.data
        )
        result = await self.backends.call(
            backend, "event", backend.event_url, body, backend.idempotent(event.name)
        )
        if result.ok:
            return None
        return client_error(backend, event.name, result.attempt, result.body, result.detail)

    def request(self, conn: LocalConn, backend: HttpBackend, event: Event, done: RequestDone) -> None:
        """Send a request in the background; ``done`` gets the outcome exactly once (not if the node
        stops first)."""
        body = event_body(
            self.backends.call_id(), self._info(conn), conn.claims, event.name, True, event.data
        )

        async def run() -> None:
            result = await self.backends.call(
                backend, "request", backend.event_url, body, backend.idempotent(event.name)
            )
            if result.ok:
                done(None, result.body)
            else:
                done(client_error(backend, event.name, result.attempt, result.body, result.detail), b"")

        task = asyncio.ensure_future(run())
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    # -- disconnect ---------------------------------------------------------------------------------------
    def disconnected(self, conn: LocalConn, details: Mapping[str, Any]) -> None:
        """Tell every disconnect backend of the route that ``conn`` closed (in the background, retried).
        ``details``: what ``client.disconnect`` says besides the connection (code, reason, rooms, time)."""
        for backend in self.routing.disconnect(conn.route):
            extra = {"connected_at": conn.connected_at, **details}
            body = disconnect_body(self.backends.call_id(), self._info(conn), conn.claims, extra)
            self.backends.notify(self._notify(backend, body))

    async def _notify(self, backend: HttpBackend, body: bytes) -> None:
        result = await self.backends.call(
            backend, "disconnect", backend.disconnect_url, body, idempotent=True
        )
        if not result.ok:
            attempt = result.attempt
            log.warning(
                "disconnect backend %r: %s %s %s",
                backend.name,
                attempt.outcome.value,
                attempt.status or "",
                result.detail,
            )

    async def stop(self, grace: float) -> None:
        """Drop requests still waiting (their connections are gone), send the notifications in flight
        within ``grace`` seconds, close the clients."""
        for task in list(self._requests):
            task.cancel()
        await asyncio.gather(*self._requests, return_exceptions=True)
        await self.backends.stop(grace)
