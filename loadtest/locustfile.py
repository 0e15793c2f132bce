"""Locust WebSocket users for Prism: connect, join a room, receive deliveries, send events and requests.

Run it against a gateway (or the load balancer in front of several):

    locust -f loadtest/locustfile.py --host ws://localhost:8080/ws
    locust -f loadtest/locustfile.py --host ws://localhost:8080/ws --headless -u 200 -r 50 --run-time 30s

Without a load balancer, ``--host`` may list several nodes, comma-separated
(``--host ws://localhost:8080/ws,ws://localhost:8081/ws`` for ``prism dev``); users are spread over them
in turn, so room deliveries cross nodes.

Each simulated user opens one WebSocket as ``?user=locust-<pid>-<n>``, checks that the first frame is the
welcome, joins ``PRISM_ROOM`` and then, until the test stops, sends fire-and-forget events
(``{"event":"chat.send","data":{...}}``) and requests with a ``ref`` whose replies it waits for. A
background greenlet per user reads every frame: ``ok`` / ``reply`` / ``error`` frames answer the pending
``ref``; everything else is a backend delivery.

What shows up in locust's statistics (request type ``WS``):

- ``connect``: TCP + WebSocket handshake + welcome frame; fails if the first frame is not the welcome.
- ``join``: ``{"prism":"join",...}`` to its ``{"prism":"ok"}``.
- ``request``: an event with ``ref`` to its ``{"prism":"reply"}``; an error frame is a failure named by
  its code (``no_responders``, ``timeout``, ``too_many_requests``, ...).
- ``send``: writing a fire-and-forget event (fails only if the socket write fails).
- ``recv``: one entry per delivery. If the payload is a JSON object with a numeric ``"t"`` (epoch
  milliseconds) the "response time" is the delivery latency, otherwise 0.
- ``close``: a failure whenever the gateway closes a connection the user did not close (slow consumer,
  drain, ...), named by the close code. The user reconnects at its next task.
- ``publish`` (type ``NATS``): messages sent by the optional publisher below.

Requests need a backend that answers ``client.event.<PRISM_REQUEST_EVENT>``; without one they fail with
``no_responders``. ``prism dev`` runs one for ``echo``, the default: its demo backend (docs/protocol.md,
"The demo backend"), which drops these ``chat.send`` events, as they name no room. Deliveries need a
backend publishing to ``room.<PRISM_ROOM>``: set ``PRISM_NATS_URL`` and this file starts one itself, a
publisher (on the master or the only locust process) that sends ``PRISM_PUBLISH_RATE`` timestamped
messages per second to the room for the whole test.

Settings (environment variables):

| variable | default | meaning |
|---|---|---|
| ``PRISM_ROOM`` | ``loadtest`` | the room every user joins |
| ``PRISM_PUBLISH_EVENT`` | ``chat.send`` | the fire-and-forget event name |
| ``PRISM_REQUEST_EVENT`` | ``echo`` | the request event name |
| ``PRISM_REQUEST_TIMEOUT`` | ``10`` | seconds a user waits for a reply (the gateway's own timeout is 5 s) |
| ``PRISM_NATS_URL`` | unset | enables the publisher: ``nats://[user:pass@]host:port`` (first of a list) |
| ``PRISM_PUBLISH_RATE`` | ``10`` | publisher messages per second |
| ``PRISM_SUBJECT_PREFIX`` | empty | the deployment's subject prefix, e.g. ``acme.`` |

websocket-client is a blocking library; it cooperates with locust because locust monkey-patches the
standard library with gevent before this file is imported, so every socket here (the WebSocket and the
publisher's plain-TCP NATS connection) is a gevent socket and every lock a gevent lock. nats-py is not
used: it needs asyncio, which does not mix with gevent, and publishing needs only three protocol lines.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import gevent
import websocket
from gevent.event import AsyncResult
from locust import User, between, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

log = logging.getLogger("prism.locust")

ROOM = os.environ.get("PRISM_ROOM", "loadtest")
PUBLISH_EVENT = os.environ.get("PRISM_PUBLISH_EVENT", "chat.send")
REQUEST_EVENT = os.environ.get("PRISM_REQUEST_EVENT", "echo")
REQUEST_TIMEOUT = float(os.environ.get("PRISM_REQUEST_TIMEOUT", "10"))
NATS_URL = os.environ.get("PRISM_NATS_URL", "")
PUBLISH_RATE = float(os.environ.get("PRISM_PUBLISH_RATE", "10"))
SUBJECT_PREFIX = os.environ.get("PRISM_SUBJECT_PREFIX", "")

GATEWAY_FRAME = '{"prism":'
WELCOME_PREFIX = '{"prism":"welcome"'
CONNECT_TIMEOUT = 10.0
_user_numbers = itertools.count(1)


class PrismFrameError(Exception):
    """The gateway answered a ``ref`` with an error frame; ``str()`` is the code, so locust groups the
    failures by code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


