"""The node's local registry: conn id -> connection, room -> members, user -> connections.

Besides answering "which local connections does this delivery reach", the hub decides when the node
must start or stop listening on NATS: it refcounts rooms and users and returns an :class:`Interest`
change exactly when the first local member arrives or the last one leaves. It knows nothing of sockets;
``C`` is whatever the I/O shell uses for a connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

C = TypeVar("C")


class Scope(Enum):
    ROOM = "room"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Interest:
    """Start (``active=True``) or stop listening to deliveries for a room or a user."""

    scope: Scope
    name: str
    active: bool


@dataclass(slots=True)
class Member(Generic[C]):
    conn_id: str
    user: str | None
    handle: C
    rooms: set[str] = field(default_factory=set)


class JoinOutcome(Enum):
    JOINED = "joined"
    ALREADY_MEMBER = "already_member"
    TOO_MANY_ROOMS = "too_many_rooms"
    UNKNOWN_CONN = "unknown_conn"


class Hub(Generic[C]):
    def __init__(self, max_rooms_per_conn: int) -> None:
        self.max_rooms_per_conn = max_rooms_per_conn
        self.conns: dict[str, Member[C]] = {}
        self.rooms: dict[str, dict[str, C]] = {}
        self.users: dict[str, dict[str, C]] = {}

    def __len__(self) -> int:
        return len(self.conns)

    def add(self, conn_id: str, user: str | None, handle: C) -> list[Interest]:
        if conn_id in self.conns:
            raise ValueError(f"conn {conn_id} is already registered")
        self.conns[conn_id] = Member(conn_id, user, handle)
        if user is None:
            return []
        members = self.users.setdefault(user, {})
        members[conn_id] = handle
        return [Interest(Scope.USER, user, True)] if len(members) == 1 else []

    def remove(self, conn_id: str) -> tuple[Member[C] | None, list[Interest]]:
        """Forget a connection; returns it (with the rooms it was in) and the interests that ended."""
        member = self.conns.pop(conn_id, None)
        if member is None:
            return None, []
        changes = [c for room in member.rooms if (c := self._drop(self.rooms, Scope.ROOM, room, conn_id))]
        if member.user is not None and (c := self._drop(self.users, Scope.USER, member.user, conn_id)):
            changes.append(c)
        return member, changes

    def join(self, conn_id: str, room: str) -> tuple[JoinOutcome, list[Interest]]:
        member = self.conns.get(conn_id)
        if member is None:
            return JoinOutcome.UNKNOWN_CONN, []
        if room in member.rooms:
            return JoinOutcome.ALREADY_MEMBER, []
        if len(member.rooms) >= self.max_rooms_per_conn:
            return JoinOutcome.TOO_MANY_ROOMS, []
        member.rooms.add(room)
        members = self.rooms.setdefault(room, {})
        members[conn_id] = member.handle
        return JoinOutcome.JOINED, [Interest(Scope.ROOM, room, True)] if len(members) == 1 else []

    def leave(self, conn_id: str, room: str) -> tuple[bool, list[Interest]]:
        """Returns whether the connection was a member, and the interest that ended if it was the last."""
        member = self.conns.get(conn_id)
        if member is None or room not in member.rooms:
            return False, []
        member.rooms.discard(room)
        change = self._drop(self.rooms, Scope.ROOM, room, conn_id)
        return True, [change] if change else []

    def get(self, conn_id: str) -> C | None:
        member = self.conns.get(conn_id)
        return member.handle if member is not None else None

    def room_members(self, room: str) -> Iterator[C]:
        return iter(self.rooms.get(room, {}).values())

    def user_conns(self, user: str) -> Iterator[C]:
        return iter(self.users.get(user, {}).values())

    def user_conn_ids(self, user: str) -> list[str]:
        return list(self.users.get(user, {}))

    def is_member(self, conn_id: str, room: str) -> bool:
        member = self.conns.get(conn_id)
        return member is not None and room in member.rooms

    def rooms_of(self, conn_id: str) -> set[str]:
        member = self.conns.get(conn_id)
        return set(member.rooms) if member is not None else set()

    def wants(self, scope: Scope, name: str) -> bool:
        """Whether the node should be listening for ``scope``/``name`` right now."""
        return name in (self.rooms if scope is Scope.ROOM else self.users)

    @staticmethod
    def _drop(index: dict[str, dict[str, C]], scope: Scope, name: str, conn_id: str) -> Interest | None:
        members = index.get(name)
        if members is None:
            return None
        members.pop(conn_id, None)
        if members:
            return None
        del index[name]
        return Interest(scope, name, False)
