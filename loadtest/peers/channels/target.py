"""Django Channels as a target: Redis and the publishing backend beside the load generator, the ASGI
server (uvicorn on uvloop, or daphne) pinned to the server core.

Publishes go the way a Django backend sends them: the generator hands each one to ``benchsite.backend``,
a process of the peer's virtualenv that calls ``channel_layer.group_send`` (room, user) or ``send`` (one
connection, by its channel name) through channels_redis, so every message reaches the ASGI server
through Redis. The consumers speak Prism's client frames, so the default dialect drives them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from loadtest.peers import provision
from loadtest.peers.redis_server import RedisServer
from loadtest.targets.base import Publisher, ServerProcess, Target, free_port, wait_for_port
from loadtest.wire import BatchedWriter

PROJECT = Path(__file__).parent  # on the peer's PYTHONPATH, so ``benchsite`` imports
APP = "benchsite.asgi:application"


class _Acks(asyncio.Protocol):
    def __init__(self) -> None:
        self.acks: asyncio.Queue[None] = asyncio.Queue()

    def data_received(self, data: bytes) -> None:
        for _ in range(data.count(b"F")):
            self.acks.put_nowait(None)


class BackendPublisher:
    """Length-prefixed publish requests to ``benchsite.backend``, coalesced into large writes."""

    def __init__(self, transport: asyncio.Transport, acks: _Acks) -> None:
        self._writer = BatchedWriter(transport)
        self._acks = acks

    @classmethod
    async def connect(cls, port: int) -> BackendPublisher:
        transport, acks = await asyncio.get_running_loop().create_connection(_Acks, "127.0.0.1", port)
        return cls(transport, acks)

    async def _send(self, kind: bytes, name: str, data: bytes) -> None:
        head = kind + name.encode() + b"\n"
        await self._writer.append((len(head) + len(data)).to_bytes(4, "big"), head, data)

    async def room(self, room: str, data: bytes) -> None:
        await self._send(b"R", room, data)

    async def conn(self, conn_id: str, data: bytes) -> None:
        await self._send(b"C", conn_id, data)

    async def user(self, user: str, data: bytes) -> None:
        await self._send(b"U", user, data)

    async def flush(self) -> None:
        await self._writer.append(b"\x00\x00\x00\x01F")
        self._writer.write()
        await asyncio.wait_for(self._acks.acks.get(), 60)

    async def close(self) -> None:
        self._writer.close()


def _server_args(server: str, python: Path, port: int) -> list[str]:
    if server == "uvicorn":
        return [
            str(python), "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--ws", "websockets",
            "--ws-per-message-deflate", "false", "--lifespan", "off", "--no-access-log",
            "--log-level", "warning",
        ]  # fmt: skip
    if server == "daphne":  # Twisted's asyncio reactor; no compression unless asked for
        return [str(python), "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", APP]
    raise ValueError(f"unknown ASGI server {server!r}: uvicorn or daphne")


class ChannelsTarget(Target):
    """uvicorn (uvloop, httptools, websockets) by default: it beat daphne on room fan-out, 3.1k against
    2.7k deliveries/s for 1,000 members, and on p99 at half peak; daphne was ~10% ahead on 1:1."""

    name = "channels"

    def __init__(self, core: int | None = 0, side_core: int | None = 1, server: str = "uvicorn") -> None:
        self.port = free_port()
        self.backend_port = free_port()
        self.core = core
        self.side_core = side_core  # Redis and the publishing backend share the generator's core
        self.server = server
        self.redis = RedisServer(side_core)
        self.asgi: ServerProcess | None = None
        self.backend: ServerProcess | None = None

    async def start(self, workdir: Path) -> None:
        python = await asyncio.to_thread(provision.channels_python)  # a no-op once installed
        try:
            await self.redis.start(workdir)
            env = {
                "PYTHONPATH": str(PROJECT),
                "DJANGO_SETTINGS_MODULE": "benchsite.settings",
                "PRISM_PEER_REDIS_URL": self.redis.url,
            }
            args = _server_args(self.server, python, self.port)
            self.asgi = ServerProcess(args, self.core, env)
            self.backend = ServerProcess(
                [str(python), "-m", "benchsite.backend", str(self.backend_port)], self.side_core, env
            )
            await self.asgi.start(workdir / f"channels-{self.server}.log")
            await self.backend.start(workdir / "channels-backend.log")
            await wait_for_port(self.port, self.asgi)
            await wait_for_port(self.backend_port, self.backend)
        except BaseException:
            await self.stop()
            raise
        self.server_pid = self.asgi.pid

    async def stop(self) -> None:
        for process in (self.backend, self.asgi):
            if process is not None:
                await process.stop()
        await self.redis.stop()

    @property
    def helper_pids(self) -> list[int]:
        """Redis and the publishing backend: the Django side's cost beside the generator, not the server's."""
        pids = [self.redis.pid, self.backend.pid if self.backend and self.backend.proc else None]
        return [pid for pid in pids if pid is not None]

    def url(self, user: str | None = None) -> str:
        return f"ws://127.0.0.1:{self.port}/ws" + (f"?user={user}" if user else "")

    async def publisher(self) -> Publisher:
        return await BackendPublisher.connect(self.backend_port)
