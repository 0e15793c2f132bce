"""The stand-ins for a node's optional parts when they are off (gateway/features.py): what "off" means
to a client that asks for them anyway."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.core.http_backends import Allow
from gateway.core.hub import JoinOutcome
from gateway.features import NoHttpBackends, NoRecovery


class Conn:
    user = "alice"


async def test_without_history_a_recovering_join_is_a_join_that_says_so() -> None:
    sent: list[tuple[Any, dict[str, Any]]] = []
    recovery = NoRecovery(lambda conn, frame: sent.append((conn, orjson.loads(frame))))
    conn: Any = Conn()

    async def join() -> JoinOutcome:
        return JoinOutcome.JOINED

    assert await recovery.join_room(conn, "lobby", None, join) is JoinOutcome.JOINED
    assert sent == [(conn, {"prism": "recovery", "room": "lobby", "recoverable": False})]

    async def too_many() -> JoinOutcome:
        return JoinOutcome.TOO_MANY_ROOMS

    sent.clear()
    assert await recovery.join_room(conn, "vip", None, too_many) is JoinOutcome.TOO_MANY_ROOMS
    assert sent == []  # refused: the client gets the refusal, not a recovery frame
    assert await recovery.reserve_user(conn, None) is None
    await recovery.start_user(conn, None)
    assert sent == [(conn, {"prism": "recovery", "user": "alice", "recoverable": False})]


async def test_without_http_backends_every_connection_opens_and_events_go_to_nats() -> None:
    http = NoHttpBackends()
    conn: Any = Conn()
    assert await http.connect(conn, {}, {}, None) == Allow()
    assert http.backend_for(conn, "echo") is None
