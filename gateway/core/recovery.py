"""Missed-message recovery, with no I/O: positions, whether history covers a gap, and the per-channel
state machine that merges a history read with live deliveries so that each message reaches a client
once, in order.

Vocabulary (docs/protocol.md, "Recovery"):

- A *channel* is a recoverable room or user. Its messages are stored in a JetStream stream, and each one
  gets the stream's sequence number. The node receives them live, in order, from the stream's
  republish (``recovery.room.<r>`` / ``recovery.user.<u>``), each with ``prev``: the sequence of the
  channel's previous message (the header ``Nats-Last-Sequence``).
- A *position* is ``(epoch, seq)``: the stream's epoch (it changes only if the stream is recreated, which
  restarts sequences) and a sequence number. A client at position ``seq`` has every message of the
  channel whose sequence is ``<= seq``. A position need not be the sequence of one of the channel's own
  messages: the node may advance it past sequences of other channels (a ``mark``).
- A member's *cursor* is the position its connection has reached: every message of the channel up to
  the cursor has been queued to it. A member is *catching up* while a history read is under way for it:
  live messages are held in its buffer meanwhile, and merged once the read is in.

The rules that make it exact:

- Live messages: ``seq <= cursor`` is a duplicate (already sent from a history read) and is dropped;
  ``prev > cursor`` means a message in between never arrived (a republish lost while NATS reconnected,
  say): the member catches up from its cursor before anything later is sent; otherwise it is sent.
- History covers a gap after ``after`` (:func:`history_covers`) when nothing after ``after`` can have been
  removed. The stream removes oldest messages first: globally (age, bytes) its first sequence moves up,
  and per channel (the per-subject count limit) only when the channel holds ``limit`` newer messages. So
  it covers the gap iff ``first_seq <= after + 1`` and the read found fewer than ``limit`` messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from shared.frames import Position  # defined with the frames: the client SDK uses it too

C = TypeVar("C")

EPOCH_RE = re.compile(r"[A-Za-z0-9]{1,32}")
MAX_SEQ = 2**53 - 1  # a position travels through JSON: keep it a safe integer in every client
# How many times a catch-up reads the history again for a message that a live one said exists (a replica
# that had not applied it yet) before it reports the gap instead.
MAX_REFETCHES = 3


def position_error(epoch: object, seq: object) -> str | None:
    """Why ``epoch`` / ``seq`` (from a client frame or query) are not a position, or None if they are."""
    if not isinstance(epoch, str) or not EPOCH_RE.fullmatch(epoch):
        return "epoch must be the string the node sent (1-32 letters and digits)"
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        return "seq must be an integer from 0 to 2**53-1"
    return None


def epoch_of(created_micros: int) -> str:
    """The epoch of a stream created at ``created_micros`` (microseconds since 1970), in base 36: every
    node derives the same one from the stream's creation time, and a recreated stream gets another."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    value = max(0, created_micros)
    out = ""
    while True:
        value, rest = divmod(value, 36)
        out = digits[rest] + out
        if value == 0:
            return out


@dataclass(frozen=True, slots=True)
class StreamState:
    """What the stream said about itself: its epoch, its first and last sequence."""

    epoch: str
    first_seq: int
    last_seq: int


def history_covers(after: int, state: StreamState, found: int, limit: int) -> bool:
    """Whether every message of a channel after sequence ``after`` is still in the stream, given a read
    that found ``found`` of them and the stream's ``state`` taken *after* that read (see the module
    docstring). ``limit`` is the per-channel message limit; finding that many may mean the count limit
    dropped older ones, so it counts as not covered."""
    return state.first_seq <= after + 1 and found < limit


@dataclass(frozen=True, slots=True)
class Stored:
    """One message of a channel with its stream sequence. ``prev`` is the channel's previous sequence
    (known for live messages, None for messages from a history read, which are contiguous anyway)."""

    seq: int
    prev: int | None
    payload: bytes
    binary: bool


@dataclass(slots=True)
class Member(Generic[C]):
    handle: C
    cursor: int
    buffer: list[Stored] | None = field(default_factory=list)  # None once live
    refetches: int = 0  # history reads in a row that did not bring the message a live one announced
    generation: int = 0  # bumped by reset(): a catch-up started before belongs to the old epoch

    @property
    def live(self) -> bool:
        return self.buffer is None


@dataclass(frozen=True, slots=True)
class Drained:
    """The result of merging a member's buffer after a history read.

    ``sends``: messages to queue, in order. ``fetch_after``: read the history again after this
    sequence (a live message announced one that neither the read nor the buffer had); None when the
    member is live now. ``gap``: ``(index, cursor)`` when a message that the history does not have
    either is missing before ``sends[index]``: tell the member that what follows ``cursor`` is not
    complete, then go on."""

    sends: list[Stored]
    fetch_after: int | None
    gap: tuple[int, int] | None = None


