"""The optional parts of a node's sessions, each on when it is configured, and given to
:class:`gateway.session.Sessions` whole when it is built (:class:`Features`).

Authentication (:class:`gateway.io.auth.Access`) is a mode: with it on, a connection has an identity and
new commands (``refresh``), so it stays ``None`` when off. The others are interfaces the sessions call
the same way either way; when a part is off, a stand-in here does what "off" means (nothing, or telling
the client a room or user has no history), so no session code asks whether it is on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.auth import Identity
from gateway.core.http_backends import Allow, Deny, HttpBackend
from gateway.core.hub import JoinOutcome
from gateway.core.inbound import Event
from gateway.io.auth import Access
from gateway.io.http_hooks import ClientError, RequestDone
from gateway.io.outbox import LocalConn
from gateway.recovery import Start
from shared import frames
from shared.frames import Position


class ConnWatch(Protocol):
    """Keepalive pings (:class:`gateway.io.keepalive.Keepalive`)."""

    def add(self, conn: LocalConn) -> None: ...

    def discard(self, conn: LocalConn) -> None: ...


class RoomEvents(Protocol):
    """Room presence events (:class:`gateway.io.room_presence.RoomPresence`)."""

    def joined(self, conn: LocalConn, room: str) -> None: ...

    def left(self, conn: LocalConn, room: str) -> None: ...


class SessionRecovery(Protocol):
    """Missed-message recovery (:class:`gateway.recovery.Recovery`)."""

    async def reserve_user(self, conn: LocalConn, position: Position | None) -> Start | None: ...

    async def start_user(self, conn: LocalConn, start: Start | None) -> None: ...

    async def join_room(
        self,
        conn: LocalConn,
        room: str,
        position: Position | None,
        join: Callable[[], Awaitable[JoinOutcome]],
    ) -> JoinOutcome: ...

    async def left(self, conn: LocalConn, room: str) -> None: ...

    async def closed(self, conn: LocalConn) -> None: ...


class HttpSession(Protocol):
    """HTTP backends (:class:`gateway.io.http_hooks.HttpHooks`)."""

    async def connect(
        self,
        conn: LocalConn,
        query: Mapping[str, list[str]],
        request_headers: Mapping[str, str],
        identity: Identity | None,
    ) -> Allow | Deny: ...

    def backend_for(self, conn: LocalConn, event: str) -> HttpBackend | None: ...

    async def event(self, conn: LocalConn, backend: HttpBackend, event: Event) -> ClientError | None: ...

    def request(self, conn: LocalConn, backend: HttpBackend, event: Event, done: RequestDone) -> None: ...

    def disconnected(self, conn: LocalConn, details: Mapping[str, Any]) -> None: ...


class NoKeepalive:
    """Pings off (``ping_interval`` 0)."""

    def add(self, conn: LocalConn) -> None:
        pass

    def discard(self, conn: LocalConn) -> None:
        pass


class NoRoomEvents:
    """No room has presence events (``room_presence`` empty)."""

    def joined(self, conn: LocalConn, room: str) -> None:
        pass

    def left(self, conn: LocalConn, room: str) -> None:
        pass


class NoRecovery:
    """No room or user has history: a client that asks to recover is told so (``recoverable: false``),
    and joins as any other."""

    def __init__(self, send: Callable[[LocalConn, bytes], None]) -> None:
        self._send = send

    async def reserve_user(self, conn: LocalConn, position: Position | None) -> Start | None:
        return None

    async def start_user(self, conn: LocalConn, start: Start | None) -> None:
        self._send(conn, frames.not_recoverable("user", conn.user))  # type: ignore[arg-type]

    async def join_room(
        self,
        conn: LocalConn,
        room: str,
        position: Position | None,
        join: Callable[[], Awaitable[JoinOutcome]],
    ) -> JoinOutcome:
        outcome = await join()
        if outcome is JoinOutcome.JOINED:
            self._send(conn, frames.not_recoverable("room", room))
        return outcome

    async def left(self, conn: LocalConn, room: str) -> None:
        pass

    async def closed(self, conn: LocalConn) -> None:
        pass


class NoHttpBackends:
    """No HTTP backends (no ``http_backends_file``): every connection opens, every event goes to NATS."""

    async def connect(
        self,
        conn: LocalConn,
        query: Mapping[str, list[str]],
        request_headers: Mapping[str, str],
        identity: Identity | None,
    ) -> Allow | Deny:
        return Allow()

    def backend_for(self, conn: LocalConn, event: str) -> HttpBackend | None:
        return None

    async def event(self, conn: LocalConn, backend: HttpBackend, event: Event) -> ClientError | None:
        raise AssertionError("no HTTP backend takes events")

    def request(self, conn: LocalConn, backend: HttpBackend, event: Event, done: RequestDone) -> None:
        raise AssertionError("no HTTP backend takes requests")

    def disconnected(self, conn: LocalConn, details: Mapping[str, Any]) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Features:
    """What a node's sessions have besides the core: each part on, or its stand-in."""

    recovery: SessionRecovery
    access: Access | None = None  # authentication on
    keepalive: ConnWatch = field(default_factory=NoKeepalive)
    room_events: RoomEvents = field(default_factory=NoRoomEvents)
    http: HttpSession = field(default_factory=NoHttpBackends)
