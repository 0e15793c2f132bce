"""The raw ceiling: a minimal websockets server doing nothing but ``broadcast()`` and ``send()``.

It speaks just enough of Prism's client frames (welcome, join -> ok, request -> reply echo) for the same
load generator to drive it. Publishes arrive on ``/control`` as binary frames:
``R<room>\\n<payload>`` (room), ``C<conn>\\n<payload>`` (one connection), ``U<user>\\n<payload>`` (a user).

    python -m loadtest.targets.ceiling_server PORT
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections import defaultdict
from urllib.parse import parse_qs

import orjson
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

conns: dict[bytes, ServerConnection] = {}
rooms: dict[bytes, set[ServerConnection]] = defaultdict(set)
users: dict[bytes, set[ServerConnection]] = defaultdict(set)
ids = itertools.count(1)


async def control(ws: ServerConnection) -> None:
    async for frame in ws:
        assert isinstance(frame, bytes)
        head, _, body = frame.partition(b"\n")
        kind, name = head[:1], head[1:]
        if kind == b"R":
            broadcast(rooms.get(name, ()), body, text=True)
        elif kind == b"U":
            broadcast(users.get(name, ()), body, text=True)
        elif kind == b"C" and (target := conns.get(name)) is not None:
            await target.send(body, text=True)


async def client(ws: ServerConnection) -> None:
    conn = b"c%d" % next(ids)
    query = parse_qs((ws.request.path if ws.request else "").partition("?")[2])
    user = query.get("user", [""])[0].encode()
    conns[conn] = ws
    if user:
        users[user].add(ws)
    joined: list[bytes] = []
    try:
        await ws.send(b'{"prism":"welcome","conn":"%s"}' % conn, text=True)
        async for message in ws:
            frame = orjson.loads(message)
            if frame.get("prism") == "join":
                room = frame["room"].encode()
                rooms[room].add(ws)
                joined.append(room)
                await ws.send(orjson.dumps({"prism": "ok", "ref": frame.get("ref")}), text=True)
            elif "event" in frame and "ref" in frame:
                reply = {"prism": "reply", "ref": frame["ref"], "data": frame.get("data")}
                await ws.send(orjson.dumps(reply), text=True)
    finally:
        del conns[conn]
        users[user].discard(ws)
        for room in joined:
            rooms[room].discard(ws)


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request else ""
    await (control(ws) if path.startswith("/control") else client(ws))


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**20, backlog=2048) as server:
        print(f"ceiling listening on {port}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(int(sys.argv[1])))
