"""Just enough MessagePack to write the Socket.IO Redis adapter's messages (no dependency needed).

Covers what ``notepack.io`` (the adapter's parser) decodes into the shapes the adapter expects: str,
int, bool, None, list and dict. Payloads are packed as str, never bin, so Socket.IO sends them as text.
"""

from __future__ import annotations

import struct
from typing import Any


def str_header(size: int) -> bytes:
    """The header of a UTF-8 string of ``size`` bytes (fixstr, str8, str16 or str32)."""
    if size < 32:
        return bytes((0xA0 | size,))
    if size < 0x100:
        return struct.pack(">BB", 0xD9, size)
    if size < 0x10000:
        return struct.pack(">BH", 0xDA, size)
    return struct.pack(">BI", 0xDB, size)


def _int(value: int) -> bytes:
    if 0 <= value < 0x80:
        return bytes((value,))
    if -32 <= value < 0:
        return struct.pack(">b", value)
    if 0 <= value < 1 << 64:
        return struct.pack(">BQ", 0xCF, value)
    return struct.pack(">Bq", 0xD3, value)


def _length(size: int, fix: int, wide: int) -> bytes:
    """A container header: fixarray/fixmap below 16 entries, else the 32-bit form (``wide``)."""
    return bytes((fix | size,)) if size < 16 else struct.pack(">BI", wide, size)


def pack(value: Any) -> bytes:
    if value is None:
        return b"\xc0"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return b"\xc3" if value else b"\xc2"
    if isinstance(value, int):
        return _int(value)
    if isinstance(value, str):
        data = value.encode()
        return str_header(len(data)) + data
    if isinstance(value, list | tuple):
        return _length(len(value), 0x90, 0xDD) + b"".join(pack(item) for item in value)
    if isinstance(value, dict):
        body = b"".join(pack(k) + pack(v) for k, v in value.items())
        return _length(len(value), 0x80, 0xDF) + body
    raise TypeError(f"cannot pack {type(value).__name__}")
