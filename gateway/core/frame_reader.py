"""Client-to-node WebSocket frames, parsed without I/O: bytes in, messages and control frames out.

The node's connection layer (:mod:`gateway.io.websocket`) feeds :meth:`FrameReader.receive` what its
socket read and carries out what comes back: a message goes to the session, a :class:`Ping` is answered,
a :class:`Close` is echoed, a :class:`Failure` closes the connection with its code. The reader decides
nothing about writing.

It applies the rules of websockets' sans-I/O ``Protocol`` and of its asyncio layer's message assembly,
check for check and in the same order, so a client sees the same close codes as from websockets
(``tests/unit/test_frame_reader.py`` feeds both the same bytes, split anywhere):

- a frame header with a reserved opcode, or without the mask bit: 1002;
- a frame longer than what is left of ``max_size`` for its message (checked on the header, before the
  payload is waited for): 1009;
- reserved bits set (RSV1 is permessage-deflate's, when negotiated), a control frame over 125 bytes or
  fragmented, a continuation of nothing, a new message inside a fragmented one, a malformed close frame
  or one inside a fragmented message: 1002;
- a text message that is not UTF-8 (decoded once whole), or a close reason that is not: 1007;
- a message in more than :data:`MAX_FRAGMENTS` frames: 1009.

Why Prism parses frames itself rather than through websockets' ``Protocol``: the protocol keeps its
parser in a generator that holds the protocol, a reference cycle that only the garbage collector can free
and that no documented method breaks, and it costs about 2.7 KB per idle connection (the generators of
four nested parsers and a stream buffer). This reader is a slotted object without cycles: about 200 bytes.
websockets still parses and answers the opening handshake, and still compresses and decompresses
permessage-deflate through its documented ``Extension`` interface.
"""

from __future__ import annotations

from dataclasses import dataclass

from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.extensions import Extension
from websockets.frames import Frame, Opcode

# Frames one message may span; the next continuation closes the connection with 1009 (websockets' limit).
MAX_FRAGMENTS = 4096

_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_VALID_OPCODES = frozenset((_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG))
_RSV1, _RSV2, _RSV3 = 0x40, 0x20, 0x10

# Close codes a peer may send (RFC 6455 section 7.4, the IANA registry), besides 3000-4999.
_EXTERNAL_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))
NO_STATUS = 1005  # the code of a close frame that carries none


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The client's close frame: its code (:data:`NO_STATUS` if empty), reason, and payload (to echo)."""

    code: int
    reason: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Failure:
    """The client broke the protocol: close with ``code``. Nothing the client sends after it is read."""

    code: int
    reason: str


# A complete message (str for text, bytes for binary) or a control event, in the order they arrived.
Event = str | bytes | Ping | Pong | Close | Failure


