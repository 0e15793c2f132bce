"""Authentication and authorization around the pure decisions of :mod:`gateway.core.auth`.

    KeyRing        the configured keys: a secret, PEM files, a JWKS file; files re-read when they change
    Authenticator  the upgrade check (401/403) and the verified identity handed to the session
    AuthzCallout   a NATS request asking a backend about a join or event the token does not grant
    Access         live connections: close at token expiry (4501), refresh, join and event checks

The node builds these only when a JWT key is configured; with authentication off none of it runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from websockets.http11 import Request, Response

from gateway.config import GatewayConfig
from gateway.core.auth import (
    EVENT_FORBIDDEN,
    FORBIDDEN,
    JOIN_FORBIDDEN,
    MISSING,
    REFRESH_REFUSED,
    SESSION_EXPIRED,
    AuthError,
    Identity,
    Refresh,
    TokenPolicy,
    VerifyKey,
    authenticate,
    keys_from_jwks,
    keys_from_pem,
    parse_refresh,
    secret_key,
    token_from_request,
)
from gateway.core.inbound import Command, parse_client_frame
from gateway.io.outbox import LocalConn
from gateway.io.websocket import WsConnection
from gateway.metrics import GatewayMetrics
from shared.close_codes import CloseCode
from shared.errors import ConfigError, FrameError
from shared.frames import ErrorCode

log = logging.getLogger("prism.auth")

_MAX_TIMER = 86400.0


def policy_of(config: GatewayConfig) -> TokenPolicy:
    return TokenPolicy(
        audience=config.jwt_audience,
        issuer=config.jwt_issuer,
        leeway=config.jwt_leeway,
        require_exp=config.jwt_require_exp,
        user_claim=config.jwt_user_claim,
        rooms_claim=config.jwt_rooms_claim,
        events_claim=config.jwt_events_claim,
        routes_claim=config.jwt_routes_claim,
    )


class _KeyFile:
    """A key file, parsed again whenever its size, mtime or inode changes (a rotation needs no restart).
    A change that does not parse (a half-written file) keeps the keys read before, with a warning."""

    def __init__(self, path: str, parse: Callable[[bytes, str], list[VerifyKey]]) -> None:
        self.path = path
        self.parse = parse
        self.signature: tuple[int, int, int] | None = None
        self.keys: list[VerifyKey] = []
        try:
            self.current()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load keys from {path}: {exc}") from None

    def current(self) -> list[VerifyKey]:
        try:
            stat = os.stat(self.path)
        except OSError:
            if self.signature is None:
                raise
            return self.keys  # gone for a moment (replaced by rename): keep what we have
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self.signature:
            return self.keys
        first = self.signature is None
        self.signature = signature
        try:
            with open(self.path, "rb") as file:
                keys = self.parse(file.read(), self.path)
        except (OSError, ValueError) as exc:
            if first:
                raise
            log.warning("keeping the keys read before: %s", exc)
            return self.keys
        self.keys = keys
        log.info("loaded %d key(s) from %s", len(keys), self.path)
        return keys


class KeyRing:
    """Every key that may verify a client token, files checked for changes on each use."""

    def __init__(self, config: GatewayConfig) -> None:
        try:
            self._fixed = [secret_key(config.jwt_secret, "jwt_secret")] if config.jwt_secret else []
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self._files = [_KeyFile(path, keys_from_pem) for path in config.jwt_public_key_file]
        if config.jwks_file:
            self._files.append(_KeyFile(config.jwks_file, keys_from_jwks))

    def keys(self) -> list[VerifyKey]:
        if not self._files:
            return self._fixed
        return [*self._fixed, *(key for file in self._files for key in file.current())]


class Authenticator:
    """Verifies the token of each upgrade request on a WebSocket route (called from ``process_request``)
    and keeps the identity for :meth:`take` by the connection handler."""

    def __init__(self, keyring: KeyRing, policy: TokenPolicy, metrics: GatewayMetrics, node_id: str) -> None:
        self.keyring = keyring
        self.policy = policy
        self._rejections = metrics.rejections
        self.node_id = node_id
        self._verified: weakref.WeakKeyDictionary[WsConnection, Identity] = weakref.WeakKeyDictionary()

    def check(
        self, connection: WsConnection, request: Request, route: str, query: dict[str, list[str]]
    ) -> Response | None:
        """None to go on with the upgrade, or the 401/403 response that refuses it."""
        try:
            token = token_from_request(
                request.headers.get_all("Authorization"),
                query,
                request.headers.get_all("Sec-WebSocket-Protocol"),
            )
            if token is None:
                raise AuthError(401, MISSING, "missing token")
            identity = self.verify(token, route)
        except AuthError as exc:
            self.rejected(exc.kind)
            log.debug("refused an upgrade from %s: %s", connection.remote_address, exc.message)
            response = connection.respond(exc.status, exc.message + "\n")
            if exc.status == 401:
                realm = 'Bearer realm="prism"'
                response.headers["WWW-Authenticate"] = (
                    realm if exc.kind == MISSING else f'{realm}, error="invalid_token"'
                )
            return response
        self._verified[connection] = identity
        return None

    def verify(self, token: str, route: str) -> Identity:
        return authenticate(token, self.keyring.keys(), self.policy, route)

    def take(self, connection: WsConnection) -> Identity | None:
        """The identity verified for ``connection``'s upgrade (once)."""
        return self._verified.pop(connection, None)

    def rejected(self, reason: str) -> None:
        self._rejections.labels(node=self.node_id, reason=reason).inc()


