"""Socket.IO 4 spoken over a raw WebSocket (engine.io v4 packets), so the picows fleet can drive it.

Server frames: ``0{...}`` open, ``2`` ping (answered ``3``), ``40{...}`` connected, ``42[event, ...]``
events, ``43<id>[...]`` acks, ``44{...}`` connect error. Deliveries are events named ``m`` whose one
argument is the benchmark payload as a string: Socket.IO JSON-escapes it, and :meth:`unwrap` undoes that,
giving back the published bytes exactly (a parsed object would not survive: JavaScript numbers cannot
hold the 19-digit nanosecond stamp).
"""

from __future__ import annotations

from typing import Any

import orjson

from loadtest.fleet import Dialect

DELIVERY_EVENT = "m"


class SocketIODialect(Dialect):
    name = "socketio"
    # Everything but ``42["m",...]`` is control. A delivery is checked against every prefix before it
    # counts, so the list holds only what this server sends, the frequent ones first.
    control_prefix = (b"2", b"43", b'42["welcome"', b"0", b"40", b"41", b"44", b"1")

    def parse_control(self, data: bytes) -> dict[str, Any]:
        kind = data[:2]
        if data == b"2":
            return {"prism": "send", "data": b"3"}
        if kind == b"43":
            start = data.index(b"[")
            args = orjson.loads(data[start:])
            first = args[0] if args else None
            ref = int(data[2:start])
            if isinstance(first, dict) and "joined" in first:
                return {"prism": "ok", "ref": ref}
            return {"prism": "reply", "ref": ref, "data": first}
        if kind == b"42":
            args = orjson.loads(data[2:])
            return {"prism": "welcome", "conn": args[1]["conn"]}
        if data[:1] == b"0":  # engine.io is open: connect to the main namespace
            return {"prism": "send", "data": b"40"}
        if kind == b"44":
            return {"prism": "error", "data": orjson.loads(data[2:] or b"null")}
        return {}  # 40 (connected: the welcome event follows), 41 and 1 (the close frame follows)

    def join(self, room: str, ref: int) -> bytes:
        return b'42%d["join",%s]' % (ref, orjson.dumps(room))

    def request(self, event: str, data: bytes, ref: int) -> bytes:
        return b"42%d[%s,%s]" % (ref, orjson.dumps(event), data)

    def unwrap(self, data: bytes) -> bytes:
        args = orjson.loads(data[2:])
        return str(args[1]).encode()
