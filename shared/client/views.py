"""What a client keeps from the gateway's frames besides deliveries: each room's members (its presence
frames) and the outcome of each recovery (its ``recovery`` frames). Bounded queues: nobody may read them,
so the oldest go first."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shared.client.positions import Positions, Recovery
from shared.client.state import RecoveryCallback

log = logging.getLogger("prism.client")

PRESENCE_BACKLOG = 1000  # presence frames kept for client.presence; the oldest go first
RECOVERY_BACKLOG = 1000  # recovery outcomes kept for client.recoveries; the oldest go first


def put_newest(queue: asyncio.Queue[Any], item: Any) -> None:
    """Queue ``item``, dropping the oldest one if ``queue`` is full (nobody reads it)."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


class PresenceView:
    """Room presence frames as they arrive (rooms with presence events on: docs/protocol.md), and the
    members they add up to, per room."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue(PRESENCE_BACKLOG)
        self._members: dict[str, set[str]] = {}

    def members(self, room: str) -> tuple[str, ...]:
        return tuple(sorted(self._members.get(room, ())))

    def forget(self, room: str) -> None:
        self._members.pop(room, None)

    def on_frame(self, frame: dict[str, Any]) -> None:
        room = frame.get("room")
        if not isinstance(room, str):
            return
        if isinstance(frame.get("members"), list):  # a snapshot: after a join, and after each rejoin
            self._members[room] = {m for m in frame["members"] if isinstance(m, str)}
        else:
            members = self._members.setdefault(room, set())
            members.update(m for m in frame.get("joined") or () if isinstance(m, str))
            members.difference_update(m for m in frame.get("left") or () if isinstance(m, str))
        put_newest(self.frames, frame)


class RecoveryView:
    """The outcome of every ``recovery`` frame, queued and handed to ``on_recovery``; the positions
    themselves are :class:`Positions`."""

    def __init__(self, positions: Positions, on_recovery: RecoveryCallback | None) -> None:
        self.positions = positions
        self.outcomes: asyncio.Queue[Recovery] = asyncio.Queue(RECOVERY_BACKLOG)
        self._on_recovery = on_recovery

    def on_frame(self, frame: dict[str, Any]) -> None:
        recovery = self.positions.recovery(frame)
        if recovery is None:
            return
        if recovery.recovering and not recovery.recovered:
            log.warning("messages of %s may be lost after seq %s", recovery.room or "the user", recovery.seq)
        put_newest(self.outcomes, recovery)
        if self._on_recovery is not None:
            try:
                self._on_recovery(recovery)
            except Exception:
                log.exception("on_recovery callback failed")
