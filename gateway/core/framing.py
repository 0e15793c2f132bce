"""Server-to-client WebSocket frames, built once per message and shared by every recipient.

A server frame is unmasked, so its bytes do not depend on the connection: fan-out frames a message once
per node and writes the same bytes to every socket. A connection with permessage-deflate (off by default)
compresses each message itself and frames it with RSV1 set (``compressed=True``).
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82
_RSV1 = 0x40
CLOSE, PING, PONG = 0x8, 0x9, 0xA
# A close frame's reason: what fits in a control frame's 125 bytes after the 2-byte code.
MAX_CLOSE_REASON_BYTES = 123


def encode_frame(payload: bytes, *, binary: bool, compressed: bool = False) -> bytes:
    """The complete unmasked frame (FIN set) carrying ``payload`` as one text or binary message;
    ``compressed``: ``payload`` is deflated (permessage-deflate), so RSV1 is set."""
    first = _FIN_BINARY if binary else _FIN_TEXT
    if compressed:
        first |= _RSV1
    length = len(payload)
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def encode_control(opcode: int, payload: bytes) -> bytes:
    """An unmasked ping, pong or close frame; ``payload`` is at most 125 bytes."""
    return bytes((0x80 | opcode, len(payload))) + payload


def fit_close_reason(text: str) -> str:
    """``text`` cut to fit a close frame's reason (123 bytes of UTF-8), never inside a character."""
    return text.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


def close_payload(code: int, reason: str) -> bytes:
    """The payload of a close frame: the code, then the reason cut to fit."""
    return struct.pack("!H", code) + fit_close_reason(reason).encode()


def is_valid_utf8(payload: bytes) -> bool:
    if payload.isascii():  # no allocation, and true of most JSON
        return True
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True