class AuthzCallout:
    """Asks ``subject`` whether a connection may join a room or send an event. No reply in ``timeout``
    seconds, no responders, or anything but ``{"allow": true}`` is a denial."""

    def __init__(self, nc: NatsClient, subject: str, timeout: float, node_id: str) -> None:
        self.nc = nc
        self.subject = subject
        self.timeout = timeout
        self.node_id = node_id

    async def deny(self, conn: LocalConn, identity: Identity, action: str, name: str) -> str | None:
        """None if allowed, else the reason to show the client."""
        body: dict[str, Any] = {
            "conn": conn.conn_id,
            "user": identity.user,
            "node": self.node_id,
            "route": conn.route,
            "action": action,
            "room" if action == "join" else "event": name,
            "claims": identity.claims,
        }
        try:
            payload = orjson.dumps(body)
        except orjson.JSONEncodeError:  # a claim orjson cannot write (an integer over 64 bits)
            payload = orjson.dumps(body | {"claims": None})
        try:
            reply = await self.nc.request(self.subject, payload, timeout=self.timeout)
        except nats.errors.NoRespondersError:
            return "authorization service unavailable"
        except (nats.errors.TimeoutError, TimeoutError):
            return "authorization service did not answer"
        except Exception as exc:
            log.warning("authorization callout on %s failed: %s", self.subject, exc)
            return "authorization service unavailable"
        try:
            answer = orjson.loads(reply.data)
        except orjson.JSONDecodeError:
            answer = None
        if isinstance(answer, dict) and answer.get("allow") is True:
            return None
        reason = answer.get("reason") if isinstance(answer, dict) else None
        return reason[:200] if isinstance(reason, str) and reason else "not allowed"


@dataclass(slots=True)
class _Live:
    identity: Identity
    timer: asyncio.TimerHandle | None = None


