"""The NATS client protocol without I/O: bytes from the server in, events out; commands out as bytes.

The gateway's data plane (:mod:`gateway.io.nats_link`) owns its NATS connection, so it owns the protocol
too. This module is the whole of that protocol's logic, in the manner of websockets' sans-I/O
``protocol.py``: :class:`Parser` turns what the socket read into events, the encoders build what the
shell writes, and neither touches a socket, a loop or a clock, so both are tested (and fuzzed against
nats-py's own parser) without either.

Events, in the order the server sent them:

- a message (``MSG`` / ``HMSG``): a plain 5-tuple :data:`Msg` ``(sid, subject, reply, header, payload)``,
  ``reply`` ``""`` when there is none and ``header`` the raw header block (``None`` for ``MSG``); a
  tuple because the delivery path makes one per message and a tuple costs a tenth of an object;
- :data:`PING`, :data:`PONG`, :data:`OK`, :class:`Err` and :class:`Info` for the control lines.

Subjects passed to the encoders are the caller's to validate (``shared.subjects`` does, for every subject
Prism builds): a space or a line break in one would change the command.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

_CRLF: Final = b"\r\n"
# The longest control line before the stream counts as broken: nats-server's ``max_control_line``
# (4 KB by default) bounds what it sends, and nats-py's parser gives up at the same length.
MAX_CONTROL_LINE = 4096
HEADER_LINE = b"NATS/1.0"
_PLAIN_HEADER = HEADER_LINE + _CRLF  # a header block without an inline status
STATUS = "Status"  # the keys a status line gives, as nats-py names them (docs/protocol.md)
DESCRIPTION = "Description"

# (sid, subject, reply, header block or None, payload)
Msg = tuple[int, str, str, bytes | None, bytes]


class ProtocolViolation(Exception):
    """The server's bytes are not the NATS protocol: the connection cannot go on."""


@dataclass(frozen=True, slots=True)
class Control:
    """A control line without arguments (PING, PONG, +OK)."""

    op: str


PING: Final = Control("PING")
PONG: Final = Control("PONG")
OK: Final = Control("+OK")


@dataclass(frozen=True, slots=True)
class Err:
    """``-ERR '<message>'``: the message without its quotes, as the server wrote it."""

    message: str


@dataclass(frozen=True, slots=True)
class Info:
    """``INFO {...}``: the server's JSON object."""

    fields: dict[str, Any]


Event = Msg | Control | Err | Info


