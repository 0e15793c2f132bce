"""Micro-benchmarks of the gateway's 1:1 delivery path in one process, without sockets.

    python -m loadtest.hotpath

1. **Parsing**: the same read chunks of ``MSG``/``HMSG`` operations for a direct subscription, through
   nats-py's own parser and through Prism's reader (``gateway/io/nats_reader.py``).
2. **The Python path of a 1:1 delivery**: Prism's reader, ``Delivery.on_conn``, framing and
   ``Flusher.flush`` for 1,000 connections whose transport discards what it is given. This is what the
   gateway spends per message besides the system calls and the event loop (docs/benchmarks.md).

Each figure is the best of several repetitions, in microseconds per message: on a shared machine the
minimum is the least disturbed measurement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

from nats.aio.client import Client as NatsClient
from nats.protocol.parser import Parser
from prometheus_client import CollectorRegistry
from websockets.protocol import State

from gateway.core.hub import Hub
from gateway.delivery import Delivery, MembershipOps
from gateway.io import direct_subscription
from gateway.io.nats_reader import DeliveryReader
from gateway.io.outbox import Flusher, LocalConn
from gateway.io.websocket import WsConnection, WsServer, WsSettings
from gateway.metrics import GatewayMetrics
from shared.subjects import Subjects

CONNECTIONS = 1000
PAYLOAD = b'{"seq":1,"t":1795347000000000000,"pad":"' + b"x" * 56 + b'"}'  # 100 bytes, as the load tests
HEADER = b"NATS/1.0\r\nPrism-Sent-At: 1795347000.123\r\n\r\n"
CHUNK = 32768  # what nats-py reads at a time
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


async def parse_once(parser_type: Callable[[NatsClient], Any], reads: list[bytes], expected: int) -> float:
    nc = NatsClient()
    received = 0

    def handler(subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> None:
        nonlocal received
        received += 1

    dispatch = direct_subscription.Dispatch(handler)
    nc._subs[1] = direct_subscription.DirectSubscription(nc, 1, "conn.node1.*", dispatch)
    parser = parser_type(nc)
    start = time.perf_counter()
    for read in reads:
        await parser.parse(read)
    seconds = time.perf_counter() - start
    assert received == expected, (received, expected)
    return seconds / expected * 1e6


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
    ops = MembershipOps(join=None, leave=None, close=None)  # type: ignore[arg-type]
    delivery = Delivery("node1", Subjects(""), hub, flusher, None, metrics, ops)  # type: ignore[arg-type]
    server = WsServer(WsSettings(), lambda conn, request: None, lambda conn: asyncio.sleep(0))
    for i in range(CONNECTIONS):
        ws = WsConnection(server)  # the node's own connection, open, on a transport that drops writes
        ws.transport = cast(asyncio.Transport, NullTransport())
        ws.state = State.OPEN
        conn = LocalConn(f"node1.c{i}", None, "/ws", "127.0.0.1:1", ws, "now")
        conn.started = True
        hub.add(conn.conn_id, None, conn)
    nc = NatsClient()
    dispatch = direct_subscription.Dispatch(delivery.on_conn)
    nc._subs[1] = direct_subscription.DirectSubscription(nc, 1, "conn.node1.*", dispatch)
    reader = DeliveryReader(nc)
    read = operations(messages_per_read, header=False)  # about what one read holds at 1:1 peak
    start = time.perf_counter()
    for _ in range(reads):
        await reader.parse(read)
        flusher.flush()  # as the loop does once per pass
    seconds = time.perf_counter() - start
    return seconds / (reads * messages_per_read) * 1e6


async def main() -> None:
    count = 200_000
    print(f"per message, best of {REPEATS} (microseconds)")
    for header in (False, True):
        reads = chunks(operations(count, header))
        ours = min([await parse_once(DeliveryReader, reads, count) for _ in range(REPEATS)])
        theirs = min([await parse_once(Parser, reads, count) for _ in range(REPEATS)])
        kind = "HMSG (one header)" if header else "MSG"
        print(f"  parse {kind:18} nats-py {theirs:5.2f}   prism reader {ours:5.2f}   {theirs / ours:.1f}x")
    path = min([await delivery_path() for _ in range(REPEATS)])
    print(f"  1:1 delivery, Python only (reader + on_conn + frame + flush): {path:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())
