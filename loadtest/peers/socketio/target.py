"""Socket.IO as a target: Redis beside the load generator, the Node server pinned to the server core.

Publishes go the way a Socket.IO backend sends them, through Redis: the generator writes exactly what
``@socket.io/redis-emitter`` would (``io.to(room).emit("m", payload)``), a MessagePack
``[uid, packet, opts]`` published on ``socket.io#/#<room>#``, and the Redis adapter's subscription hands
it to the sockets in that room. A connection is addressed by its socket id (every socket is in the room
of its id) and a user by the ``user:<id>`` room the server puts each socket in.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from loadtest.peers import msgpack_lite, provision
from loadtest.peers.redis_server import RedisServer, RespPublisher
from loadtest.peers.socketio.dialect import DELIVERY_EVENT, SocketIODialect
from loadtest.targets.base import Publisher, ServerProcess, Target, free_port, wait_for_port

SERVER_JS = Path(__file__).with_name("server.js")

# The emitter's message up to the payload, and from the payload to the options (see
# @socket.io/redis-emitter's BroadcastOperator.emit): [uid, {type, data: [event, payload], nsp}, opts].
_HEAD = b"\x93" + msgpack_lite.pack("emitter") + b"\x83"
_HEAD += msgpack_lite.pack("type") + msgpack_lite.pack(2)  # socket.io-parser's PacketType.EVENT
_HEAD += msgpack_lite.pack("data") + b"\x92" + msgpack_lite.pack(DELIVERY_EVENT)
_NSP = msgpack_lite.pack("nsp") + msgpack_lite.pack("/")


class EmitterPublisher:
    """Publishes ``io.to(room).emit("m", payload)`` the way ``@socket.io/redis-emitter`` does."""

    def __init__(self, resp: RespPublisher) -> None:
        self.resp = resp
        self._rooms: dict[str, tuple[bytes, bytes]] = {}

    def _room(self, room: str) -> tuple[bytes, bytes]:
        known = self._rooms.get(room)
        if known is None:
            # One room: the emitter publishes on the room's own channel, so only servers with it decode.
            channel = b"socket.io#/#%s#" % room.encode()
            tail = _NSP + msgpack_lite.pack({"rooms": [room], "flags": {}, "except": []})
            known = self._rooms[room] = (channel, tail)
        return known

    async def room(self, room: str, data: bytes) -> None:
        channel, tail = self._room(room)
        await self.resp.publish(channel, b"".join((_HEAD, msgpack_lite.str_header(len(data)), data, tail)))

    async def conn(self, conn_id: str, data: bytes) -> None:
        await self.room(conn_id, data)

    async def user(self, user: str, data: bytes) -> None:
        await self.room(f"user:{user}", data)

    async def flush(self) -> None:
        await self.resp.flush()

    async def close(self) -> None:
        await self.resp.close()


class SocketIOTarget(Target):
    name = "socketio"
    dialect = SocketIODialect()

    def __init__(self, core: int | None = 0, redis_core: int | None = 1) -> None:
        self.port = free_port()
        self.core = core
        self.redis = RedisServer(redis_core)
        self.node: ServerProcess | None = None

    async def start(self, workdir: Path) -> None:
        modules = await asyncio.to_thread(provision.socketio_modules)  # a no-op once installed
        node = shutil.which("node") or "node"
        try:
            await self.redis.start(workdir)
            env = {"NODE_PATH": str(modules), "NODE_ENV": "production"}
            self.node = ServerProcess([node, str(SERVER_JS), str(self.port), self.redis.url], self.core, env)
            await self.node.start(workdir / "socketio.log")
            await wait_for_port(self.port, self.node)
        except BaseException:
            await self.stop()
            raise
        self.server_pid = self.node.pid

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.stop()
        await self.redis.stop()

    @property
    def helper_pids(self) -> list[int]:
        return [self.redis.pid] if self.redis.pid is not None else []

    def url(self, user: str | None = None) -> str:
        query = "EIO=4&transport=websocket" + (f"&user={user}" if user else "")
        return f"ws://127.0.0.1:{self.port}/socket.io/?{query}"

    async def publisher(self) -> Publisher:
        return EmitterPublisher(await RespPublisher.connect(self.redis.port))
