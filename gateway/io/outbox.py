"""Per-connection bounded outbound queues, written with one coalesced write per connection per loop pass.

Frames queued for a connection during one pass of the event loop are written together in the next pass with
a single ``writelines``; a fan-out to N members therefore costs N list appends now and N writes later, not N
syscalls per message. While the NATS connection holds a backlog that the next passes will deliver, the write
waits for it (at most :data:`MAX_DEFERRED_PASSES` passes), so under a backlog a connection gets several
messages per system call instead of one; without one nothing waits. 1:1 delivery, where every message goes
to a different socket, gains the most (docs/benchmarks.md).

A connection whose unsent socket buffer stays over the limit after a write is a slow consumer: it is closed
with :attr:`CloseCode.SLOW_CONSUMER` and gets nothing more, so its memory is bounded by the limit plus the
messages of the few loop passes a write may wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.protocol import State

from gateway.core.framing import encode_frame
from gateway.io.websocket import WsConnection

log = logging.getLogger("prism.outbox")

# How many loop passes a write may wait while the NATS connection holds a backlog. A pass reads at most a
# few hundred KB, so this bounds both the added latency (a few ms, and only while a backlog already
# delays every message by more) and the memory held per connection.
MAX_DEFERRED_PASSES = 4


class Outgoing:
    """One message to send, framed at most once however many connections it goes to."""

    __slots__ = ("_frame", "binary", "payload")

    def __init__(self, payload: bytes, binary: bool) -> None:
        self.payload = payload
        self.binary = binary
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = encode_frame(self.payload, binary=self.binary)
        return self._frame


@dataclass(eq=False, slots=True)
class LocalConn:
    """A WebSocket connection this node owns, with its outbound queue."""

    conn_id: str
    user: str | None
    route: str
    remote: str
    ws: WsConnection
    connected_at: str
    raw_frames: bool = True  # False when an extension (permessage-deflate) was negotiated
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0
    started: bool = False  # the welcome frame is queued; nothing may be written before it
    dirty: bool = False
    closing: bool = False
    close_code: int | None = None
    inflight_requests: int = 0
    header_lines: bytes = b""  # its identity headers in NATS wire form, encoded once at open
    keepalive_slot: int = -1  # its slot in the node's Keepalive ring, -1 when not in it
    claims: bytes = b"{}"  # JSON an HTTP connect backend gave it, sent with its later HTTP backend calls


def is_open(conn: LocalConn) -> bool:
    return not conn.closing and conn.ws.state is State.OPEN


class Flusher:
    def __init__(
        self,
        max_outbound_bytes: int,
        on_slow_consumer: Callable[[LocalConn], None],
        on_written: Callable[[int, int], None],
    ) -> None:
        self.max_outbound_bytes = max_outbound_bytes
        self._on_slow_consumer = on_slow_consumer
        self._on_written = on_written  # (frames, bytes) per flush pass
        self._dirty: list[LocalConn] = []
        self._scheduled = False
        self._pass = 0  # which scheduled pass is current: a direct flush() makes an earlier one stale
        self._deferred = 0
        # Whether input that will queue more frames is already waiting (NatsBus.backlogged).
        self.backlogged: Callable[[], bool] = lambda: False
        self._after_write: list[Callable[[], None]] = []

    def send(self, conn: LocalConn, message: Outgoing) -> bool:
        """Queue ``message`` for ``conn``; False if the connection is closing and it was dropped.

        A connection whose client has just started closing still accepts (flush drops what it cannot
        write); :func:`is_open` tells the two apart where it matters, for receipts."""
        if conn.closing:
            return False
        if conn.raw_frames:
            frame = message.frame
            conn.pending.append(frame)
            conn.pending_bytes += len(frame)
        else:  # compressed: framed for this connection alone
            frame = conn.ws.encode(message.payload, message.binary)
            conn.pending.append(frame)
            conn.pending_bytes += len(frame)
        self._mark(conn)
        return True

    def send_payload(self, conn: LocalConn, payload: bytes, binary: bool) -> bool:
        """:meth:`send` for a message with one recipient."""
        if conn.closing:
            return False
        if not conn.raw_frames:
            return self.send(conn, Outgoing(payload, binary))
        frame = encode_frame(payload, binary=binary)
        conn.pending.append(frame)
        conn.pending_bytes += len(frame)
        if not conn.dirty:
            self._mark(conn)
        return True

    def start(self, conn: LocalConn, first: Outgoing) -> None:
        """Put the welcome frame ahead of anything queued before the connection was ready, and flush."""
        self.send(conn, first)
        if len(conn.pending) > 1:
            conn.pending.insert(0, conn.pending.pop())
        conn.started = True
        self._mark(conn)

    def _mark(self, conn: LocalConn) -> None:
        if not conn.dirty:
            conn.dirty = True
            self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            self._pass += 1
            asyncio.get_running_loop().call_soon(self._end_of_pass, self._pass)

    def after_write(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once what is queued now has been written (delivery latency is measured so)."""
        self._after_write.append(callback)

    def _end_of_pass(self, scheduled: int) -> None:
        if scheduled != self._pass or not self._scheduled:
            return  # flush() ran in between and wrote what this pass was for
        if self._deferred < MAX_DEFERRED_PASSES and self.backlogged():
            self._deferred += 1
            asyncio.get_running_loop().call_soon(self._end_of_pass, scheduled)
            return
        self.flush()

    def flush(self) -> None:
        """Write everything queued, now."""
        self._scheduled = False
        self._deferred = 0
        dirty, self._dirty = self._dirty, []
        frames = written = 0
        for conn in dirty:
            conn.dirty = False
            if not conn.started or not conn.pending:
                continue
            ws = conn.ws
            if conn.closing or ws.state is not State.OPEN:
                conn.pending.clear()
                conn.pending_bytes = 0
                continue
            frames += len(conn.pending)
            written += conn.pending_bytes
            try:
                unsent = ws.write(conn.pending)
            except Exception as exc:  # a transport closing under us: the read side will notice
                log.debug("write to %s failed: %s", conn.conn_id, exc)
                unsent = 0
            conn.pending = []
            conn.pending_bytes = 0
            # What the socket could not take is what the client has not read: over the limit, it is slow.
            # (Checked after writing so one burst the client absorbs at once is not mistaken for slowness.)
            if unsent > self.max_outbound_bytes:
                self._on_slow_consumer(conn)
        if frames:
            self._on_written(frames, written)
        if self._after_write:
            callbacks, self._after_write = self._after_write, []
            for callback in callbacks:
                callback()
