"""Backend -> clients: what the node does with messages on ``conn.``, ``user.``, ``room.`` and ``control.``.

Payloads are never parsed: they are framed once and queued to every local recipient. A message with a
reply subject gets a receipt (``{"node","delivered"}``) from this node; a request for a connection this
node does not have gets "no responders", exactly as if nobody listened.

A connection that is closing counts as gone from the moment the node knows it: the client's close frame
has arrived (its WebSocket is no longer OPEN) or the node has begun closing it (``closing``), even though
the session has not ended and the hub still holds it. So ``conn.`` and ``control.conn.`` requests for it
get "no responders", ``control.user.`` ignores it, and nothing joins it to a room.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping
from dataclasses import dataclass

import orjson

from gateway.core.framing import is_valid_utf8
from gateway.core.hub import Hub, JoinOutcome, Scope
from gateway.io.bus import Bus, Handler, Headers
from gateway.io.outbox import Flusher, LocalConn, Outgoing, is_open
from gateway.metrics import GatewayMetrics
from shared import headers as h
from shared.close_codes import BACKEND_CLOSE_CODES, CloseCode
from shared.errors import InvalidName
from shared.subjects import Subjects, validate_room

log = logging.getLogger("prism.delivery")


@dataclass(frozen=True, slots=True)
class MembershipOps:
    """What control messages may do to a connection, carried out by the session layer."""

    join: Callable[[LocalConn, str], Awaitable[JoinOutcome]]
    leave: Callable[[LocalConn, str], Awaitable[bool]]
    close: Callable[[LocalConn, int, str], None]


class Delivery:
    def __init__(
        self,
        node_id: str,
        subjects: Subjects,
        hub: Hub[LocalConn],
        flusher: Flusher,
        bus: Bus,
        metrics: GatewayMetrics,
        ops: MembershipOps,
    ) -> None:
        self.node_id = node_id
        self.subjects = subjects
        self.hub = hub
        self.flusher = flusher
        self.bus = bus
        self.metrics = metrics
        self.ops = ops
        prefix = subjects.prefix
        self._conn_offset = len(prefix) + len("conn.")
        self._user_offset = len(prefix) + len("user.")
        self._room_offset = len(prefix) + len("room.")
        self._control_conn_offset = len(prefix) + len("control.conn.")
        self._control_user_offset = len(prefix) + len("control.user.")
        self._tally = metrics.hot
        # Recovering members (gateway/recovery.py), by room and by user: they get these messages from the
        # history stream, with positions, so the core path leaves them out. Empty unless recovery is on.
        self._recovering_rooms: Mapping[str, Container[str]] = {}
        self._recovering_users: Mapping[str, Container[str]] = {}
        self._stored: Callable[[Scope, str], bool] = lambda scope, name: False

    def use_recovery(
        self,
        rooms: Mapping[str, Container[str]],
        users: Mapping[str, Container[str]],
        stored: Callable[[Scope, str], bool],
    ) -> None:
        """Leave out the recovering members that ``rooms`` and ``users`` (live views) hold, and send no
        receipt for a room or user that ``stored`` says has history: there the history stream's
        JetStream acknowledgement is the one answer (a receipt arriving first would be taken for it by a
        JetStream client, and fail its publish)."""
        self._recovering_rooms = rooms
        self._recovering_users = users
        self._stored = stored

    def handler_for(self, scope: Scope) -> Handler:
        return self.on_room if scope is Scope.ROOM else self.on_user

    def subject_for(self, scope: Scope, name: str) -> str:
        return self.subjects.room(name) if scope is Scope.ROOM else self.subjects.user(name)

    # -- deliveries (hot path: synchronous unless a receipt must be published) ---------------------------
    def _is_binary(self, target: str, data: bytes, headers: Headers | None) -> bool:
        if headers is not None and headers.get(h.FRAME) == h.FRAME_BINARY:
            return True
        if is_valid_utf8(data):
            return False
        # A text frame must be UTF-8 or the client fails the connection: keep the bytes, send binary.
        self._tally.outcomes[target, "not_utf8"] += 1
        return True

    def _fan_out(
        self, target: str, recipients: Iterable[LocalConn], reply: str, data: bytes, headers: Headers | None
    ) -> Awaitable[None] | None:
        message = Outgoing(data, self._is_binary(target, data, headers))
        send = self.flusher.send
        count = 0
        for conn in recipients:
            if send(conn, message):
                count += 1
        if count and headers is not None and h.SENT_AT in headers:
            self._observe_latency(target, headers[h.SENT_AT])
        return self._account(target, count, reply, recipients if reply else ())

    def _observe_latency(self, target: str, sent_at: str) -> None:
        """Publish-to-socket-write latency of a message that carries ``Prism-Sent-At``, observed when
        the flusher has written it."""
        try:
            start = float(sent_at)
        except ValueError:
            return
        child = self.metrics.delivery_latency.labels(node=self.node_id, target=target)
        self.flusher.after_write(lambda: child.observe(max(0.0, time.time() - start)))

    def _account(
        self, target: str, count: int, reply: str, recipients: Iterable[LocalConn]
    ) -> Awaitable[None] | None:
        tally = self._tally
        tally.delivered[target] += count
        tally.outcomes[target, "delivered" if count else "no_recipient"] += 1
        if not reply:
            return None
        # A receipt counts only sockets that are still open (a client may be mid-close).
        written = sum(1 for conn in recipients if is_open(conn))
        return self.bus.publish(reply, orjson.dumps({"node": self.node_id, "delivered": written}))

    def on_conn(
        self, subject: str, reply: str, data: bytes, headers: Headers | None
    ) -> Awaitable[None] | None:
        conn = self.hub.get(subject[self._conn_offset :])
        if conn is None or not is_open(conn):
            self._tally.outcomes["conn", "gone"] += 1
            return self.bus.reply_no_responders(reply) if reply else None
        sent = self.flusher.send_payload(conn, data, self._is_binary("conn", data, headers))
        if sent and headers is not None and h.SENT_AT in headers:
            self._observe_latency("conn", headers[h.SENT_AT])
        return self._account("conn", 1 if sent else 0, reply, (conn,) if reply else ())

    def to_local_conn(self, conn_id: str, data: bytes, binary: bool) -> bool:
        """A message an HTTP backend's poll answer holds for one of this node's connections (no NATS on
        the way); False if that connection is not open here."""
        conn = self.hub.get(conn_id)
        if conn is None or not is_open(conn):
            self._tally.outcomes["conn", "gone"] += 1
            return False
        sent = self.flusher.send_payload(conn, data, binary or self._is_binary("conn", data, None))
        self._account("conn", 1 if sent else 0, "", ())
        return sent

    def on_user(
        self, subject: str, reply: str, data: bytes, headers: Headers | None
    ) -> Awaitable[None] | None:
        user = subject[self._user_offset :]
        members: Iterable[LocalConn] = self.hub.user_conns(user)
        recovering = self._recovering_users.get(user)
        if recovering is not None:
            members = [m for m in members if m.conn_id not in recovering]
        if reply and self._stored(Scope.USER, user):
            reply = ""
        return self._fan_out("user", list(members) if reply else members, reply, data, headers)

    def on_room(
        self, subject: str, reply: str, data: bytes, headers: Headers | None
    ) -> Awaitable[None] | None:
        room = subject[self._room_offset :]
        members: Iterable[LocalConn] = self.hub.room_members(room)
        recovering = self._recovering_rooms.get(room)
        if recovering is not None:
            members = [m for m in members if m.conn_id not in recovering]
        if reply and self._stored(Scope.ROOM, room):
            reply = ""
        return self._fan_out("room", list(members) if reply else members, reply, data, headers)

    def on_broadcast(
        self, subject: str, reply: str, data: bytes, headers: Headers | None
    ) -> Awaitable[None] | None:
        """``broadcast``: every open connection on this node. A node with none stays silent (no receipt),
        so the receipts name exactly the nodes that wrote something."""
        members = [m.handle for m in self.hub.conns.values()]
        if not members:
            self._tally.outcomes["broadcast", "no_recipient"] += 1
            return None
        return self._fan_out("broadcast", members, reply, data, headers)

    # -- control -----------------------------------------------------------------------------------------
    async def on_control_conn(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        conn_id, _, action = subject[self._control_conn_offset :].rpartition(".")
        conn = self.hub.get(conn_id)
        if conn is None or not is_open(conn):
            if reply:
                await self.bus.reply_no_responders(reply)
            return
        answer = await self._control(action, [conn], data)
        if reply:
            await self.bus.publish(reply, orjson.dumps(answer | {"conn": conn_id}))

    async def on_control_user(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        user, _, action = subject[self._control_user_offset :].rpartition(".")
        conns = [c for c in self.hub.user_conns(user) if is_open(c)]
        if not conns:
            return  # nodes without the user stay silent; the one(s) that have it answer
        answer = await self._control(action, conns, data)
        if reply:
            await self.bus.publish(reply, orjson.dumps(answer | {"user": user}))

    async def _control(self, action: str, conns: list[LocalConn], data: bytes) -> dict[str, object]:
        try:
            body = orjson.loads(data) if data.strip() else {}
        except orjson.JSONDecodeError as exc:
            return self._refuse(f"control payload is not JSON: {exc}")
        if not isinstance(body, dict):
            return self._refuse("control payload must be a JSON object")
        if action == "close":
            code = body.get("code", CloseCode.CLOSED_BY_BACKEND)
            reason = body.get("reason", "closed by backend")
            if not isinstance(code, int) or code not in BACKEND_CLOSE_CODES:
                return self._refuse("code must be 1000, 1001, 1008, 1011, 1012, 1013 or 4000-4999")
            if not isinstance(reason, str) or len(reason.encode()) > 123:
                return self._refuse("reason must be a string of at most 123 bytes")
            for conn in conns:
                self.ops.close(conn, code, reason)
            return {"ok": True, "node": self.node_id, "conns": len(conns)}
        if action in ("join", "leave"):
            try:
                room = validate_room(body.get("room"))
            except InvalidName as exc:
                return self._refuse(str(exc))
            if action == "join":
                # A connection may start closing while an earlier one's join awaits: never join it then.
                outcomes = [await self.ops.join(conn, room) for conn in conns if is_open(conn)]
                refused = [o for o in outcomes if o is JoinOutcome.TOO_MANY_ROOMS]
                if refused:
                    return self._refuse(f"{len(refused)} connection(s) are in too many rooms")
                return {"ok": True, "node": self.node_id, "conns": len(outcomes)}
            for conn in conns:
                await self.ops.leave(conn, room)
            return {"ok": True, "node": self.node_id, "conns": len(conns)}
        return self._refuse(f"unknown control action {action!r}; expected close, join or leave")

    def _refuse(self, message: str) -> dict[str, object]:
        return {"ok": False, "node": self.node_id, "error": message}