class Parser:
    """Bytes read from a NATS server in, :data:`Event` s out; a message split across reads is kept until
    its last byte arrives. :meth:`reset` forgets a partial one (a new connection)."""

    __slots__ = ("_held", "_held_size", "_needed", "max_control_line")

    def __init__(self, max_control_line: int = MAX_CONTROL_LINE) -> None:
        self.max_control_line = max_control_line
        self._held: list[bytes] = []  # the start of an operation that has not all arrived
        self._held_size = 0
        self._needed = 0  # how many bytes that operation needs in all (0: its control line is not complete)

    def reset(self) -> None:
        self._held = []
        self._held_size = 0
        self._needed = 0

    @property
    def pending(self) -> int:
        """Bytes held of an incomplete operation."""
        return self._held_size

    def receive(self, data: bytes) -> list[Event]:
        """The complete operations in what has arrived so far, oldest first. Raises
        :class:`ProtocolViolation` if the bytes are not NATS; the parser is then unusable until reset."""
        if self._held:
            if self._held_size + len(data) < self._needed:  # a large payload still arriving: no copy yet
                self._held.append(data)
                self._held_size += len(data)
                return []
            self._held.append(data)
            data = b"".join(self._held)
            self._held = []
            self._held_size = self._needed = 0
        events: list[Event] = []
        append = events.append
        find = data.find
        startswith = data.startswith
        end = len(data)
        pos = 0
        try:
            while pos < end:
                eol = find(_CRLF, pos)
                if eol < 0:
                    if end - pos > self.max_control_line:
                        raise ProtocolViolation(f"control line longer than {self.max_control_line} bytes")
                    break
                if startswith(b"MSG ", pos):
                    args = data[pos + 4 : eol].split()
                    start = eol + 2
                    if len(args) == 3:
                        stop = start + int(args[2])
                        if stop + 2 > end or stop < start:
                            if stop < start:
                                raise ValueError
                            break
                        append((int(args[1]), args[0].decode(), "", None, data[start:stop]))
                    elif len(args) == 4:
                        stop = start + int(args[3])
                        if stop + 2 > end or stop < start:
                            if stop < start:
                                raise ValueError
                            break
                        append((int(args[1]), args[0].decode(), args[2].decode(), None, data[start:stop]))
                    else:
                        raise ProtocolViolation(f"malformed MSG line {data[pos : min(eol, pos + 64)]!r}")
                elif startswith(b"HMSG ", pos):
                    args = data[pos + 5 : eol].split()
                    start = eol + 2
                    if len(args) == 4:
                        split = start + int(args[2])
                        stop = start + int(args[3])
                        reply = ""
                    elif len(args) == 5:
                        split = start + int(args[3])
                        stop = start + int(args[4])
                        reply = args[2].decode()
                    else:
                        raise ProtocolViolation(f"malformed HMSG line {data[pos : min(eol, pos + 64)]!r}")
                    if not start <= split <= stop:
                        raise ProtocolViolation(f"HMSG sizes do not fit at {data[pos:eol]!r}")
                    if stop + 2 > end:
                        break
                    append((int(args[1]), args[0].decode(), reply, data[start:split], data[split:stop]))
                else:
                    append(_control(data[pos:eol]))
                    stop = eol
                pos = stop + 2
        except ValueError:  # int() of a token that is not a number; UnicodeDecodeError is one too
            raise ProtocolViolation(f"malformed message line {data[pos : pos + 64]!r}") from None
        if pos < end:
            # An operation not all here yet: keep it, and (once its size is known) wait for all of it.
            rest = data[pos:] if pos else data
            self._held = [rest]
            self._held_size = len(rest)
            eol = rest.find(_CRLF)
            self._needed = self._size_of(rest[:eol]) if eol > 0 else 0
        return events

    @staticmethod
    def _size_of(line: bytes) -> int:
        """How many bytes the operation starting with control ``line`` needs in all (0: not a message)."""
        if line.startswith((b"MSG ", b"HMSG ")):
            with contextlib.suppress(ValueError, IndexError):
                return len(line) + 2 + int(line.split()[-1]) + 2
        return 0


def _control(line: bytes) -> Control | Err | Info:
    op, _, rest = line.partition(b" ")
    if op == b"PING" and not rest.strip():
        return PING
    if op == b"PONG" and not rest.strip():
        return PONG
    if op == b"+OK" and not rest.strip():
        return OK
    if op == b"-ERR":
        message = rest.strip()
        if len(message) >= 2 and message[:1] == message[-1:] == b"'":
            message = message[1:-1]
        return Err(message.decode(errors="replace"))
    if op == b"INFO":
        try:
            fields = json.loads(rest)
        except ValueError:
            raise ProtocolViolation(f"INFO is not JSON: {rest[:64]!r}") from None
        if not isinstance(fields, dict):
            raise ProtocolViolation(f"INFO is not a JSON object: {rest[:64]!r}")
        return Info(fields)
    raise ProtocolViolation(f"unknown protocol operation {line[:32]!r}")


# -- headers -----------------------------------------------------------------------------------------------
def parse_headers(block: bytes | None) -> dict[str, str] | None:
    """A message's header block as a dict, ``None`` when it holds nothing, parsed as nats-py parses it:
    ``Name: value`` lines (names ASCII without whitespace, others skipped; values stripped, decoded with
    replacement; the last of a repeated name kept), and an inline status line (``NATS/1.0 503``,
    ``NATS/1.0 404 No Messages``) as :data:`STATUS` and, when it has one, :data:`DESCRIPTION`. (nats-py
    2.16 reads a status line without a description that has headers after it, as nats-server 2.15
    writes "no responders", as a description starting with a line feed; this reads no description.)"""
    if not block:
        return None
    if block.startswith(_PLAIN_HEADER):
        return _header_lines(block[len(_PLAIN_HEADER) :]) or None
    eol = block.find(_CRLF)
    if eol < 0:
        eol = len(block)
    headers: dict[str, str] = {}
    if block[len(HEADER_LINE) : len(HEADER_LINE) + 1] == b" ":
        line = block[len(HEADER_LINE) + 1 : eol]  # "503", "404 No Messages", "100 Idle Heartbeat"
        code = line[:3].strip().decode(errors="replace")
        if code.isdigit():
            headers[STATUS] = code
        if description := line[4:]:
            headers[DESCRIPTION] = description.decode(errors="replace")
    headers.update(_header_lines(block[eol + 2 :]))
    return headers or None


