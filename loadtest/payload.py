"""Benchmark messages: JSON carrying the publish time, padded to a fixed size.

``{"t":<time.time_ns()>,"s":"<seq>","p":"xxx..."}``: the publish timestamp sits at a fixed offset, so a
receiver reads it with one slice and one ``int()`` instead of a JSON parse.
"""

from __future__ import annotations

import time

PREFIX = b'{"t":'
_T_START = len(PREFIX)
_T_END = _T_START + 19
_TEMPLATE_OVERHEAD = len(b'{"t":0000000000000000000,"s":"0000000000","p":""}')


def make(seq: int, size: int = 100, now_ns: int | None = None) -> bytes:
    """A message of exactly ``size`` bytes (at least the 49-byte envelope) stamped with the time now."""
    pad = max(0, size - _TEMPLATE_OVERHEAD)
    stamp = time.time_ns() if now_ns is None else now_ns
    return b'{"t":%019d,"s":"%010d","p":"%s"}' % (stamp, seq % 10**10, b"x" * pad)


def sent_at(message: bytes) -> int | None:
    """The publish time in ns if ``message`` is a benchmark message, else None."""
    if message[:_T_START] != PREFIX:
        return None
    try:
        return int(message[_T_START:_T_END])
    except ValueError:
        return None


def sequence(message: bytes) -> int:
    return int(message[_T_END + 6 : _T_END + 16])
