"""Client-facing frame formats: what the gateway says to clients, and the commands clients send.

Gateway frames are JSON objects whose first key is ``"prism"`` (the frame kind), so clients tell them
from backend payloads by the prefix ``{"prism":``. Backends must not send payloads that start that way.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

PRISM_PREFIX = b'{"prism":'
Ref = int | str | None


@dataclass(frozen=True, slots=True)
class Position:
    """A point in a recoverable room's or user's history: the history stream's ``epoch`` (it changes
    only if the stream is recreated) and a sequence number (docs/protocol.md, "Recovery")."""

    epoch: str
    seq: int


class Kind(StrEnum):
    # gateway -> client
    WELCOME = "welcome"
    OK = "ok"
    ERROR = "error"
    REPLY = "reply"
    PRESENCE = "presence"
    RECOVERY = "recovery"  # a recoverable room/user's epoch and position, and whether recovery was complete
    POS = "pos"  # the next frame is the message at this position
    MARK = "mark"  # nothing for this room/user up to this position
    # client -> gateway
    JOIN = "join"
    LEAVE = "leave"
    REFRESH = "refresh"


class ErrorCode(StrEnum):
    """The ``code`` of an error frame: a stable slug a client can switch on."""

    INVALID_JSON = "invalid_json"
    INVALID_FRAME = "invalid_frame"
    UNKNOWN_COMMAND = "unknown_command"
    INVALID_ROOM = "invalid_room"
    INVALID_EVENT = "invalid_event"
    INVALID_REF = "invalid_ref"
    TOO_MANY_ROOMS = "too_many_rooms"
    TOO_MANY_REQUESTS = "too_many_requests"
    TIMEOUT = "timeout"
    NO_RESPONDERS = "no_responders"
    BACKEND_UNAVAILABLE = "backend_unavailable"
    BACKEND_ERROR = "backend_error"  # an HTTP backend answered the event or request with an error status
    FORBIDDEN = "forbidden"  # the token (or the authorization callout) does not allow it
    INVALID_TOKEN = "invalid_token"  # a refresh token was refused; the current one stays in force
    RATE_LIMITED = "rate_limited"  # over the connection's message rate: this message was dropped
    INVALID_POSITION = "invalid_position"  # a join's recover, epoch or seq is malformed
    UNAVAILABLE = "unavailable"  # the node cannot do it now (its presence registry is unreachable)


def welcome(conn: str, node: str, user: str | None, route: str) -> bytes:
    return orjson.dumps({"prism": "welcome", "conn": conn, "node": node, "user": user, "route": route})


def ok(ref: Ref) -> bytes:
    return orjson.dumps({"prism": "ok", "ref": ref})


def error(ref: Ref, code: ErrorCode, message: str) -> bytes:
    return orjson.dumps({"prism": "error", "ref": ref, "code": code.value, "message": message})


def reply(ref: Ref, payload: bytes) -> bytes:
    """A backend's reply to a client request. JSON payloads are embedded as ``data``; valid UTF-8 that
    is not JSON (or JSON nested too deeply to re-encode) becomes a JSON string; other bytes are base64
    with ``"encoding":"base64"``."""
    frame: dict[str, Any] = {"prism": "reply", "ref": ref}
    try:
        frame["data"] = orjson.loads(payload) if payload else None
        return orjson.dumps(frame)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # encoding stops at 254 levels of nesting
        pass
    try:
        frame["data"] = payload.decode()
    except UnicodeDecodeError:
        frame["data"] = base64.b64encode(payload).decode()
        frame["encoding"] = "base64"
    return orjson.dumps(frame)


# At most this many user ids go in one presence frame; a bigger snapshot or batch is split over several.
PRESENCE_NAMES_PER_FRAME = 1000


def presence_snapshot(
    room: str, members: Sequence[str], limit: int = PRESENCE_NAMES_PER_FRAME
) -> list[bytes]:
    """A room's members for a connection that just joined: ``{"prism":"presence","room":..,"members":[..]}``.

    Past ``limit`` names, the first frame holds the first ``limit`` members and the rest follow as
    ``"joined"`` frames, so a client that replaces its list on ``members`` and adds on ``joined`` ends
    up with all of them."""
    head = list(members[:limit])
    frames = [orjson.dumps({"prism": "presence", "room": room, "members": head})]
    for start in range(limit, len(members), limit):
        chunk = list(members[start : start + limit])
        frames.append(orjson.dumps({"prism": "presence", "room": room, "joined": chunk}))
    return frames


def presence_diff(
    room: str, joined: Sequence[str], left: Sequence[str], limit: int = PRESENCE_NAMES_PER_FRAME
) -> list[bytes]:
    """Users who joined and left a room: ``{"prism":"presence","room":..,"joined":[..],"left":[..]}``,
    each key only when non-empty, split so that no frame holds more than ``limit`` names."""
    names = [("joined", user) for user in joined] + [("left", user) for user in left]
    frames: list[bytes] = []
    for start in range(0, len(names), limit):
        frame: dict[str, Any] = {"prism": "presence", "room": room}
        for kind, user in names[start : start + limit]:
            frame.setdefault(kind, []).append(user)
        frames.append(orjson.dumps(frame))
    return frames


# Recovery (docs/protocol.md, "Recovery"). ``key`` is "room" or "user", ``name`` the room or user id.
def recovery(key: str, name: str, *, epoch: str, seq: int, recovering: bool, recovered: bool) -> bytes:
    """Positions for ``name`` follow from ``seq`` in ``epoch``. ``recovering``: the client gave a position;
    ``recovered``: and nothing after it is missing (false: messages after ``seq`` may be lost)."""
    return orjson.dumps(
        {
            "prism": "recovery",
            key: name,
            "recoverable": True,
            "epoch": epoch,
            "seq": seq,
            "recovering": recovering,
            "recovered": recovered,
        }
    )


def not_recoverable(key: str, name: str) -> bytes:
    """The room or user has no history: its messages arrive as plain deliveries, without positions."""
    return orjson.dumps({"prism": "recovery", key: name, "recoverable": False})


def pos(key: str, name: str, seq: int) -> bytes:
    """Precedes a delivery: the next frame is the message of ``name`` at ``seq``. (``name`` is a
    validated id, so no escaping is needed; this is built once per message and node.)"""
    return b'{"prism":"pos","%s":"%s","seq":%d}' % (key.encode(), name.encode(), seq)


def mark(key: str, name: str, seq: int) -> bytes:
    """No message of ``name`` up to ``seq``: the client's position moves there."""
    return b'{"prism":"mark","%s":"%s","seq":%d}' % (key.encode(), name.encode(), seq)


