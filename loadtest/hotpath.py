"""Micro-benchmarks of the gateway's 1:1 delivery path in one process, without sockets.

    python -m loadtest.hotpath

1. **Framing**: cutting ``MSG``/``HMSG`` operations out of the same read chunks, with nats-py's parser
   (``nats.protocol.parser``, its client callbacks reduced to counting) and with Prism's
   (``gateway/core/nats_protocol.py``); then parsing the one header of each ``HMSG`` with Prism's
   ``parse_headers``.
2. **The Python path of a 1:1 delivery**: the data plane's ``NatsLink.data_received`` (parse, dispatch),
   ``Delivery.on_conn``, framing and ``Flusher.flush`` for 1,000 connections whose transport discards
   what it is given. This is what the gateway spends per message besides the system calls and the event
   loop (docs/benchmarks.md).

Each figure is the best of several repetitions, in microseconds per message: on a shared machine the
minimum is the least disturbed measurement.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from nats.protocol.parser import Parser as NatsPyParser
from prometheus_client import CollectorRegistry
from websockets.protocol import State

from gateway.core.hub import Hub
from gateway.core.nats_protocol import Parser, parse_headers
from gateway.delivery import Delivery
from gateway.io.nats_link import NatsLink
from gateway.io.outbox import Flusher, LocalConn
from gateway.io.websocket import WsConnection, WsServer, WsSettings
from gateway.metrics import GatewayMetrics
from shared.nats_connection import NatsOptions
from shared.subjects import Subjects

CONNECTIONS = 1000
PAYLOAD = b'{"seq":1,"t":1795347000000000000,"pad":"' + b"x" * 56 + b'"}'  # 100 bytes, as the load tests
HEADER = b"NATS/1.0\r\nPrism-Sent-At: 1795347000.123\r\n\r\n"
CHUNK = 65536  # about what one read of a busy connection holds
REPEATS = 7


def operations(count: int, header: bool) -> bytes:
    ops = []
    for i in range(count):
        subject = b"conn.node1.c%d" % (i % CONNECTIONS)
        if header:
            total = len(HEADER) + len(PAYLOAD)
            ops.append(b"HMSG %s 1 %d %d\r\n%s%s\r\n" % (subject, len(HEADER), total, HEADER, PAYLOAD))
        else:
            ops.append(b"MSG %s 1 %d\r\n%s\r\n" % (subject, len(PAYLOAD), PAYLOAD))
    return b"".join(ops)


def chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


class _Counting:
    """What nats-py's parser calls back, reduced to counting messages."""

    def __init__(self) -> None:
        self.received = 0

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, header: bytes | None
    ) -> None:
        self.received += 1


async def frame_with_nats_py(reads: list[bytes], expected: int) -> float:
    client = _Counting()
    parser = NatsPyParser(client)
    start = time.perf_counter()
    for read in reads:
        await parser.parse(read)
    seconds = time.perf_counter() - start
    assert client.received == expected, (client.received, expected)
    return seconds / expected * 1e6


def frame_with_prism(reads: list[bytes], expected: int) -> float:
    parser = Parser()
    received = 0
    start = time.perf_counter()
    for read in reads:
        received += len(parser.receive(read))
    seconds = time.perf_counter() - start
    assert received == expected, (received, expected)
    return seconds / expected * 1e6


def headers_with_prism(count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        parse_headers(HEADER)
    return (time.perf_counter() - start) / count * 1e6


class NullTransport:
    """Takes writes and drops them: the system call is measured by the load tests, not here."""

    def writelines(self, data: list[bytes]) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def delivery_path(messages_per_read: int = 100, reads: int = 1000) -> float:
    hub: Hub[LocalConn] = Hub(100)
    flusher = Flusher(1 << 20, lambda conn: None, lambda frames, written: None)
    metrics = GatewayMetrics(CollectorRegistry(), "node1")
    delivery = Delivery("node1", Subjects(""), hub, flusher, None, metrics)  # type: ignore[arg-type]
    server = WsServer(WsSettings(), lambda conn, request: None, lambda conn: asyncio.sleep(0))
    for i in range(CONNECTIONS):
        ws = WsConnection(server)  # the node's own connection, open, on a transport that drops writes
        ws.transport = cast(asyncio.Transport, NullTransport())
        ws.state = State.OPEN
        conn = LocalConn(f"node1.c{i}", None, "/ws", "127.0.0.1:1", ws, "now")
        conn.started = True
        hub.add(conn.conn_id, None, conn)
    link = NatsLink(NatsOptions(servers=["nats://127.0.0.1:4222"], name="hotpath"))  # never connected
    await link.subscribe("conn.node1.*", delivery.on_conn)  # sid 1, as in operations()
    read = operations(messages_per_read, header=False)  # about what one read holds at 1:1 peak
    start = time.perf_counter()
    for _ in range(reads):
        link.data_received(read)
        flusher.flush()  # as the loop does once per pass
    seconds = time.perf_counter() - start
    await link.close()
    return seconds / (reads * messages_per_read) * 1e6


async def main() -> None:
    count = 200_000
    print(f"per message, best of {REPEATS} (microseconds)")
    for header in (False, True):
        reads = chunks(operations(count, header))
        ours = min([frame_with_prism(reads, count) for _ in range(REPEATS)])
        theirs = min([await frame_with_nats_py(reads, count) for _ in range(REPEATS)])
        kind = "HMSG (one header)" if header else "MSG"
        print(f"  frame {kind:18} nats-py {theirs:5.2f}   prism {ours:5.2f}   {theirs / ours:.1f}x")
    print(f"  parse one header (prism): {min([headers_with_prism(count) for _ in range(REPEATS)]):5.2f}")
    path = min([await delivery_path() for _ in range(REPEATS)])
    print(f"  1:1 delivery, Python only (link + on_conn + frame + flush): {path:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())
