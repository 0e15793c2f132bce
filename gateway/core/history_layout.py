"""Which rooms and users are recoverable, and the history streams that store them, as plain data.

``PRISM_RECOVER_ROOMS`` / ``PRISM_RECOVER_USERS`` list exact names, or ``*`` for all. A stream captures
NATS subjects, and NATS wildcards match whole tokens only, while a room name is one token: a pattern
like ``chat-*`` could only be stored by capturing every ``room.*`` subject, which would change the
delivery contract (a JetStream ack instead of "no responders", an extra reply among the receipts) of
rooms that are not meant to be recoverable. So there are no partial patterns.

Each scope has its own stream (``<PRISM_RECOVER_STREAM>_ROOMS`` and ``_USERS``), so the two have
separate leaders and separate limits can follow later; :mod:`gateway.io.history` creates them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.core.hub import Scope
from shared.errors import InvalidName
from shared.subjects import Subjects, validate_token

ALL = "*"
# Every node stores an empty message on ``recovery-anchor.rooms`` (``.users``) in each periodic check, and
# reads it together with the last message of each of its channels: the answer then always holds at least
# one message, so it always says how far the stream it came from had got (``Nats-UpTo-Sequence``), also
# when none of the channels has a stored message. (Not under ``recovery.``: the republish writes there.)
ANCHOR_TOKEN = "recovery-anchor"
STREAM_SUFFIX = {Scope.ROOM: "_ROOMS", Scope.USER: "_USERS"}
_WHAT = {Scope.ROOM: "room name", Scope.USER: "user id"}


def entry_error(scope: Scope, entry: str) -> str | None:
    """Why ``entry`` cannot be a recoverable room (user) entry, or None if it can."""
    if entry == ALL:
        return None
    what = _WHAT[scope]
    try:
        validate_token(what, entry)
    except InvalidName as exc:
        option = "recover_rooms" if scope is Scope.ROOM else "recover_users"
        return (
            f"{option} entry {entry!r} is neither a {what} nor '*': history streams store NATS "
            f"subjects, whose wildcards match whole names only ({exc})"
        )
    return None


def stream_name_error(name: str) -> str | None:
    if not name or len(name) > 200 or not all(c.isalnum() or c in "_-" for c in name):
        return f"recover_stream must be letters, digits, '_' and '-' (a JetStream stream name), got {name!r}"
    return None


class Recoverable:
    """Which rooms and users have history, from the two lists of names (or ``*``)."""

    def __init__(self, rooms: Iterable[str], users: Iterable[str]) -> None:
        self.entries = {Scope.ROOM: frozenset(rooms), Scope.USER: frozenset(users)}

    def __bool__(self) -> bool:
        return any(self.entries.values())

    def scopes(self) -> list[Scope]:
        return [scope for scope, entries in self.entries.items() if entries]

    def matches(self, scope: Scope, name: str) -> bool:
        entries = self.entries[scope]
        return ALL in entries or name in entries


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One history stream: what it captures and how much it keeps."""

    scope: Scope
    name: str
    subjects: tuple[str, ...]  # the channels' subjects, then the anchor
    anchor: str
    republish: tuple[str, str]  # (source, destination)
    max_msgs_per_subject: int
    max_age: float
    max_bytes: int
    replicas: int
    storage: str  # "file" or "memory"


def stream_specs(
    recoverable: Recoverable,
    subjects: Subjects,
    base_name: str,
    *,
    history: int,
    ttl: float,
    max_bytes: int,
    replicas: int,
    storage: str,
) -> dict[Scope, StreamSpec]:
    """The stream of each scope that has recoverable names."""
    specs: dict[Scope, StreamSpec] = {}
    for scope in recoverable.scopes():
        entries = recoverable.entries[scope]
        kind = "room" if scope is Scope.ROOM else "user"
        names = ["*"] if ALL in entries else sorted(entries)
        anchor = f"{subjects.prefix}{ANCHOR_TOKEN}.{kind}s"
        captured = (*(f"{subjects.prefix}{kind}.{name}" for name in names), anchor)
        specs[scope] = StreamSpec(
            scope=scope,
            name=base_name + STREAM_SUFFIX[scope],
            subjects=captured,
            anchor=anchor,
            republish=subjects.recovery_republish,
            max_msgs_per_subject=history,
            max_age=ttl,
            max_bytes=max_bytes,
            replicas=replicas,
            storage=storage,
        )
    return specs
