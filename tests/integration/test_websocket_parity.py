"""The node's connection layer (gateway/io/websocket.py) against websockets' own asyncio server, on real
sockets: the same client scripts get the same HTTP answers, pongs, close frames and end of the TCP
connection from both, and the servers' handlers receive the same messages.

Both servers run with the node's settings (message limit, no compression, the 16-message inbound queue,
``Server: Prism``) and a handler that only records what it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from gateway.io.websocket import WsConnection, WsServer, WsSettings
from tests.security.wire import RawClient, frame, upgrade_request

LIMIT = 1024  # max message size of both servers
CLOSE_1000 = frame(0x8, struct.pack("!H", 1000))


@dataclass
class Recorder:
    """What one server's handler received, connection by connection."""

    sessions: list[list[str | bytes]] = field(default_factory=list)
    done: list[asyncio.Future[None]] = field(default_factory=list)

    def start(self) -> tuple[list[str | bytes], asyncio.Future[None]]:
        self.sessions.append([])
        self.done.append(asyncio.get_running_loop().create_future())
        return self.sessions[-1], self.done[-1]

    async def last(self) -> list[str | bytes]:
        await asyncio.wait_for(self.done[-1], 5)
        return self.sessions[-1]


@contextlib.asynccontextmanager
async def websockets_server() -> AsyncIterator[tuple[int, Recorder]]:
    recorder = Recorder()

    async def record(ws: ServerConnection) -> None:
        received, done = recorder.start()
        try:
            async for message in ws:
                received.append(message)
        except ConnectionClosed:
            pass
        finally:
            done.set_result(None)

    async with serve(
        record,
        "127.0.0.1",
        0,
        max_size=LIMIT,
        compression=None,
        ping_interval=None,
        close_timeout=2,
        open_timeout=2,
        max_queue=16,
        server_header="Prism",
    ) as server:
        yield server.sockets[0].getsockname()[1], recorder


@contextlib.asynccontextmanager
async def prism_server() -> AsyncIterator[tuple[int, Recorder]]:
    recorder = Recorder()

    async def record(conn: WsConnection) -> None:
        received, done = recorder.start()
        try:
            async for message in conn:
                received.append(message)
        finally:
            done.set_result(None)

    server = WsServer(
        WsSettings(max_message_bytes=LIMIT, handshake_timeout=2, close_timeout=2),
        lambda conn, request: None,
        record,
    )
    await server.listen("127.0.0.1", 0)
    try:
        yield server.port, recorder
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class Transcript:
    status: int | None
    controls: list[tuple[int, bytes]]  # pongs and close frames, in order
    messages: list[str | bytes]  # what the handler received
    tcp_closed: bool


async def run_script(port: int, recorder: Recorder, chunks: Sequence[bytes]) -> Transcript:
    raw = await RawClient.open(port)
    try:
        status = await raw.upgrade("/ws")
        for chunk in chunks:
            with contextlib.suppress(ConnectionError):
                raw.send(chunk)
                await raw.drain()
            await asyncio.sleep(0)
        controls: list[tuple[int, bytes]] = []
        while (received := await raw.read_frame(timeout=5)) is not None:
            controls.append((received.opcode, received.payload))
    finally:
        await raw.close()
    return Transcript(status, controls, await recorder.last(), tcp_closed=True)


async def both(chunks: Sequence[bytes]) -> tuple[Transcript, Transcript]:
    async with websockets_server() as (ws_port, ws_recorder), prism_server() as (prism_port, prism_recorder):
        theirs = await run_script(ws_port, ws_recorder, chunks)
        ours = await run_script(prism_port, prism_recorder, chunks)
    return theirs, ours


def close_code(transcript: Transcript) -> int | None:
    closes = [payload for opcode, payload in transcript.controls if opcode == 0x8]
    return struct.unpack("!H", closes[0][:2])[0] if closes and len(closes[0]) >= 2 else None