class Access:
    """What authentication means for open connections: each holds the identity of its latest token, is
    closed with 4501 when that token expires, may replace it with ``refresh``, and is checked before a
    join or an event (by the token's claims, then by the callout if there is one)."""

    def __init__(
        self,
        authenticator: Authenticator,
        callout: AuthzCallout | None,
        close: Callable[[LocalConn, int, str], None],
    ) -> None:
        self.authenticator = authenticator
        self.callout = callout
        self.leeway = authenticator.policy.leeway
        self._close = close
        self._live: dict[str, _Live] = {}

    def take(self, ws: WsConnection) -> Identity | None:
        return self.authenticator.take(ws)

    def opened(self, conn: LocalConn, identity: Identity) -> None:
        live = self._live[conn.conn_id] = _Live(identity)
        self._schedule(conn, live)

    def closed(self, conn: LocalConn) -> None:
        live = self._live.pop(conn.conn_id, None)
        if live is not None and live.timer is not None:
            live.timer.cancel()

    def parse(self, message: str | bytes, max_depth: int) -> Command | Refresh:
        """:func:`parse_client_frame`, plus the ``refresh`` command (both raise :class:`FrameError`).
        Only a frame that is otherwise an unknown command is looked at again, so every other frame is
        parsed once and under the same depth limit."""
        try:
            return parse_client_frame(message, max_depth)
        except FrameError as exc:
            if exc.code == ErrorCode.UNKNOWN_COMMAND and (refresh := parse_refresh(message)) is not None:
                return refresh
            raise

    def refresh(self, conn: LocalConn, token: str) -> AuthError | None:
        """Replace ``conn``'s token: None if done, else why not (the current token stays in force)."""
        live = self._live.get(conn.conn_id)
        if live is None:
            return AuthError(401, MISSING, "connection is not authenticated")
        try:
            identity = self.authenticator.verify(token, conn.route)
            if identity.user != live.identity.user:
                raise AuthError(403, FORBIDDEN, "token is for another user")
        except AuthError as exc:
            self.authenticator.rejected(REFRESH_REFUSED)
            return exc
        live.identity = identity
        self._schedule(conn, live)
        return None

    async def deny_join(self, conn: LocalConn, room: str) -> str | None:
        """None if ``conn`` may join ``room``, else the reason."""
        reason = await self._deny(conn, "join", room)
        if reason is not None:
            self.authenticator.rejected(JOIN_FORBIDDEN)
        return reason

    async def deny_event(self, conn: LocalConn, event: str) -> str | None:
        """None if ``conn`` may send ``event``, else the reason."""
        reason = await self._deny(conn, "event", event)
        if reason is not None:
            self.authenticator.rejected(EVENT_FORBIDDEN)
        return reason

    async def _deny(self, conn: LocalConn, action: str, name: str) -> str | None:
        live = self._live.get(conn.conn_id)
        if live is None:
            return "connection is not authenticated"
        identity = live.identity
        if identity.expires_at is not None and time.time() > identity.expires_at + self.leeway:
            return "token expired"
        permissions = identity.permissions
        if permissions.may_join(name) if action == "join" else permissions.may_send(name):
            return None
        if self.callout is not None:
            return await self.callout.deny(conn, identity, action, name)
        return f"not allowed to {action if action == 'join' else 'send'} {name!r}"

    def _schedule(self, conn: LocalConn, live: _Live) -> None:
        if live.timer is not None:
            live.timer.cancel()
            live.timer = None
        expires_at = live.identity.expires_at
        if expires_at is not None:
            # Capped: an exp centuries ahead would overflow the loop's timer; the check below re-arms it.
            delay = min(max(0.0, expires_at + self.leeway - time.time()), _MAX_TIMER)
            live.timer = asyncio.get_running_loop().call_later(delay, self._expire, conn, live)

    def _expire(self, conn: LocalConn, live: _Live) -> None:
        if conn.closing:
            return
        expires_at = live.identity.expires_at
        if expires_at is not None and expires_at + self.leeway > time.time():
            self._schedule(conn, live)  # the wall clock is behind the loop's clock, or the delay was capped
            return
        self.authenticator.rejected(SESSION_EXPIRED)
        self._close(conn, CloseCode.UNAUTHORIZED, "token expired")
