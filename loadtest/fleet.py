"""Many cheap WebSocket clients (picows) in one process, counting and timing what they receive.

The hot path per delivery is one counter: only every ``SAMPLE_EVERY``-th client times what it receives
(spread evenly over the fleet, so fan-out order is sampled fairly), and a sampler task turns the counter
into a throughput timeline. That keeps one core of clients ahead of one core of gateway. A
:class:`Dialect` adapts the handful of control frames (welcome, join, request) to the target being
measured; Prism's is the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from array import array
from collections.abc import Callable
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from loadtest import payload
from loadtest.stats import Timeline


class Dialect:
    """How clients talk to a target. The default speaks Prism's protocol (the ceiling server mimics it)."""

    name = "prism"
    # Frames starting with this (or, for a tuple, any of these) are control frames; every other frame is
    # a delivery and costs one counter. ``bytes.startswith`` takes either, so Prism's check stays one.
    control_prefix: bytes | tuple[bytes, ...] = b'{"prism":'

    def parse_control(self, data: bytes) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(data)
        return parsed

    def welcome_conn(self, frame: dict[str, Any]) -> str | None:
        return str(frame["conn"]) if frame.get("prism") == "welcome" else None

    def join(self, room: str, ref: int) -> bytes:
        return orjson.dumps({"prism": "join", "room": room, "ref": ref})

    def request(self, event: str, data: bytes, ref: int) -> bytes:
        return b'{"event":"%s","ref":%d,"data":%s}' % (event.encode(), ref, data)

    def reply_ref(self, frame: dict[str, Any]) -> int | None:
        kind = frame.get("prism")
        return (
            int(frame["ref"]) if kind in ("ok", "reply", "error") and frame.get("ref") is not None else None
        )

    def unwrap(self, data: bytes) -> bytes:
        """The application payload inside a delivery frame (identity for Prism)."""
        return data


SAMPLE_EVERY = 8


class Client(WSListener):
    def __init__(self, fleet: Fleet, sampled: bool) -> None:
        self.fleet = fleet
        self.sampled = sampled
        self.transport: WSTransport | None = None
        self.conn_id: str | None = None
        self.welcomed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closed_code: int | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            data = frame.get_payload_as_bytes()
            fleet = self.fleet
            if data.startswith(fleet.dialect.control_prefix):
                self._control(data)
                return
            fleet.received += 1
            if self.sampled and fleet.record:
                fleet.on_sample(data)
            if fleet.received >= fleet.wake_at:
                fleet.wake()
        elif kind is WSMsgType.CLOSE:
            self.closed_code = frame.get_close_code().value
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.fleet.disconnected += 1
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError("disconnected before welcome"))

    def _control(self, data: bytes) -> None:
        dialect = self.fleet.dialect
        frame = dialect.parse_control(data)
        conn = dialect.welcome_conn(frame)
        if conn is not None:
            self.conn_id = conn
            if not self.welcomed.done():
                self.welcomed.set_result(conn)
            return
        ref = dialect.reply_ref(frame)
        future = self.pending.pop(ref, None) if ref is not None else None
        if future is not None and not future.done():
            future.set_result(frame)
        if frame.get("prism") == "reply":
            self.fleet.on_reply(frame)
        elif frame.get("prism") == "error":
            self.fleet.errors += 1
        elif frame.get("prism") == "send":  # the dialect's protocol wants an answer (Socket.IO: pings)
            self.send(frame["data"])

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, data)

    async def call(self, data: bytes, ref: int, timeout: float = 30.0) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[ref] = future
        self.send(data)
        return await asyncio.wait_for(future, timeout)


