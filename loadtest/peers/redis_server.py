"""A throwaway Redis for a peer (Debian's ``redis-server``), and a raw ``PUBLISH`` writer for it.

Redis runs on a free loopback port with persistence off, pinned beside the load generator (as NATS is
for Prism, so the server under test keeps its core), and is stopped by PID.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from loadtest.targets.base import ServerProcess, free_port, wait_for_port
from loadtest.wire import BatchedWriter


class RedisServer:
    def __init__(self, core: int | None = 1) -> None:
        self.port = free_port()
        self.core = core
        self.process: ServerProcess | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.proc is not None else None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def start(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run loadtest.peers.install() first")
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",  # no RDB snapshots and no AOF: a benchmark's Redis keeps nothing
            "--appendonly", "no",
            "--dir", str(workdir),
            "--daemonize", "no",  # stays our child, so it is stopped by PID
            "--logfile", "",
        ]  # fmt: skip
        self.process = ServerProcess(args, self.core)
        await self.process.start(workdir / "redis.log")
        await wait_for_port(self.port, self.process)

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()


class _Replies(asyncio.Protocol):
    """Reads the integer replies to ``PUBLISH`` (ignored) and the ``+PONG`` that ends a flush."""

    def __init__(self) -> None:
        self.partial = b""
        self.pongs: asyncio.Queue[None] = asyncio.Queue()

    def data_received(self, data: bytes) -> None:
        complete, _, self.partial = (self.partial + data).rpartition(b"\r\n")
        if b"-" in complete:  # integers are never negative here, so "-" starts an error reply
            raise ConnectionError(complete.decode(errors="replace"))
        for _ in range(complete.count(b"+PONG")):
            self.pongs.put_nowait(None)


class RespPublisher:
    """Raw ``PUBLISH`` commands on one connection, coalesced into large writes."""

    def __init__(self, transport: asyncio.Transport, replies: _Replies) -> None:
        self._writer = BatchedWriter(transport)
        self._replies = replies

    @classmethod
    async def connect(cls, port: int) -> RespPublisher:
        transport, replies = await asyncio.get_running_loop().create_connection(_Replies, "127.0.0.1", port)
        return cls(transport, replies)

    async def publish(self, channel: bytes, message: bytes) -> None:
        head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n" % (len(channel), channel, len(message))
        await self._writer.append(head, message, b"\r\n")

    async def flush(self) -> None:
        """Write what is buffered and wait until Redis has processed it (a ``PING`` answered in order)."""
        await self._writer.append(b"*1\r\n$4\r\nPING\r\n")
        self._writer.write()
        await asyncio.wait_for(self._replies.pongs.get(), 30)

    async def close(self) -> None:
        self._writer.close()