class PrismProtocolError(Exception):
    """The gateway sent something the protocol does not allow here (for example no welcome first)."""


class ConnectionClosed(Exception):
    """The connection ended under a pending ref or a live user; ``str()`` says who closed it (and the
    gateway's close code)."""


def now_ms() -> float:
    return time.time() * 1000.0


def with_user(url: str, user: str) -> str:
    """``url`` with ``?user=<user>``, keeping (but replacing any ``user`` in) its other query parameters."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "user"]
    query.append(("user", user))
    return urlunsplit(parts._replace(query=urlencode(query)))


def delivery_latency_ms(payload: str | bytes, received_ms: float) -> float | None:
    """Latency of a delivery whose payload is a JSON object with a numeric ``"t"`` in epoch milliseconds;
    ``None`` for any other payload."""
    if isinstance(payload, bytes) or not payload.startswith("{"):
        return None
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    stamp = body.get("t") if isinstance(body, dict) else None
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        return None
    return max(0.0, received_ms - float(stamp))


class PrismUser(User):
    """One WebSocket client of Prism. ``--host`` is the WebSocket URL (or several, comma-separated)."""

    wait_time = between(0.2, 0.6)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        number = next(_user_numbers)
        self.user_id = f"locust-{os.getpid()}-{number}"
        urls = [u.strip() for u in (self.host or "").split(",") if u.strip()]
        self.url = with_user(urls[number % len(urls)], self.user_id) if urls else ""
        self.ws: websocket.WebSocket | None = None
        self.reader: Any = None  # gevent.Greenlet reading frames
        self.pending: dict[int, Any] = {}  # ref -> gevent AsyncResult, set by the reader
        self.refs = itertools.count(1)
        self.closing = False  # we are closing the connection ourselves
        self.lost = False  # the gateway closed it (or the socket broke): reconnect at the next task

    # -- lifecycle -------------------------------------------------------------------------------------

    def on_start(self) -> None:
        self.ensure_connected()

    def on_stop(self) -> None:
        self.disconnect()

    def ensure_connected(self) -> bool:
        """Connect and join unless already connected. Failures are recorded, not raised: the user tries
        again at its next task, as a real client would reconnect."""
        if self.ws is not None and self.ws.connected and not self.lost:
            return True
        self.disconnect()
        return self.connect() and self.join(ROOM)

    def connect(self) -> bool:
        if not self.url:
            raise ValueError("set --host to the gateway's WebSocket URL, e.g. ws://localhost:8080/ws")
        started = time.perf_counter()
        error: Exception | None = None
        length = 0
        try:
            ws = websocket.create_connection(self.url, timeout=CONNECT_TIMEOUT, enable_multithread=True)
            try:
                first = ws.recv()
                length = len(first)
                if not isinstance(first, str) or not first.startswith(WELCOME_PREFIX):
                    raise PrismProtocolError(f"first frame is not the welcome: {first[:80]!r}")
            except BaseException:
                ws.close()
                raise
            ws.settimeout(None)  # the reader blocks until a frame comes; pings keep the socket alive
        except Exception as exc:
            error = exc
        self.record("connect", started, length, error)
        if error is not None:
            return False
        self.ws = ws
        self.closing = self.lost = False
        self.reader = gevent.spawn(self.read_frames, ws)
        return True

    def disconnect(self) -> None:
        self.closing = True
        if self.reader is not None:  # first, so that close() is the socket's only reader
            self.reader.kill(block=True)
            self.reader = None
        if self.ws is not None:
            self.ws.close(timeout=1)  # close frame, a short wait for the gateway's, then the socket
            self.ws = None
        for waiter in self.pending.values():
            waiter.set_exception(ConnectionClosed("closed by the client"))
        self.pending.clear()

    # -- tasks -----------------------------------------------------------------------------------------

    @task(3)
    def send_event(self) -> None:
        if not self.ensure_connected():
            return
        frame = json.dumps({"event": PUBLISH_EVENT, "data": {"text": "hello from locust", "t": now_ms()}})
        started = time.perf_counter()
        error: Exception | None = None
        try:
            assert self.ws is not None
            self.ws.send(frame)
        except Exception as exc:
            error = exc
        self.record("send", started, len(frame), error)

    @task(1)
    def request(self) -> None:
        if not self.ensure_connected():
            return
        data = {"user": self.user_id, "t": now_ms()}
        self.round_trip("request", {"event": REQUEST_EVENT, "data": data})

    def join(self, room: str) -> bool:
        return self.round_trip("join", {"prism": "join", "room": room})

    # -- refs and frames -------------------------------------------------------------------------------

    def round_trip(self, name: str, frame: dict[str, Any]) -> bool:
        """Send ``frame`` with a fresh ``ref`` and wait for the ``ok`` / ``reply`` / ``error`` with that
        ref; record it as ``name``."""
        ref = next(self.refs)
        waiter = AsyncResult()
        started = time.perf_counter()
        self.pending[ref] = waiter
        text = json.dumps({**frame, "ref": ref})
        error: Exception | None = None
        length = 0
        try:
            assert self.ws is not None
            self.ws.send(text)
            answer: str = waiter.get(timeout=REQUEST_TIMEOUT)
            length = len(answer)
        except gevent.Timeout:
            error = TimeoutError(f"no answer to ref {ref} in {REQUEST_TIMEOUT}s")
        except Exception as exc:
            error = exc
        finally:
            self.pending.pop(ref, None)
        self.record(name, started, length, error)
        return error is None

    def read_frames(self, ws: websocket.WebSocket) -> None:
        """Read every frame until the socket closes (runs in its own greenlet per connection)."""
        while True:
            try:
                opcode, payload = ws.recv_data()
            except Exception as exc:
                self.connection_lost(ws, exc)
                return
            received = now_ms()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self.connection_lost(ws, ConnectionClosed(close_code(payload)))
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                text = payload.decode("utf-8", "replace")
                if text.startswith(GATEWAY_FRAME):
                    self.gateway_frame(text)
                    continue
                self.delivery(text, received)
            else:
                self.delivery(payload, received)

    def gateway_frame(self, text: str) -> None:
        frame = json.loads(text)
        ref = frame.get("ref")
        waiter = self.pending.get(ref) if isinstance(ref, int) else None
        if waiter is None:
            # An error without a ref we are waiting for (e.g. invalid_json) is still a failure to see.
            if frame.get("prism") == "error":
                error = PrismFrameError(str(frame.get("code")), str(frame.get("message")))
                report(self.environment, "WS", "unsolicited", 0.0, len(text), error)
            return
        if frame.get("prism") == "error":
            waiter.set_exception(PrismFrameError(str(frame.get("code")), str(frame.get("message"))))
        else:
            waiter.set(text)

    def delivery(self, payload: str | bytes, received_ms: float) -> None:
        latency = delivery_latency_ms(payload, received_ms)
        report(self.environment, "WS", "recv", latency or 0.0, len(payload), None)

    def connection_lost(self, ws: websocket.WebSocket, exc: Exception) -> None:
        if self.closing or ws is not self.ws:
            return  # we closed it ourselves
        report(self.environment, "WS", "close", 0.0, 0, exc)
        self.lost = True
        for waiter in self.pending.values():
            waiter.set_exception(exc)

    def record(self, name: str, started: float, length: int, error: Exception | None) -> None:
        report(self.environment, "WS", name, (time.perf_counter() - started) * 1000.0, length, error)


def report(
    environment: Environment,
    request_type: str,
    name: str,
    response_time_ms: float,
    length: int,
    error: Exception | None,
) -> None:
    """One entry in locust's statistics (a failure when ``error`` is set)."""
    environment.events.request.fire(  # type: ignore[no-untyped-call]  # locust's EventHook is unannotated
        request_type=request_type,
        name=name,
        response_time=response_time_ms,
        response_length=length,
        exception=error,
    )