def _header_lines(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.split(_CRLF):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip()
        if not name.isascii():
            continue
        key = name.decode()
        if key and key.split() != [key]:  # whitespace inside a name: not a header
            continue
        headers[key] = value.strip().decode("utf-8", "replace")
    return headers


def encode_header_lines(headers: Mapping[str, str]) -> bytes:
    """``Key: value`` lines in NATS wire form. Callers pass validated tokens (ids, paths, addresses):
    nothing here may contain CR or LF."""
    return "".join([f"{k}: {v}\r\n" for k, v in headers.items()]).encode()


def header_block(lines: bytes) -> bytes:
    """A complete NATS header block from :func:`encode_header_lines` output."""
    return _PLAIN_HEADER + lines + _CRLF


def status_block(code: int, description: str = "") -> bytes:
    """A header block carrying only an inline status, as nats-server writes one (``NATS/1.0 503``)."""
    line = f"{HEADER_LINE.decode()} {code}" + (f" {description}" if description else "")
    return line.encode() + _CRLF + _CRLF


NO_RESPONDERS: Final = status_block(503)


# -- commands ----------------------------------------------------------------------------------------------
PING_COMMAND: Final = b"PING\r\n"
PONG_COMMAND: Final = b"PONG\r\n"


def connect(options: Mapping[str, Any]) -> bytes:
    """``CONNECT {...}``: the client's options and credentials (see :func:`gateway.io.nats_link`)."""
    return b"CONNECT " + json.dumps(dict(options), separators=(",", ":")).encode() + _CRLF


def sub(subject: str, sid: int, queue: str = "") -> bytes:
    if queue:
        return b"SUB %s %s %d\r\n" % (subject.encode(), queue.encode(), sid)
    return b"SUB %s %d\r\n" % (subject.encode(), sid)


def unsub(sid: int, max_msgs: int = 0) -> bytes:
    """Stop ``sid`` now, or (``max_msgs`` > 0) once that many messages have been delivered to it."""
    if max_msgs > 0:
        return b"UNSUB %d %d\r\n" % (sid, max_msgs)
    return b"UNSUB %d\r\n" % sid


def pub_head(subject: str, reply: str, size: int) -> bytes:
    """The control line of a ``PUB`` of ``size`` payload bytes; the payload and CRLF follow it."""
    if reply:
        return b"PUB %s %s %d\r\n" % (subject.encode(), reply.encode(), size)
    return b"PUB %s %d\r\n" % (subject.encode(), size)


def hpub_head(subject: str, reply: str, header_size: int, size: int) -> bytes:
    """The control line of an ``HPUB``; the header block, the payload and CRLF follow it. ``size`` is the
    payload's length alone."""
    if reply:
        return b"HPUB %s %s %d %d\r\n" % (subject.encode(), reply.encode(), header_size, header_size + size)
    return b"HPUB %s %d %d\r\n" % (subject.encode(), header_size, header_size + size)


def pub(subject: str, reply: str, payload: bytes) -> bytes:
    return pub_head(subject, reply, len(payload)) + payload + _CRLF


def hpub(subject: str, reply: str, header: bytes, payload: bytes) -> bytes:
    """``HPUB`` with ``header`` (a complete header block), or a ``PUB`` when it is empty."""
    if not header:
        return pub(subject, reply, payload)
    return hpub_head(subject, reply, len(header), len(payload)) + header + payload + _CRLF
