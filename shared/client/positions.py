"""What a client keeps to recover missed messages: its position in each recoverable room and in its user
stream, kept up to date from ``recovery``, ``pos`` and ``mark`` frames (docs/protocol.md, "Recovery").

Pure bookkeeping, no I/O: :class:`shared.client.PrismClient` feeds it the frames it reads and asks it what
to send on the next join or connection. The browser SDK (gateway/web/prism.js) follows the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.frames import Position


@dataclass(frozen=True, slots=True)
class Recovery:
    """A ``recovery`` frame: where positions of a room (``room``) or of the user stream (``user``) start.

    ``recoverable``: False when it has no history (deliveries come without positions; nothing else is
    set). ``recovering``: the client asked to resume from a position. ``recovered``: and nothing after it
    is missing. ``recovering and not recovered`` means messages may have been lost after ``seq``: reload
    what depends on them (the replay that follows is whatever the history still holds)."""

    room: str | None
    user: str | None
    recoverable: bool
    epoch: str | None = None
    seq: int | None = None
    recovering: bool = False
    recovered: bool = False

    @property
    def position(self) -> Position | None:
        return Position(self.epoch, self.seq) if self.epoch is not None and self.seq is not None else None


# (key, name, seq) of a ``pos`` frame: key is "room" or "user".
Expected = tuple[str, str, int]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Positions:
    """The client's positions: per room, and for its user stream."""

    def __init__(self, user: Position | None = None) -> None:
        self.rooms: dict[str, Position] = {}
        self.user: Position | None = user

    def get(self, key: str, name: str) -> Position | None:
        return self.rooms.get(name) if key == "room" else self.user

    def _set(self, key: str, name: str, position: Position) -> None:
        if key == "room":
            self.rooms[name] = position
        else:
            self.user = position

    def recovery(self, frame: dict[str, Any]) -> Recovery | None:
        """Apply a ``recovery`` frame; returns it as a :class:`Recovery` (None if malformed)."""
        key = "room" if "room" in frame else "user"
        name = frame.get(key)
        if key == "room" and not isinstance(name, str):
            return None
        room, user = (name, None) if key == "room" else (None, name if isinstance(name, str) else None)
        if frame.get("recoverable") is not True:
            if key == "room":
                self.rooms.pop(str(name), None)
            else:
                self.user = None
            return Recovery(room, user, recoverable=False)
        epoch, seq = frame.get("epoch"), _int(frame.get("seq"))
        if not isinstance(epoch, str) or seq is None:
            return None
        self._set(key, str(name or ""), Position(epoch, seq))
        return Recovery(
            room,
            user,
            recoverable=True,
            epoch=epoch,
            seq=seq,
            recovering=frame.get("recovering") is True,
            recovered=frame.get("recovered") is True,
        )

    @staticmethod
    def expect(frame: dict[str, Any]) -> Expected | None:
        """A ``pos`` frame: the delivery that follows is at this position."""
        key = "room" if "room" in frame else "user"
        name, seq = frame.get(key), _int(frame.get("seq"))
        if seq is None or (key == "room" and not isinstance(name, str)):
            return None
        return key, str(name or ""), seq

    def accept(self, expected: Expected) -> bool:
        """The delivery after a ``pos`` frame arrived: True if it is new (the position moves to it),
        False if the client already had it (a duplicate to drop; the node never sends one, but a client
        that resumed from a stored position might)."""
        key, name, seq = expected
        current = self.get(key, name)
        if current is None:
            return True  # no recovery frame seen for it (cannot happen with a Prism node): keep it
        if seq <= current.seq:
            return False
        self._set(key, name, Position(current.epoch, seq))
        return True

    def mark(self, frame: dict[str, Any]) -> None:
        """A ``mark`` frame: nothing for the room or user up to its ``seq``."""
        expected = self.expect(frame)
        if expected is not None:
            key, name, seq = expected
            current = self.get(key, name)
            if current is not None and seq > current.seq:
                self._set(key, name, Position(current.epoch, seq))

    def forget_room(self, room: str) -> None:
        self.rooms.pop(room, None)

    def user_query(self) -> dict[str, str]:
        """The query parameters that ask for the user stream with positions, resuming if possible."""
        query = {"recover": "user"}
        if self.user is not None:
            query["user_epoch"] = self.user.epoch
            query["user_seq"] = str(self.user.seq)
        return query
