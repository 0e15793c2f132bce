"""Room presence events, with no I/O: who is in a room, and when to tell the room's local members.

The source of truth is the presence bucket: a room's membership keys ``room.<room>.<conn_id>`` (value
``{"conn","node","user","joined_at"}``), read by one filtered KV watch per room that has a local member.
This module turns that key stream into what clients see:

- A user is *present* while at least one membership key names them. Anonymous connections (``user``
  null) count as members but are never listed.
- A user who stops being present is not announced at once: a leave is scheduled ``debounce`` seconds
  later, and cancelled (no leave, and no join either) if the user is present again before then. So a
  client that reconnects within the window, on any node, produces no leave/join pair.
- Joins and leaves are coalesced per room: a room flushes at most once per ``batch`` seconds (the first
  change after a quiet spell goes out at once), so a mass reconnect yields a few frames, not a storm.
- A local connection that joins the room gets a snapshot of the members at the room's next flush, once
  the watch has caught up and the connection's own key has been seen (or ``key_wait`` seconds passed),
  so the snapshot lists the joiner too. From then on it gets every diff; snapshot plus diffs always
  equals what every other member was told.

State exists per room only while this node has a local member in it (:meth:`PresenceTracker.add_local`
says when to start the room's watch, :meth:`PresenceTracker.remove_local` when to stop it). Time is
passed in (``now``, monotonic seconds), so tests drive the clock. The I/O shell is
:mod:`gateway.io.room_presence`.
"""

from __future__ import annotations

import fnmatch
import heapq
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import orjson

from shared import presence_keys as keys

C = TypeVar("C")

# How long a joining connection's snapshot waits for its own membership key (a failed presence write
# never shows one), before it is sent without it.
KEY_WAIT = 2.0

_PATTERN_CHARS = re.compile(r"[A-Za-z0-9_=\-*?\[\]!]+")


class RoomMatcher:
    """Which rooms have presence events: exact names or fnmatch-style patterns (``chat-*``)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._exact = frozenset(p for p in self.patterns if not _is_pattern(p))
        wild = [fnmatch.translate(p) for p in self.patterns if _is_pattern(p)]
        self._wild = re.compile("|".join(wild)) if wild else None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, room: str) -> bool:
        if room in self._exact:
            return True
        return self._wild is not None and self._wild.match(room) is not None


def _is_pattern(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` cannot be a room presence pattern, or None if it can."""
    if not _PATTERN_CHARS.fullmatch(pattern):
        return (
            f"room presence pattern {pattern!r} may contain only letters, digits, '_', '-', '=' "
            "and the wildcards '*', '?', '[', ']', '!'"
        )
    if len(pattern) > 128:
        return f"room presence pattern {pattern!r} is longer than 128 characters"
    return None


@dataclass(frozen=True, slots=True)
class Membership:
    """One membership key as a watch reports it: ``present`` False for a purge or delete."""

    conn_id: str
    user: str | None
    present: bool


def parse_entry(key: str, operation: str | None, value: bytes | None) -> Membership | None:
    """A watch entry of ``room.<room>.<conn_id>`` as a :class:`Membership`; None if it is not one."""
    parts = key.split(".")
    if len(parts) != 4 or parts[0] != "room":
        return None
    conn_id = keys.conn_id_from_key(key)
    if operation is not None:  # PURGE / DEL, or a server's expiry marker
        return Membership(conn_id, None, False)
    try:
        decoded = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        decoded = None
    user = decoded.get("user") if isinstance(decoded, dict) else None
    return Membership(conn_id, user if isinstance(user, str) else None, True)


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[C]):
    """Send ``members`` (sorted) to ``targets``: connections that just joined ``room``."""

    room: str
    members: tuple[str, ...]
    targets: tuple[C, ...]


@dataclass(frozen=True, slots=True)
class Diff(Generic[C]):
    """Send the users that joined and left ``room`` (each sorted, disjoint) to ``targets``."""

    room: str
    joined: tuple[str, ...]
    left: tuple[str, ...]
    targets: tuple[C, ...]


Output = Snapshot[C] | Diff[C]


@dataclass(slots=True)
class RoomState(Generic[C]):
    # What the watch says: conn id -> user of every membership key, and how many keys each user has.
    conns: dict[str, str | None] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    # Listing in progress (the watch started or restarted): keys seen so far, until it catches up.
    loading: dict[str, str | None] | None = field(default_factory=dict)
    loaded: bool = False
    # What members are told: users shown as present (including those whose leave is pending).
    visible: set[str] = field(default_factory=set)
    leaving: OrderedDict[str, float] = field(default_factory=OrderedDict)  # user -> deadline, in order
    joined: set[str] = field(default_factory=set)  # changes to ``visible`` not yet flushed
    left: set[str] = field(default_factory=set)
    last_flush: float = float("-inf")
    flush_at: float | None = None
    wake_at: float | None = None  # the earliest time this room is queued to be looked at
    # Local members: those that have had their snapshot, and those waiting for it (with a deadline).
    ready: dict[str, C] = field(default_factory=dict)
    waiting: dict[str, tuple[C, float]] = field(default_factory=dict)


