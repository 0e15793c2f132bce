"""Server-to-client WebSocket frames, built once per message and shared by every recipient.

A server frame is unmasked, so its bytes do not depend on the connection: fan-out frames a message once
per node and writes the same bytes to every socket. Only valid for connections with no extension
negotiated (permessage-deflate is off by default); compressed connections go through websockets.
"""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82


def encode_frame(payload: bytes, *, binary: bool) -> bytes:
    """The complete unmasked frame (FIN set) carrying ``payload`` as one text or binary message."""
    first = _FIN_BINARY if binary else _FIN_TEXT
    length = len(payload)
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def is_valid_utf8(payload: bytes) -> bool:
    if payload.isascii():  # no allocation, and true of most JSON
        return True
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True
