"""Backend -> a connection's life: ``control.conn.<id>.<action>`` and ``control.user.<user>.<action>``,
where the action is ``close``, ``join`` or ``leave`` (docs/protocol.md, "Control").

A connection that is closing counts as gone (see :mod:`gateway.delivery`): a ``control.conn`` request for
it gets "no responders", ``control.user`` ignores it, and nothing joins it to a room. A join or leave goes
through the same :class:`gateway.membership.Membership` as a client's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import orjson

from gateway.core.hub import Hub, JoinOutcome
from gateway.io.bus import Bus, Headers
from gateway.io.outbox import LocalConn, is_open
from shared.close_codes import BACKEND_CLOSE_CODES, CloseCode
from shared.errors import InvalidName
from shared.subjects import Subjects, validate_room


class Rooms(Protocol):
    """What a control message may do to a connection's rooms (:class:`gateway.membership.Membership`)."""

    async def join(self, conn: LocalConn, room: str) -> JoinOutcome: ...

    async def leave_room(self, conn: LocalConn, room: str) -> bool: ...


class Control:
    def __init__(
        self,
        node_id: str,
        subjects: Subjects,
        hub: Hub[LocalConn],
        bus: Bus,
        rooms: Rooms,
        close: Callable[[LocalConn, int, str], None],
    ) -> None:
        self.node_id = node_id
        self.hub = hub
        self.bus = bus
        self.rooms = rooms
        self.close = close
        self._control_conn_offset = subjects.tail_offset("control.conn.")
        self._control_user_offset = subjects.tail_offset("control.user.")

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
                self.close(conn, code, reason)
            return {"ok": True, "node": self.node_id, "conns": len(conns)}
        if action in ("join", "leave"):
            try:
                room = validate_room(body.get("room"))
            except InvalidName as exc:
                return self._refuse(str(exc))
            if action == "join":
                # A connection may start closing while an earlier one's join awaits: never join it then.
                outcomes = [await self.rooms.join(conn, room) for conn in conns if is_open(conn)]
                refused = [o for o in outcomes if o is JoinOutcome.TOO_MANY_ROOMS]
                if refused:
                    return self._refuse(f"{len(refused)} connection(s) are in too many rooms")
                return {"ok": True, "node": self.node_id, "conns": len(outcomes)}
            for conn in conns:
                await self.rooms.leave_room(conn, room)
            return {"ok": True, "node": self.node_id, "conns": len(conns)}
        return self._refuse(f"unknown control action {action!r}; expected close, join or leave")

    def _refuse(self, message: str) -> dict[str, object]:
        return {"ok": False, "node": self.node_id, "error": message}
