"""Decisions about node liveness and presence repair, with no I/O: which nodes are dead, what a dead
node's leftover keys say about the connections it lost, and how a node's own keys differ from its hub.

The I/O shell is :mod:`gateway.io.liveness`; the key layout is :mod:`shared.presence_keys`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared import presence_keys as keys

# How a connection lost with its node is reported on ``client.disconnect``: 1006 is what the client
# itself saw (the TCP connection dropped without a close frame).
LOST_CLOSE_CODE = 1006
LOST_REASON = "node lost"


def dead_nodes(registered: Iterable[str], alive: Iterable[str], me: str) -> set[str]:
    """Nodes with entries in the bucket (an ``info`` key) but no heartbeat, other than this one."""
    return set(registered) - set(alive) - {me}


@dataclass(slots=True)
class LostConn:
    """What a dead node's keys say about one of its connections."""

    conn: str
    node: str
    user: str | None = None
    route: str = ""
    remote: str = ""
    connected_at: str = ""
    rooms: set[str] = field(default_factory=set)

    def disconnect_event(self, disconnected_at: str, swept_by: str) -> dict[str, Any]:
        """The ``client.disconnect`` body, as the node itself would have published it, plus ``swept_by``."""
        return {
            "conn": self.conn,
            "user": self.user,
            "node": self.node,
            "route": self.route,
            "remote": self.remote,
            "connected_at": self.connected_at,
            "code": LOST_CLOSE_CODE,
            "reason": LOST_REASON,
            "rooms": sorted(self.rooms),
            "disconnected_at": disconnected_at,
            "swept_by": swept_by,
        }


def lost_connections(node: str, entries: Mapping[str, Any]) -> list[LostConn]:
    """Group a dead node's ``conn.``, ``user.`` and ``room.`` keys (key -> decoded value) by connection.

    A connection may have lost some keys already (a half-finished close): whatever is left names it, and
    the ``conn.`` value, when present, fills in the details.
    """
    found: dict[str, LostConn] = {}
    for key, value in entries.items():
        conn_id = keys.conn_id_from_key(key)
        if not conn_id.startswith(node + "."):
            continue  # not this node's (filters make this impossible; cheap to be sure)
        lost = found.get(conn_id)
        if lost is None:
            lost = found[conn_id] = LostConn(conn_id, node)
        data = value if isinstance(value, dict) else {}
        kind = key.split(".", 1)[0]
        if kind == "conn":
            lost.user = data.get("user", lost.user)
            lost.route = str(data.get("route", lost.route))
            lost.remote = str(data.get("remote", lost.remote))
            lost.connected_at = str(data.get("connected_at", lost.connected_at))
        elif kind == "user":
            lost.user = key.split(".")[1]
            lost.connected_at = lost.connected_at or str(data.get("connected_at", ""))
        elif kind == "room":
            lost.rooms.add(key.split(".")[1])
            if lost.user is None and isinstance(data.get("user"), str):
                lost.user = data["user"]
    return sorted(found.values(), key=lambda c: c.conn)


@dataclass(frozen=True, slots=True)
class LocalState:
    """One open connection as this node's hub knows it."""

    conn: str
    user: str | None
    rooms: frozenset[str]


def expected_keys(conns: Iterable[LocalState]) -> dict[str, LocalState]:
    """Every presence key this node's connections should have, with the connection each belongs to."""
    expected: dict[str, LocalState] = {}
    for conn in conns:
        expected[keys.conn_key(conn.conn)] = conn
        if conn.user is not None:
            expected[keys.user_key(conn.user, conn.conn)] = conn
        for room in conn.rooms:
            expected[keys.room_key(room, conn.conn)] = conn
    return expected


@dataclass(frozen=True, slots=True)
class Repair:
    missing: list[str]  # keys to write
    extra: list[str]  # keys to purge: connections or memberships that are gone


def repair(expected: Iterable[str], actual: Iterable[str]) -> Repair:
    """What to change so the bucket holds exactly ``expected`` of this node's keys."""
    want, have = set(expected), set(actual)
    return Repair(sorted(want - have), sorted(have - want))
