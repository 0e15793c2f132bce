"""A raw WebSocket client on a plain asyncio stream, for sending what no well-behaved library would.

raw = await RawClient.open(port)            # TCP only
await raw.upgrade("/ws")                    # the opening handshake, by hand
raw.send(frame(Opcode.TEXT, b"\\xff"))       # any bytes, any frame
assert await raw.close_code() == 1007       # what the server answered with
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import struct
from dataclasses import dataclass

from websockets.frames import Opcode

READ_TIMEOUT = 5.0


def frame(
    opcode: Opcode | int,
    payload: bytes = b"",
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One client frame. ``length`` overrides the declared payload length (to lie about it)."""
    declared = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | int(opcode)])
    bit = 0x80 if mask else 0
    if declared < 126:
        head.append(bit | declared)
    elif declared < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", declared)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", declared)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + key + masked


def upgrade_request(path: str = "/ws", key: str | None = None, extra: str = "") -> bytes:
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


@dataclass
class Received:
    opcode: int
    payload: bytes
    fin: bool

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status: int | None = None
        self.response_head = b""

    @classmethod
    async def open(cls, port: int, rcvbuf: int | None = None) -> RawClient:
        """A TCP connection to 127.0.0.1:``port``; ``rcvbuf`` shrinks its receive buffer (slow readers)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    async def upgrade(self, path: str = "/ws", extra: str = "") -> int:
        """Send the opening handshake and read the answer's head; returns the HTTP status."""
        self.send(upgrade_request(path, extra=extra))
        return await self.upgrade_response()

    async def upgrade_response(self) -> int:
        """Read the head of the server's answer to an upgrade request; returns the HTTP status."""
        self.response_head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        self.status = int(self.response_head.split(b" ", 2)[1])
        return self.status

    async def welcome(self, path: str = "/ws") -> bytes:
        """Upgrade and return the welcome frame's payload."""
        assert await self.upgrade(path) == 101, self.response_head
        first = await self.read_frame()
        assert first is not None
        assert first.opcode == Opcode.TEXT, first
        return first.payload

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def read_frame(self, timeout: float = READ_TIMEOUT) -> Received | None:
        """The next server frame, or None once the server has closed the TCP connection."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            length = head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return Received(head[0] & 0x0F, payload, bool(head[0] & 0x80))

    async def close_code(self, timeout: float = READ_TIMEOUT, limit: int = 100_000) -> int | None:
        """Read (and drop) frames until the server's close frame; its code, or None if TCP just ended.
        Bounded: at most ``limit`` frames, each within ``timeout`` seconds."""
        for _ in range(limit):
            received = await self.read_frame(timeout)
            if received is None:
                return None
            if received.opcode == Opcode.CLOSE:
                return received.close_code
        raise AssertionError(f"no close frame within {limit} frames")

    async def closed_by_server(self, timeout: float = READ_TIMEOUT) -> bool:
        """Read until EOF: True if the server ends the TCP connection within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    def abort(self) -> None:
        transport = self.writer.transport
        transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
