"""Backend -> clients: what the node does with messages on ``conn.``, ``user.``, ``room.`` and ``broadcast``
(``control.`` is :mod:`gateway.control`).

Payloads are never parsed: they are framed once and queued to every local recipient. A message with a
reply subject gets a receipt (``{"node","delivered"}``) from this node; a request for a connection this
node does not have gets "no responders", exactly as if nobody listened.

A connection that is closing counts as gone from the moment the node knows it: the client's close frame
has arrived (its WebSocket is no longer OPEN) or the node has begun closing it (``closing``), even though
the session has not ended and the hub still holds it. So a ``conn.`` request for it gets "no responders"
(and so do control messages: see :mod:`gateway.control`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping
from dataclasses import dataclass

import orjson

from gateway.core.framing import is_valid_utf8
from gateway.core.hub import Hub, Scope
from gateway.io.bus import Bus, Handler, Headers
from gateway.io.outbox import Flusher, LocalConn, Outgoing, is_open
from gateway.metrics import GatewayMetrics
from shared import headers as h
from shared.subjects import Subjects

log = logging.getLogger("prism.delivery")


@dataclass(frozen=True, slots=True)
class Recovering:
    """What recovery tells the delivery path (live views): the recovering members of each room and user,
    and whether a room or user has history."""

    rooms: Mapping[str, Container[str]]
    users: Mapping[str, Container[str]]
    stored: Callable[[Scope, str], bool]


def _nothing_stored(scope: Scope, name: str) -> bool:
    return False


class Delivery:
    def __init__(
        self,
        node_id: str,
        subjects: Subjects,
        hub: Hub[LocalConn],
        flusher: Flusher,
        bus: Bus,
        metrics: GatewayMetrics,
        recovering: Recovering | None = None,
    ) -> None:
        self.node_id = node_id
        self.subjects = subjects
        self.hub = hub
        self.flusher = flusher
        self.bus = bus
        self.metrics = metrics
        self._conn_offset = subjects.tail_offset("conn.")
        self._user_offset = subjects.tail_offset("user.")
        self._room_offset = subjects.tail_offset("room.")
        self._tally = metrics.hot
        # Recovering members (gateway/recovery.py), by room and by user: they get these messages from the
        # history stream, with positions, so the core path leaves them out. Empty unless recovery is on.
        # And no receipt for a room or user with history: there the history stream's JetStream
        # acknowledgement is the one answer (a receipt arriving first would be taken for it by a JetStream
        # client, and fail its publish).
        self._recovering_rooms: Mapping[str, Container[str]] = recovering.rooms if recovering else {}
        self._recovering_users: Mapping[str, Container[str]] = recovering.users if recovering else {}
        self._stored: Callable[[Scope, str], bool] = recovering.stored if recovering else _nothing_stored

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
        members = self.hub.user_conns(user)
        return self._to_members(Scope.USER, user, members, self._recovering_users, reply, data, headers)

    def on_room(
        self, subject: str, reply: str, data: bytes, headers: Headers | None
    ) -> Awaitable[None] | None:
        room = subject[self._room_offset :]
        members = self.hub.room_members(room)
        return self._to_members(Scope.ROOM, room, members, self._recovering_rooms, reply, data, headers)

    def _to_members(
        self,
        scope: Scope,
        name: str,
        members: Iterable[LocalConn],
        recovering_of: Mapping[str, Container[str]],
        reply: str,
        data: bytes,
        headers: Headers | None,
    ) -> Awaitable[None] | None:
        """A ``user.`` or ``room.`` message to this node's members of it, less those that recover it."""
        recovering = recovering_of.get(name)
        if recovering is not None:
            members = [m for m in members if m.conn_id not in recovering]
        if reply and self._stored(scope, name):
            reply = ""
        return self._fan_out(scope.value, list(members) if reply else members, reply, data, headers)

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