# Each script ends in a close frame, or in what makes the server close.
SCRIPTS: dict[str, list[bytes]] = {
    "messages, pings and a close": [
        frame(0x1, b"hello"),
        frame(0x2, b"\x00\x01"),
        frame(0x9, b"ping"),
        frame(0x1, b"frag", fin=False) + frame(0xA, b"pong") + frame(0x0, b"mented"),
        CLOSE_1000,
    ],
    "a close frame without a code": [frame(0x1, b"a"), frame(0x8)],
    "unmasked": [frame(0x1, b"x", mask=False)],
    "reserved opcode": [frame(0x3, b"x")],
    "rsv1 without an extension": [frame(0x1, b"x", rsv=0b100)],
    "continuation of nothing": [frame(0x0, b"x")],
    "long ping": [frame(0x9, b"p" * 126)],
    "fragmented ping": [frame(0x9, b"p", fin=False)],
    "bad utf-8": [frame(0x1, b"ok"), frame(0x1, b"\xff\xfe")],
    "utf-8 broken across fragments": [frame(0x1, b"ok \xc3", fin=False), frame(0x0, b"\x28")],
    "a character across fragments": [frame(0x1, b"\xc3", fin=False), frame(0x0, b"\xa9"), CLOSE_1000],
    "too big": [frame(0x2, b"x" * (LIMIT + 1))],
    "claims a terabyte": [frame(0x2, b"", length=1 << 40)],
    "too big together": [frame(0x1, b"y" * 600, fin=False), frame(0x0, b"y" * 600)],
    "too many fragments": [frame(0x1, b"a", fin=False) + frame(0x0, b"", fin=False) * 5000],
    "bad close code": [frame(0x8, struct.pack("!H", 1005))],
    "bad close reason": [frame(0x8, struct.pack("!H", 1000) + b"\xff")],
    "close inside a message": [frame(0x1, b"a", fin=False), CLOSE_1000],
    "a byte at a time": [bytes([b]) for b in frame(0x1, b"slow") + frame(0x9, b"p") + CLOSE_1000],
    "random bytes": [random.Random(3).randbytes(300)],
    "a flood of small messages": [b"".join(frame(0x1, b"%d" % i) for i in range(200)), CLOSE_1000],
}


async def test_each_script_gets_the_same_answers_from_both_servers() -> None:
    for name, script in SCRIPTS.items():
        theirs, ours = await both(script)
        assert ours == theirs, name
        assert any(opcode == 0x8 for opcode, _ in ours.controls), name  # every script ends in a close


# A frame: opcode, payload, fin, rsv bits, masked. Text payloads are valid UTF-8 here: websockets decodes
# text only when its handler reads the message, so what it answers after a bad one depends on timing.
_frames = st.lists(
    st.tuples(
        st.sampled_from([0x0, 0x1, 0x1, 0x2, 0x8, 0x9, 0x9, 0xA, 0x3]),
        st.text(max_size=30).map(str.encode)
        | st.binary(max_size=30)
        | st.builds(lambda n: b"z" * n, st.integers(0, 1100)),
        st.booleans() | st.just(True),
        st.sampled_from([0] * 10 + [4]),
        st.sampled_from([True] * 15 + [False]),
    ),
    max_size=8,
)


def _script(frames: list[tuple[int, bytes, bool, int, bool]]) -> bytes:
    out = b""
    for opcode, payload, fin, rsv, mask in frames:
        if opcode == 0x1:
            try:
                payload.decode()
            except UnicodeDecodeError:
                opcode = 0x2
        if opcode == 0x8:
            payload = struct.pack("!H", 1000) + payload[:50].decode(errors="ignore").encode()[:50]
        out += frame(opcode, payload, fin=fin, rsv=rsv, mask=mask)
    return out + CLOSE_1000


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames, st.lists(st.integers(min_value=0), max_size=4))
def test_random_frames_get_the_same_answers_from_both_servers(
    frames: list[tuple[int, bytes, bool, int, bool]], cuts: list[int]
) -> None:
    data = _script(frames)
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    theirs, ours = asyncio.run(both(chunks))
    assert ours == theirs


HTTP_REQUESTS: dict[str, bytes] = {
    "a plain GET": b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "a bad key": upgrade_request(key="not-base64-16-bytes"),
    "a POST": upgrade_request().replace(b"GET", b"POST", 1),
    "no version": upgrade_request().replace(b"Sec-WebSocket-Version: 13\r\n", b""),
    "HTTP/1.0": upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "a body": upgrade_request(extra="Content-Length: 5\r\n"),
    "a request line too long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    "a header line too long": b"GET /ws HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    "too many headers": b"GET /ws HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
    "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "garbage with a newline": b"hello\nworld\r\n\r\n",
}


async def http_answer(port: int, request: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """The status line, the headers but Date, and the body the server sent before closing."""
    raw = await RawClient.open(port)
    try:
        raw.send(request)
        with contextlib.suppress(ConnectionError):
            await raw.drain()
        data = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(raw.reader.read(65536), 5):
                data += chunk
    finally:
        await raw.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n") if head else [""]
    headers = [tuple(line.split(": ", 1)) for line in lines]
    return status, [(k, v) for k, v in headers if k != "Date"], body


async def test_http_answers_are_the_same_from_both_servers() -> None:
    async with websockets_server() as (ws_port, _), prism_server() as (prism_port, _):
        for name, request in HTTP_REQUESTS.items():
            theirs = await http_answer(ws_port, request)
            ours = await http_answer(prism_port, request)
            assert ours == theirs, name