class PresenceTracker(Generic[C]):
    """Per-room presence state for the rooms this node has local members in, and what to send when."""

    def __init__(self, debounce: float, batch: float, key_wait: float = KEY_WAIT) -> None:
        self.debounce = debounce
        self.batch = batch
        self.key_wait = key_wait
        self.rooms: dict[str, RoomState[C]] = {}
        self._wakeups: list[tuple[float, str]] = []

    # -- local members -------------------------------------------------------------------------------
    def add_local(self, room: str, conn_id: str, handle: C, now: float) -> bool:
        """A local connection joined ``room``; True if the room is new here (start its watch)."""
        state = self.rooms.get(room)
        created = state is None
        if state is None:
            state = self.rooms[room] = RoomState()
        if conn_id in state.ready or conn_id in state.waiting:
            return created
        state.waiting[conn_id] = (handle, now + self.key_wait)
        if state.loaded:
            if conn_id in state.conns:
                self._want_flush(room, state, now)
            else:
                self._wake(room, state, now + self.key_wait)
        return created

    def remove_local(self, room: str, conn_id: str) -> bool:
        """A local connection left ``room``; True if it was the last (stop the watch: state is gone)."""
        state = self.rooms.get(room)
        if state is None:
            return False
        state.ready.pop(conn_id, None)
        state.waiting.pop(conn_id, None)
        if state.ready or state.waiting:
            return False
        del self.rooms[room]
        return True

    # -- the watch -----------------------------------------------------------------------------------
    def reload(self, room: str) -> None:
        """The room's watch (re)starts: the entries until :meth:`caught_up` are a complete listing."""
        state = self.rooms.get(room)
        if state is not None:
            state.loading = {}

    def entry(self, room: str, change: Membership, now: float) -> None:
        """One watch entry for ``room``."""
        state = self.rooms.get(room)
        if state is None:
            return
        if state.loading is not None:
            if change.present:
                state.loading[change.conn_id] = change.user
            else:
                state.loading.pop(change.conn_id, None)
            return
        if change.present:
            self._put(room, state, change.conn_id, change.user, now)
        else:
            self._remove(room, state, change.conn_id, now)

    def node_swept(self, node: str, now: float) -> None:
        """Every key of ``node`` was removed at once (its sweep), which no watch reports: each of its
        connections left every room."""
        prefix = node + "."
        for room, state in self.rooms.items():
            if state.loading is not None:
                for conn_id in [c for c in state.loading if c.startswith(prefix)]:
                    del state.loading[conn_id]
            for conn_id in [c for c in state.conns if c.startswith(prefix)]:
                self._remove(room, state, conn_id, now)

    def caught_up(self, room: str, now: float) -> None:
        """The watch has delivered every current key of ``room``; later entries are live changes."""
        state = self.rooms.get(room)
        if state is None or state.loading is None:
            return
        listing, state.loading = state.loading, None
        if not state.loaded:
            # The first listing is the state, not news: nobody is told it joined.
            state.loaded = True
            state.conns = listing
            for user in listing.values():
                if user is not None:
                    state.counts[user] = state.counts.get(user, 0) + 1
            state.visible = set(state.counts)
            self._want_flush(room, state, now)
            return
        # A restarted watch: what changed while it was down counts as live changes (debounced).
        for conn_id in [c for c in state.conns if c not in listing]:
            self._remove(room, state, conn_id, now)
        for conn_id, user in listing.items():
            self._put(room, state, conn_id, user, now)
        self._reschedule(room, state, now)

    # -- time ----------------------------------------------------------------------------------------
    def next_due(self) -> float | None:
        """When :meth:`tick` next has something to do (it may find nothing: wake-ups are not retracted)."""
        return self._wakeups[0][0] if self._wakeups else None

    def tick(self, now: float) -> list[Output[C]]:
        """Announce the leaves whose debounce ran out and flush the rooms that are due."""
        due: list[str] = []
        while self._wakeups and self._wakeups[0][0] <= now:
            at, room = heapq.heappop(self._wakeups)
            state = self.rooms.get(room)
            if state is not None and state.wake_at is not None and state.wake_at <= at:
                state.wake_at = None
                due.append(room)
        out: list[Output[C]] = []
        for room in due:
            state = self.rooms[room]
            if state.loaded and state.loading is None:
                self._expire_leaves(room, state, now)
                if any(deadline <= now for _, deadline in state.waiting.values()):
                    self._want_flush(room, state, now)  # a snapshot that waited long enough for its key
                if state.flush_at is not None and state.flush_at <= now:
                    self._flush(room, state, now, out)
            self._reschedule(room, state, now)
        return out

    # -- internals -----------------------------------------------------------------------------------
    def _put(self, room: str, state: RoomState[C], conn_id: str, user: str | None, now: float) -> None:
        if conn_id in state.conns:
            if state.conns[conn_id] == user:
                if conn_id in state.waiting:
                    self._want_flush(room, state, now)
                return
            self._remove(room, state, conn_id, now)  # rewritten with another user (not expected)
        state.conns[conn_id] = user
        if conn_id in state.waiting:
            self._want_flush(room, state, now)
        if user is None:
            return
        count = state.counts.get(user, 0) + 1
        state.counts[user] = count
        if count > 1:
            return
        if state.leaving.pop(user, None) is not None:
            return  # back within the debounce window: nothing to tell
        if user in state.visible:
            return
        state.visible.add(user)
        if user in state.left:
            state.left.discard(user)  # its leave was never sent: the two cancel out
        else:
            state.joined.add(user)
        self._want_flush(room, state, now)

    def _remove(self, room: str, state: RoomState[C], conn_id: str, now: float) -> None:
        if conn_id not in state.conns:
            return
        user = state.conns.pop(conn_id)
        if user is None:
            return
        count = state.counts[user] - 1
        if count:
            state.counts[user] = count
            return
        del state.counts[user]
        if user in state.visible:
            deadline = now + self.debounce
            state.leaving[user] = deadline  # deadlines only grow, so the dict stays in deadline order
            self._wake(room, state, max(deadline, state.last_flush + self.batch))

    def _expire_leaves(self, room: str, state: RoomState[C], now: float) -> None:
        leaving = state.leaving
        expired = False
        while leaving:
            user, deadline = next(iter(leaving.items()))
            if deadline > now:
                break
            del leaving[user]
            expired = True
            state.visible.discard(user)
            if user in state.joined:
                state.joined.discard(user)  # its join was never sent
            else:
                state.left.add(user)
        if expired and (state.joined or state.left):
            self._want_flush(room, state, now)

    def _flush(self, room: str, state: RoomState[C], now: float, out: list[Output[C]]) -> None:
        state.flush_at = None
        state.last_flush = now
        if (state.joined or state.left) and state.ready:
            out.append(
                Diff(
                    room, tuple(sorted(state.joined)), tuple(sorted(state.left)), tuple(state.ready.values())
                )
            )
        state.joined.clear()
        state.left.clear()
        arrived = [
            conn_id
            for conn_id, (_, deadline) in state.waiting.items()
            if conn_id in state.conns or deadline <= now
        ]
        if arrived:
            targets = []
            for conn_id in arrived:
                handle, _ = state.waiting.pop(conn_id)
                state.ready[conn_id] = handle
                targets.append(handle)
            out.append(Snapshot(room, tuple(sorted(state.visible)), tuple(targets)))

    def _want_flush(self, room: str, state: RoomState[C], now: float) -> None:
        """Flush soon: now if the room has been quiet for ``batch`` seconds, else when it has."""
        at = max(now, state.last_flush + self.batch)
        if state.flush_at is None or at < state.flush_at:
            state.flush_at = at
        self._wake(room, state, state.flush_at)

    def _reschedule(self, room: str, state: RoomState[C], now: float) -> None:
        """Queue the room's next wake-up. While a watch reloads nothing is due: its catch-up calls this."""
        if not state.loaded or state.loading is not None:
            return
        times = []
        if state.flush_at is not None:
            times.append(state.flush_at)
        if state.leaving:
            # A leave is only sent when the room may flush, and one cancelled before then was never
            # shown: looking at leaves no more often than the room flushes changes nothing clients see.
            times.append(max(next(iter(state.leaving.values())), state.last_flush + self.batch))
        times.extend(
            deadline
            for conn_id, (_, deadline) in state.waiting.items()
            if deadline > now and conn_id not in state.conns
        )
        if times:
            self._wake(room, state, min(times))

    def _wake(self, room: str, state: RoomState[C], at: float) -> None:
        if state.wake_at is None or at < state.wake_at:
            state.wake_at = at
            heapq.heappush(self._wakeups, (at, room))