class Fleet:
    """The clients of one run, with shared counters: deliveries, latencies, a throughput timeline.
    ``client_class`` makes each client (a subclass may watch more control frames)."""

    client_class: type[Client] = Client

    def __init__(self, dialect: Dialect | None = None) -> None:
        self.dialect = dialect or Dialect()
        self.clients: list[Client] = []
        self.received = 0
        self.replies = 0
        self.errors = 0
        self.disconnected = 0
        self.latencies: array[int] = array("q")
        self.timeline = Timeline(time.time_ns())
        self.record = True
        self.stamping = False  # whether publishes to sampled clients also carry their time for the server
        self.wake_at = 1 << 62
        self._waiter: asyncio.Future[None] | None = None
        self._refs = itertools.count(1)
        self._sampler: asyncio.Task[None] | None = None
        self._sampled = 0  # deliveries and replies already in the timeline
        self._connected = 0

    # -- receiving ---------------------------------------------------------------------------------
    def on_sample(self, data: bytes) -> None:
        stamp = payload.sent_at(data if data[:5] == payload.PREFIX else self.dialect.unwrap(data))
        if stamp is not None:
            self.latencies.append(time.time_ns() - stamp)

    def on_reply(self, frame: dict[str, Any]) -> None:
        self.replies += 1
        if self.record:  # replies are few enough to time every one
            data = frame.get("data")
            if isinstance(data, dict) and isinstance(data.get("t"), int):
                self.latencies.append(time.time_ns() - data["t"])
        if self.replies >= self.wake_at:
            self.wake()

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_until(self, count: Callable[[], int], target: int, timeout: float) -> bool:
        """Wait until ``count()`` reaches ``target``; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while count() < target:
                left = deadline - loop.time()
                if left <= 0:
                    return False
                self.wake_at = target
                self._waiter = loop.create_future()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._waiter, min(left, 0.5))
        finally:
            self.wake_at = 1 << 62
        return True

    def reset(self) -> None:
        """Start a new measurement: zero the counters and sample throughput every 100 ms."""
        self.received = self.replies = self.errors = 0
        self.latencies = array("q")
        self.timeline = Timeline(time.time_ns())
        self._sampled = 0
        if self._sampler is None:
            self._sampler = asyncio.ensure_future(self._sample_throughput())

    async def _sample_throughput(self) -> None:
        while True:
            await asyncio.sleep(self.timeline.width_ns / 1e9)
            self._sample(time.time_ns())

    def _sample(self, now_ns: int) -> None:
        count = self.received + self.replies
        self.timeline.add(now_ns, count - self._sampled)
        self._sampled = count

    def throughput(self) -> list[float]:
        """Deliveries and replies per second in each 100 ms since :meth:`reset`, up to now (a phase
        shorter than 100 ms, as on a fast machine with ``--quick``, still gets its one rate)."""
        now_ns = time.time_ns()
        self._sample(now_ns)
        return self.timeline.rates(until_ns=now_ns)

    # -- connecting --------------------------------------------------------------------------------
    async def connect(self, url: str, timeout: float = 30.0) -> Client:
        client: Client | None = None

        sampled = self._connected % SAMPLE_EVERY == 0
        self._connected += 1

        def factory() -> Client:
            nonlocal client
            client = self.client_class(self, sampled=sampled)
            return client

        await ws_connect(factory, url, websocket_handshake_timeout=timeout, enable_auto_pong=True)
        assert client is not None
        await asyncio.wait_for(client.welcomed, timeout)
        self.clients.append(client)
        return client

    async def connect_many(self, urls: list[str], concurrency: int = 200) -> list[Client]:
        gate = asyncio.Semaphore(concurrency)

        async def one(url: str) -> Client:
            async with gate:
                return await self.connect(url)

        return list(await asyncio.gather(*(one(url) for url in urls)))

    async def join(self, clients: list[Client], room: str, concurrency: int = 500) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(client: Client) -> None:
            async with gate:
                ref = next(self._refs)
                answer = await client.call(self.dialect.join(room, ref), ref)
                if answer.get("prism") == "error":
                    raise RuntimeError(f"join {room} refused: {answer}")

        await asyncio.gather(*(one(c) for c in clients))

    def next_ref(self) -> int:
        return next(self._refs)

    async def close_all(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        for client in self.clients:
            if client.transport is not None and not client.transport.is_disconnected:
                client.transport.send_close()
                client.transport.disconnect()
        self.clients.clear()
