"""Classify one client frame into the command it is: join, leave, event, raw message, or an error.

The gateway never guesses: a frame that starts like a Prism command but is not one gets an error frame
naming what was wrong; anything that is not a command or an event is a raw message for the backends.
Commands and events may nest at most ``max_depth`` levels deep (the frame object itself is level 1);
raw messages are forwarded as they are, however deep.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from gateway.core.limits import nesting_exceeds
from gateway.core.recovery import position_error
from shared.errors import FrameError, InvalidName
from shared.frames import ErrorCode, Position, Ref
from shared.subjects import validate_event, validate_room

MAX_REF_LENGTH = 64
_MAX_SAFE_INT = 2**53
DEFAULT_MAX_JSON_DEPTH = 32
_COMMAND_PREFIXES = ('{"prism"', '{"event"')


@dataclass(frozen=True, slots=True)
class Join:
    """``recover``: deliveries of the room come with positions (docs/protocol.md, "Recovery");
    ``position``: where the client resumes (what it missed since is sent first)."""

    room: str
    ref: Ref
    recover: bool = False
    position: Position | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    room: str
    ref: Ref


@dataclass(frozen=True, slots=True)
class Event:
    """A client event. ``data`` is the JSON encoding of the frame's ``data`` (``null`` if absent)."""

    name: str
    data: bytes
    ref: Ref


@dataclass(frozen=True, slots=True)
class Raw:
    """Any other frame, forwarded to backends unchanged."""

    payload: bytes
    binary: bool


Command = Join | Leave | Event | Raw


def parse_client_frame(message: str | bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Command:
    """Return the command ``message`` carries, or raise :class:`FrameError` with the error-frame code."""
    if isinstance(message, bytes):
        return Raw(message, binary=True)
    stripped = message.lstrip()
    if not stripped.startswith("{"):
        return Raw(message.encode(), binary=False)
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        if stripped.startswith(_COMMAND_PREFIXES):
            if nesting_exceeds(message, max_depth):  # orjson stops at 1024 levels: say why
                raise FrameError(ErrorCode.INVALID_FRAME, _too_deep(max_depth)) from None
            raise FrameError(ErrorCode.INVALID_JSON, f"frame is not valid JSON: {exc}") from None
        return Raw(message.encode(), binary=False)
    if not isinstance(obj, dict):
        return Raw(message.encode(), binary=False)
    if "prism" in obj or "event" in obj:
        if nesting_exceeds(message, max_depth):
            raise FrameError(ErrorCode.INVALID_FRAME, _too_deep(max_depth), _ref_or_none(obj))
        if "prism" in obj:
            return _parse_command(obj)
        return _parse_event(obj)
    return Raw(message.encode(), binary=False)


def _too_deep(max_depth: int) -> str:
    return f"frame is nested more than {max_depth} levels deep"


def _ref_or_none(obj: dict[str, object]) -> Ref:
    try:
        return _parse_ref(obj)
    except FrameError:
        return None


def ref_of(message: str | bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Ref:
    """The valid ``ref`` of a command or event frame, else None; never raises. For answering a frame
    that is refused before it is parsed (over the rate limit) with the ref the client is waiting on."""
    if isinstance(message, bytes) or '"ref"' not in message or nesting_exceeds(message, max_depth):
        return None
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not ("prism" in obj or "event" in obj):
        return None
    return _ref_or_none(obj)


def _parse_ref(obj: dict[str, object]) -> Ref:
    ref = obj.get("ref")
    if ref is None:
        return None
    if isinstance(ref, bool) or not isinstance(ref, int | str):
        raise FrameError(ErrorCode.INVALID_REF, "ref must be an integer or a string")
    if isinstance(ref, int) and not -_MAX_SAFE_INT < ref < _MAX_SAFE_INT:
        raise FrameError(ErrorCode.INVALID_REF, "ref must be a safe integer (|ref| < 2**53)")
    if isinstance(ref, str) and len(ref) > MAX_REF_LENGTH:
        raise FrameError(ErrorCode.INVALID_REF, f"ref must be at most {MAX_REF_LENGTH} characters")
    return ref


def _parse_command(obj: dict[str, object]) -> Command:
    ref = _parse_ref(obj)
    kind = obj["prism"]
    if kind not in ("join", "leave"):
        shown = kind if isinstance(kind, str) else type(kind).__name__
        raise FrameError(
            ErrorCode.UNKNOWN_COMMAND, f"unknown command {shown!r:.60}; expected 'join' or 'leave'", ref
        )
    try:
        room = validate_room(obj.get("room"))
    except InvalidName as exc:
        raise FrameError(ErrorCode.INVALID_ROOM, str(exc), ref) from None
    if kind == "leave":
        return Leave(room, ref)
    return _parse_join(obj, room, ref)


def _parse_join(obj: dict[str, object], room: str, ref: Ref) -> Join:
    recover = obj.get("recover", False)
    has_epoch, has_seq = "epoch" in obj, "seq" in obj
    if not isinstance(recover, bool):
        raise FrameError(ErrorCode.INVALID_POSITION, "recover must be true or false", ref)
    if not (has_epoch or has_seq):
        return Join(room, ref, recover)
    if not recover:
        raise FrameError(ErrorCode.INVALID_POSITION, 'epoch and seq need "recover": true', ref)
    if has_epoch != has_seq:
        raise FrameError(ErrorCode.INVALID_POSITION, "epoch and seq go together", ref)
    epoch, seq = obj["epoch"], obj["seq"]
    if (problem := position_error(epoch, seq)) is not None:
        raise FrameError(ErrorCode.INVALID_POSITION, problem, ref)
    assert isinstance(epoch, str)
    assert isinstance(seq, int)
    return Join(room, ref, True, Position(epoch, seq))


def _parse_event(obj: dict[str, object]) -> Event:
    ref = _parse_ref(obj)
    try:
        name = validate_event(obj["event"])
    except InvalidName as exc:
        raise FrameError(ErrorCode.INVALID_EVENT, str(exc), ref) from None
    try:
        data = orjson.dumps(obj.get("data"))
    except orjson.JSONEncodeError:  # orjson encodes at most 254 levels of nesting (it parses 1024)
        raise FrameError(ErrorCode.INVALID_FRAME, "event data is nested too deeply", ref) from None
    return Event(name, data, ref)