def unmask(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """``data`` XOR the repeated 4-byte ``mask`` (RFC 6455 section 5.3), as one big-integer XOR."""
    size = len(data)
    if not size:
        return b""
    key = (bytes(mask) * ((size >> 2) + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def too_big(size: int | None, limit: int, current: int | None) -> str:
    """The reason of a 1009 for a frame of ``size`` bytes after ``current`` bytes of its message."""
    reason = "frame "
    if size is not None:
        reason += f"with {size} bytes "
    if current is not None:
        reason += f"after reading {current} bytes "
    return reason + f"exceeds limit of {limit} bytes"


class FrameReader:
    """One connection's inbound frames. ``max_size``: the largest message (all its fragments together),
    None for no limit; ``extension``: the negotiated permessage-deflate, if any."""

    __slots__ = ("_buffer", "_extension", "_max_size", "_parts", "_size", "_stopped", "_text")

    def __init__(self, max_size: int | None, extension: Extension | None = None) -> None:
        self._max_size = max_size
        self._extension = extension
        self._buffer: bytearray | None = None  # the start of a frame that has not fully arrived
        self._parts: list[bytes] | None = None  # the frames of a fragmented message so far
        self._text = False  # whether that message is text
        self._size = 0  # its size so far
        self._stopped = False  # after a close frame or a failure: the rest is not read

    @property
    def stopped(self) -> bool:
        return self._stopped

    def receive(self, data: bytes) -> list[Event]:
        """The events in ``data`` (with what earlier calls left unfinished), in order. After a
        :class:`Close` or :class:`Failure` nothing more is parsed, now or later."""
        if self._stopped:
            return []
        buffer = self._buffer
        view: bytes | bytearray
        if buffer is None:
            view = data
        else:
            buffer += data
            view = buffer
        events: list[Event] = []
        end = len(view)
        pos = 0
        while end - pos >= 2 and not self._stopped:
            head1 = view[pos]
            head2 = view[pos + 1]
            opcode = head1 & 0x0F
            if opcode not in _VALID_OPCODES:
                return self._fail(events, 1002, "invalid opcode")
            if not head2 & 0x80:
                return self._fail(events, 1002, "incorrect masking")
            length = head2 & 0x7F
            offset = pos + 2
            if length == 126:
                if end - offset < 2:
                    break
                length = int.from_bytes(view[offset : offset + 2], "big")
                offset += 2
            elif length == 127:
                if end - offset < 8:
                    break
                length = int.from_bytes(view[offset : offset + 8], "big")
                offset += 8
            limit = self._limit()
            if limit is not None and length > limit:
                current = self._size if self._parts is not None else None
                return self._fail(events, 1009, too_big(length, self._max_size or 0, current))
            if end - offset < 4 + length:
                break
            payload = unmask(view[offset + 4 : offset + 4 + length], view[offset : offset + 4])
            pos = offset + 4 + length
            self._frame(events, opcode, head1, payload, limit)
        if self._stopped or pos == end:
            self._buffer = None
        elif buffer is None:
            self._buffer = bytearray(view[pos:])
        else:
            del buffer[:pos]
        return events

    def _limit(self) -> int | None:
        """How large the next frame may be: what is left of ``max_size`` for the message it belongs to."""
        if self._max_size is None:
            return None
        return self._max_size - self._size if self._parts is not None else self._max_size

    def _frame(self, events: list[Event], opcode: int, head1: int, payload: bytes, limit: int | None) -> None:
        fin = bool(head1 & 0x80)
        rsv = head1 & 0x70
        extension = self._extension
        if extension is not None and opcode <= _BINARY:
            rsv1, rsv2, rsv3 = bool(rsv & _RSV1), bool(rsv & _RSV2), bool(rsv & _RSV3)
            frame = Frame(Opcode(opcode), payload, fin, rsv1, rsv2, rsv3)
            try:
                frame = extension.decode(frame, max_size=limit)
            except PayloadTooBig:
                current = self._size if self._parts is not None else None
                self._fail(events, 1009, too_big(None, self._max_size or 0, current))
                return
            except ProtocolError as exc:
                self._fail(events, 1002, str(exc))
                return
            payload = bytes(frame.data)
            rsv = (_RSV1 if frame.rsv1 else 0) | (_RSV2 if frame.rsv2 else 0) | (_RSV3 if frame.rsv3 else 0)
        if rsv:
            self._fail(events, 1002, "reserved bits must be 0")
            return
        if opcode >= _CLOSE:
            if len(payload) > 125:
                self._fail(events, 1002, "control frame too long")
            elif not fin:
                self._fail(events, 1002, "fragmented control frame")
            elif opcode == _PING:
                events.append(Ping(payload))
            elif opcode == _PONG:
                events.append(Pong(payload))
            else:
                self._close(events, payload)
            return
        parts = self._parts
        if opcode != _CONT:
            if parts is not None:
                self._fail(events, 1002, "expected a continuation frame")
            elif fin:
                self._message(events, opcode == _TEXT, payload)
            else:
                self._parts = [payload]
                self._text = opcode == _TEXT
                self._size = len(payload)
            return
        if parts is None:
            self._fail(events, 1002, "unexpected continuation frame")
            return
        if len(parts) >= MAX_FRAGMENTS:
            self._fail(events, 1009, "too many fragments")
            return
        parts.append(payload)
        self._size += len(payload)
        if fin:
            self._parts = None
            self._size = 0
            self._message(events, self._text, b"".join(parts))

    def _message(self, events: list[Event], text: bool, payload: bytes) -> None:
        if not text:
            events.append(payload)
            return
        try:
            events.append(payload.decode())
        except UnicodeDecodeError as exc:
            self._fail(events, 1007, f"{exc.reason} at position {exc.start}")

    def _close(self, events: list[Event], payload: bytes) -> None:
        if len(payload) == 1:
            self._fail(events, 1002, "close frame too short")
            return
        code, reason = NO_STATUS, ""
        if payload:
            code = int.from_bytes(payload[:2], "big")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError as exc:
                self._fail(events, 1007, f"{exc.reason} at position {exc.start}")
                return
            if not (code in _EXTERNAL_CLOSE_CODES or 3000 <= code < 5000):
                self._fail(events, 1002, "invalid status code")
                return
        if self._parts is not None:
            self._fail(events, 1002, "incomplete fragmented message")
            return
        events.append(Close(code, reason, payload))
        self._stopped = True

    def _fail(self, events: list[Event], code: int, reason: str) -> list[Event]:
        events.append(Failure(code, reason))
        self._stopped = True
        self._buffer = None
        self._parts = None
        return events
