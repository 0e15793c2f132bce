"""Decisions about node liveness, with no I/O: which nodes have gone silent, whether this node may judge
them, and what a dead node's leftover keys say about the connections it lost.

Nodes beat on core NATS (``node.<id>.beat``), not in JetStream: a JetStream leader election or a stream
that lost its quorum does not stop core NATS, so it cannot make a live node look dead. A node is only
*silent* here; the I/O shell (:mod:`gateway.io.liveness`) then pings it before calling it dead.

An observer judges nobody unless it is itself *healthy*: connected to NATS for at least one TTL, and
hearing its own beats come back. A node that was cut off, or that just reconnected, has missed beats
that the others sent, and would mistake them for silence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.lifecycle_events import disconnect_details, event_body
from gateway.core.presence_writes import ConnRecord

# How a connection lost with its node is reported on ``client.disconnect``: 1006 is what the client
# itself saw (the TCP connection dropped without a close frame).
LOST_CLOSE_CODE = 1006
LOST_REASON = "node lost"
# Seconds a node may go unheard before it is pinged (and, silent, swept): PRISM_NODE_TTL's default.
DEFAULT_TTL = 5.0
# A node beats this many times per TTL: several beats may be lost (a NATS server failing over) before
# it goes silent.
BEATS_PER_TTL = 6


def beat_interval(ttl: float) -> float:
    return ttl / BEATS_PER_TTL


@dataclass(slots=True)
class Peer:
    ttl: float
    last_heard: float
    beat: dict[str, Any]


class BeatTable:
    """What this node has heard of every node's heartbeat. Time (``now``, monotonic seconds) is passed
    in, so tests drive the clock."""

    def __init__(self, me: str, ttl: float) -> None:
        self.me = me
        self.ttl = ttl
        self.peers: dict[str, Peer] = {}
        self._linked_since: float | None = None

    def heard(self, node: str, beat: Mapping[str, Any], now: float) -> None:
        """A heartbeat of ``node`` arrived (its own TTL is in it; a missing or bad one counts as ours)."""
        ttl = beat.get("ttl")
        ttl = float(ttl) if isinstance(ttl, int | float) and ttl > 0 else self.ttl
        self.peers[node] = Peer(ttl, now, dict(beat))

    def forget(self, node: str) -> None:
        """``node`` stopped cleanly or was swept: it is not silent, it is gone."""
        self.peers.pop(node, None)

    def link_up(self, now: float) -> None:
        if self._linked_since is None:
            self._linked_since = now

    def link_down(self) -> None:
        self._linked_since = None

    def healthy(self, now: float) -> bool:
        """Whether this node has watched long enough, and hears its own beats, to judge the others."""
        if self._linked_since is None or now - self._linked_since < self.ttl:
            return False
        own = self.peers.get(self.me)
        return own is not None and now - own.last_heard <= 2 * beat_interval(self.ttl) + 1.0

    def silent(self, now: float) -> list[str]:
        """Other nodes not heard from for longer than their TTL; none while this node is not healthy."""
        if not self.healthy(now):
            return []
        return sorted(n for n, p in self.peers.items() if n != self.me and now - p.last_heard > p.ttl)

    def alive(self) -> dict[str, dict[str, Any]]:
        """node -> its latest beat, for every node heard from and not forgotten."""
        return {node: peer.beat for node, peer in self.peers.items()}


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

    @property
    def record(self) -> ConnRecord:
        return ConnRecord(self.conn, self.node, self.user, self.route, self.remote, self.connected_at)

    def disconnect_event(self, disconnected_at: str, swept_by: str) -> dict[str, Any]:
        """The ``client.disconnect`` body, as the node itself would have published it, plus ``swept_by``."""
        details = disconnect_details(LOST_CLOSE_CODE, LOST_REASON, self.rooms, disconnected_at)
        return event_body(self.record, **details, swept_by=swept_by)


def lost_connections(node: str, conns: Mapping[str, Any], room_keys: Iterable[str]) -> list[LostConn]:
    """The connections a dead node lost: one per ``conn.`` key (key -> decoded value), with the rooms its
    ``room.`` keys name.

    Only a conn key makes a connection count: a node writes it last when a connection opens (before
    ``client.connect``) and purges it last when one closes (before ``client.disconnect``), so a room or
    user key without it belongs to a connection that was never announced, or whose close already was.
    """
    mine = node + "."
    found: dict[str, LostConn] = {}
    for key, value in conns.items():
        conn_id = key[5:]  # "conn." + the conn id
        if not conn_id.startswith(mine):
            continue  # not this node's (filters make this impossible; cheap to be sure)
        data = value if isinstance(value, dict) else {}
        user = data.get("user")
        found[conn_id] = LostConn(
            conn_id,
            node,
            user if isinstance(user, str) else None,
            str(data.get("route", "")),
            str(data.get("remote", "")),
            str(data.get("connected_at", "")),
        )
    for key in room_keys:
        _, room, conn_node, suffix = key.split(".")
        lost = found.get(f"{conn_node}.{suffix}")
        if lost is not None:
            lost.rooms.add(room)
    return sorted(found.values(), key=lambda c: c.conn)