class Channel(Generic[C]):
    """The recovering members of one room or user on this node, keyed by conn id."""

    def __init__(self, buffer_limit: int) -> None:
        self.buffer_limit = buffer_limit  # live messages held for one catching-up member at most
        self.members: dict[str, Member[C]] = {}

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, conn_id: object) -> bool:
        return conn_id in self.members

    def begin(self, conn_id: str, handle: C, after: int) -> None:
        """A member starts catching up from ``after``: live messages are held until :meth:`drain`."""
        self.members[conn_id] = Member(handle, after)

    def remove(self, conn_id: str) -> Member[C] | None:
        return self.members.pop(conn_id, None)

    def live(self, message: Stored) -> tuple[list[C], list[str], list[str]]:
        """A live message: ``(targets, gaps, overflowing)``.

        ``targets`` get it now. ``gaps``: live members that missed a message before it; each is now
        catching up (from its cursor, the message held) and needs a history read. ``overflowing``:
        catching-up members whose buffer is over ``buffer_limit`` (close them as slow consumers)."""
        targets: list[C] = []
        gaps: list[str] = []
        overflowing: list[str] = []
        seq = message.seq
        prev = message.prev
        for conn_id, member in self.members.items():
            buffer = member.buffer
            if buffer is not None:
                buffer.append(message)
                if len(buffer) > self.buffer_limit:
                    overflowing.append(conn_id)
            elif seq <= member.cursor:
                continue  # already sent, from a history read
            elif prev is not None and prev > member.cursor:
                member.buffer = [message]
                gaps.append(conn_id)
            else:
                member.cursor = seq
                targets.append(member.handle)
        return targets, gaps, overflowing

    def fetched(self, conn_id: str, messages: Sequence[Stored]) -> list[Stored]:
        """The messages of a history read (contiguous, in order) that ``conn_id`` still needs; its cursor
        moves past them. The member keeps catching up until :meth:`drain`."""
        member = self.members.get(conn_id)
        if member is None:
            return []
        fresh = [m for m in messages if m.seq > member.cursor]
        if fresh:
            member.cursor = fresh[-1].seq
        return fresh

    def drain(self, conn_id: str) -> Drained:
        """Merge the member's held live messages after a history read (see :class:`Drained`)."""
        member = self.members.get(conn_id)
        if member is None or member.buffer is None:
            return Drained([], None)
        buffer = member.buffer
        sends: list[Stored] = []
        gap: tuple[int, int] | None = None
        for index, message in enumerate(buffer):
            if message.seq <= member.cursor:
                continue
            if message.prev is not None and message.prev > member.cursor:
                if member.refetches < MAX_REFETCHES:
                    member.refetches += 1
                    member.buffer = buffer[index:]
                    return Drained(sends, member.cursor, gap)
                gap = (len(sends), member.cursor)  # the history does not have it: say so, go on after it
            member.refetches = 0
            member.cursor = message.seq
            sends.append(message)
        member.buffer = None
        member.refetches = 0
        return Drained(sends, None, gap)

    def mark(self, last: int, upto: int) -> tuple[list[C], list[str]]:
        """A consistent look at the stream up to ``upto`` found the channel's last message at ``last``
        (0: none). Live members that have it move to ``upto`` (returned first: send them a mark); live
        members behind ``last`` missed it (returned second: catch them up, if they are still behind
        once live messages in flight had time to arrive)."""
        advanced: list[C] = []
        behind: list[str] = []
        for conn_id, member in self.members.items():
            if not member.live:
                continue
            if last > member.cursor:
                behind.append(conn_id)
            elif upto > member.cursor:
                member.cursor = upto
                advanced.append(member.handle)
        return advanced, behind

    def restart(self, conn_id: str) -> bool:
        """Catch a live member up from its cursor (it is behind the history); False if it is not live."""
        member = self.members.get(conn_id)
        if member is None or not member.live:
            return False
        member.buffer = []
        return True

    def reset(self, after: int) -> list[str]:
        """The stream was recreated: every member starts catching up again from ``after`` in the new
        epoch, holding what arrives meanwhile. Returns their conn ids."""
        for member in self.members.values():
            member.cursor = after
            member.buffer = []
            member.refetches = 0
            member.generation += 1
        return list(self.members)

    def cursors(self, conn_ids: Iterable[str]) -> dict[int, list[str]]:
        """The given members grouped by cursor: members at the same cursor share one history read."""
        groups: dict[int, list[str]] = {}
        for conn_id in conn_ids:
            member = self.members.get(conn_id)
            if member is not None:
                groups.setdefault(member.cursor, []).append(conn_id)
        return groups


# -- the user stream's opt-in, from the WebSocket URL's query ---------------------------------------------
USER_SCOPE_WORD = "user"


def user_recovery(query: dict[str, list[str]]) -> tuple[bool, Position | None]:
    """``?recover=user`` (with ``&user_epoch=<e>&user_seq=<n>`` to resume): whether the connection wants
    positions for its user's messages, and where it resumes. Raises ``ValueError`` saying what is wrong."""
    recover = query.get("recover")
    epoch = query.get("user_epoch")
    seq = query.get("user_seq")
    if recover is None:
        if epoch is not None or seq is not None:
            raise ValueError("user_epoch and user_seq need recover=user")
        return False, None
    if len(recover) > 1 or recover[0] != USER_SCOPE_WORD:
        raise ValueError(f"recover must be {USER_SCOPE_WORD!r}")
    if epoch is None and seq is None:
        return True, None
    if epoch is None or seq is None or len(epoch) > 1 or len(seq) > 1:
        raise ValueError("give user_epoch and user_seq together, once each")
    number: object = int(seq[0]) if seq[0].isdigit() and len(seq[0]) <= 16 else seq[0]
    if (problem := position_error(epoch[0], number)) is not None:
        raise ValueError(problem)
    assert isinstance(number, int)
    return True, Position(epoch[0], number)
