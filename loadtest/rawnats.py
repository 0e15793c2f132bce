"""A minimal NATS publisher for the load generator: batched ``PUB`` lines on one socket.

The publisher stands in for backends, and nats-py spends a few microseconds of Python per publish; on a
shared core that would make the generator, not the gateway, the bottleneck. This writes the protocol
directly: ``CONNECT`` once, then ``PUB <subject> [reply] <n>`` lines coalesced into large writes,
answering the server's ``PING`` so it keeps the connection.
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import urlparse

from gateway.io.bus import encode_header_lines, header_block
from loadtest.wire import BatchedWriter


class _Reader(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.pongs: asyncio.Queue[None] = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\r\n")
            if line == b"PING" and self.transport is not None:
                self.transport.write(b"PONG\r\n")
            elif line == b"PONG":
                self.pongs.put_nowait(None)
            elif line.startswith(b"-ERR"):
                raise ConnectionError(line.decode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _pub_line(subject: str, size: int) -> bytes:
    return b"PUB %s %d\r\n" % (subject.encode(), size)


class RawPublisher:
    def __init__(self, reader: _Reader, transport: asyncio.Transport) -> None:
        self._reader = reader
        self._writer = BatchedWriter(transport)

    @classmethod
    async def connect(cls, url: str) -> RawPublisher:
        parsed = urlparse(url)
        loop = asyncio.get_running_loop()
        transport, reader = await loop.create_connection(
            _Reader, parsed.hostname or "127.0.0.1", parsed.port or 4222
        )
        reader.transport = transport
        transport.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nPING\r\n')
        await asyncio.wait_for(reader.pongs.get(), 10)
        return cls(reader, transport)

    async def publish(self, subject: str, data: bytes) -> None:
        """Buffer one publish; the buffer is written at the end of this loop pass (or when large)."""
        await self._writer.append(_pub_line(subject, len(data)), data, b"\r\n")

    def heads(self, subjects: list[str], size: int) -> list[bytes]:
        """The ``PUB`` line of a ``size``-byte message to each of ``subjects``, for :meth:`publish_head`."""
        return [_pub_line(subject, size) for subject in subjects]

    async def publish_head(self, head: bytes, data: bytes) -> None:
        """:meth:`publish` with the ``PUB`` line built beforehand (:meth:`heads`): the same bytes on the
        wire, a third of the generator's Python per message on the 1:1 path."""
        await self._writer.append(head, data, b"\r\n")

    async def publish_with_headers(self, subject: str, headers: dict[str, str], data: bytes) -> None:
        """:meth:`publish` as ``HPUB``, with NATS headers."""
        block = header_block(encode_header_lines(headers))
        head = b"HPUB %s %d %d\r\n" % (subject.encode(), len(block), len(block) + len(data))
        await self._writer.append(head, block, data, b"\r\n")

    def write(self) -> None:
        self._writer.write()

    async def flush(self) -> None:
        """Write what is buffered and wait until the server has processed it (PING/PONG)."""
        await self._writer.append(b"PING\r\n")
        self._writer.write()
        await asyncio.wait_for(self._reader.pongs.get(), 30)

    async def close(self) -> None:
        self._writer.close()