def close_code(payload: bytes) -> str:
    if len(payload) < 2:
        return "closed by the gateway without a code"
    code = int.from_bytes(payload[:2], "big")
    reason = payload[2:].decode("utf-8", "replace")
    return f"closed by the gateway: {code} {reason}".rstrip()


# -- the optional publisher: timestamped messages to room.<ROOM> over plain-TCP NATS ---------------------


class NatsPublisher:
    """A minimal NATS client over a (gevent) socket: CONNECT, PUB, and PONG for the server's PINGs.

    Enough to feed the room; it does not subscribe, reconnect or speak TLS."""

    def __init__(self, url: str, environment: Environment) -> None:
        parts = urlsplit(url.split(",")[0].strip())
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 4222
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.environment = environment
        self.sock: socket.socket | None = None
        self.write_lock = threading.Lock()  # a gevent lock: the reader's PONG and PUBs must not interleave
        self.pong = AsyncResult()
        self.greenlets: list[Any] = []

    def start(self, subject: str, rate: float) -> None:
        self.greenlets.append(gevent.spawn(self.run, subject, rate))

    def stop(self) -> None:
        gevent.killall(self.greenlets, block=True)
        self.greenlets.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def run(self, subject: str, rate: float) -> None:
        started = time.perf_counter()
        try:
            self.handshake()
        except Exception as exc:
            log.error("publisher cannot connect to nats://%s:%d: %s", self.host, self.port, exc)
            self.fire("connect", started, 0, exc)
            return
        self.fire("connect", started, 0, None)
        interval = 1.0 / rate if rate > 0 else 1.0
        next_at = time.monotonic()
        for seq in itertools.count(1):
            payload = json.dumps({"t": now_ms(), "seq": seq, "source": "locust"}).encode()
            started = time.perf_counter()
            error: Exception | None = None
            try:
                self.send(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload))
            except OSError as exc:
                error = exc
            self.fire("publish", started, len(payload), error)
            if error is not None:
                return
            next_at += interval
            gevent.sleep(max(0.0, next_at - time.monotonic()))  # pacing the publisher, not synchronising

    def handshake(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        self.sock = sock
        reader = sock.makefile("rb")
        info = reader.readline()
        if not info.startswith(b"INFO "):
            raise ConnectionError(f"expected INFO from NATS, got {info[:80]!r}")
        options: dict[str, Any] = {"verbose": False, "pedantic": False, "name": "prism-locust-publisher"}
        options.update({"lang": "python-gevent", "version": "0", "protocol": 1})
        if self.user is not None:
            options.update({"user": self.user, "pass": self.password or ""})
        self.send(b"CONNECT " + json.dumps(options).encode() + b"\r\nPING\r\n")
        sock.settimeout(None)
        self.greenlets.append(gevent.spawn(self.read_loop, reader))
        self.pong.get(timeout=CONNECT_TIMEOUT)  # the server accepted CONNECT (or -ERR raised here)

    def read_loop(self, reader: Any) -> None:
        for line in iter(reader.readline, b""):
            if line.startswith(b"PING"):
                self.send(b"PONG\r\n")
            elif line.startswith(b"PONG"):
                self.pong.set(True)
            elif line.startswith(b"-ERR"):
                error = ConnectionError(line.decode(errors="replace").strip())
                log.error("NATS: %s", error)
                if not self.pong.ready():
                    self.pong.set_exception(error)
                self.fire("error", time.perf_counter(), 0, error)
            # INFO updates and +OK need no answer; we subscribe to nothing, so there is no MSG.
        if not self.pong.ready():
            self.pong.set_exception(ConnectionError("NATS closed the connection"))

    def send(self, data: bytes) -> None:
        with self.write_lock:
            if self.sock is None:
                raise ConnectionError("publisher is not connected")
            self.sock.sendall(data)

    def fire(self, name: str, started: float, length: int, error: Exception | None) -> None:
        report(self.environment, "NATS", name, (time.perf_counter() - started) * 1000.0, length, error)


_publisher: NatsPublisher | None = None


@events.test_start.add_listener  # type: ignore[untyped-decorator]  # locust's EventHook is unannotated
def start_publisher(environment: Environment, **_kwargs: Any) -> None:
    """With ``PRISM_NATS_URL`` set, publish to ``room.<ROOM>`` from one process only (never a worker)."""
    global _publisher
    if not NATS_URL or isinstance(environment.runner, WorkerRunner) or _publisher is not None:
        return
    _publisher = NatsPublisher(NATS_URL, environment)
    _publisher.start(f"{SUBJECT_PREFIX}room.{ROOM}", PUBLISH_RATE)
    log.info("publishing %s msg/s to %sroom.%s via %s", PUBLISH_RATE, SUBJECT_PREFIX, ROOM, NATS_URL)


@events.test_stop.add_listener  # type: ignore[untyped-decorator]
def stop_publisher(environment: Environment, **_kwargs: Any) -> None:
    global _publisher
    if _publisher is not None:
        _publisher.stop()
        _publisher = None