# Client-side builders (used by the SDKs and tests).
def join(
    room: str, ref: Ref = None, *, recover: bool = False, epoch: str | None = None, seq: int | None = None
) -> bytes:
    """A join; with ``recover`` the room's deliveries come with positions, and with ``epoch`` and
    ``seq`` (the last position received) the node first sends what was missed."""
    frame: dict[str, Any] = {"prism": "join", "room": room, "ref": ref}
    if recover:
        frame["recover"] = True
        if epoch is not None and seq is not None:
            frame["epoch"] = epoch
            frame["seq"] = seq
    return orjson.dumps(frame)


def leave(room: str, ref: Ref = None) -> bytes:
    return orjson.dumps({"prism": "leave", "room": room, "ref": ref})


def refresh(token: str, ref: Ref = None) -> bytes:
    """Replace the connection's token (auth on) before it expires: answered ``ok`` or ``invalid_token``."""
    return orjson.dumps({"prism": "refresh", "token": token, "ref": ref})


def event(name: str, data: Any = None, ref: Ref = None) -> bytes:
    frame: dict[str, Any] = {"event": name, "data": data}
    if ref is not None:
        frame["ref"] = ref
    return orjson.dumps(frame)


def is_prism_frame(data: bytes | str) -> bool:
    if isinstance(data, str):
        return data.startswith('{"prism":')
    return data.startswith(PRISM_PREFIX)
