"""Keepalive pings for every connection of a node from one timer, instead of one task per connection.

websockets runs a ``keepalive()`` task per connection: a Task, its coroutine frame and a sleeping timer
handle, for as long as the connection lives. With 5,000 idle connections that was 1.6 KB of the node's
RSS per connection (``prism loadtest --scenarios idle``: 16.3 KB with pings every 20 s, 14.7 KB with
pings off), a tenth of the memory budget for an idle connection.

:class:`Keepalive` keeps the connections in a ring of slots, one slot per tick of one ping interval; a
new connection joins the slot that was just pinged, so each connection is pinged once per interval and
pings are spread evenly over the interval instead of arriving in bursts. A ping whose pong has not come
``timeout`` seconds later fails its connection with 1011, as websockets' own keepalive does.

Pings go out through the connection (:meth:`gateway.io.websocket.WsConnection.ping`), which matches
each pong to its ping and times it (``latency``); only the waiting is done here, by checking whether the
ping is still unanswered when its deadline comes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable

from websockets.protocol import State

from gateway.io.outbox import LocalConn

log = logging.getLogger("prism.keepalive")

# Ticks per interval: at most a second apart (the precision of the timeout), and at least 4 per interval.
MAX_TICK = 1.0
MIN_SLOTS = 4


class Keepalive:
    """Pings each connection in :meth:`add` every ``interval`` seconds while :meth:`run` runs."""

    def __init__(self, interval: float, timeout: float, on_timeout: Callable[[LocalConn], None]) -> None:
        if interval <= 0:
            raise ValueError("keepalive interval must be positive")
        self.interval = interval
        self.timeout = timeout  # 0: ping, never fail a connection for a missing pong
        self._on_timeout = on_timeout
        count = max(MIN_SLOTS, math.ceil(interval / MAX_TICK))
        self.tick_seconds = interval / count
        self._slots: list[set[LocalConn]] = [set() for _ in range(count)]
        self._cursor = 0  # the slot the next tick pings
        self._deadlines: deque[tuple[float, LocalConn, bytes]] = deque()  # sent first, due first

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots)

    def add(self, conn: LocalConn) -> None:
        """Ping ``conn`` from about one interval from now on."""
        slot = (self._cursor - 1) % len(self._slots)
        conn.keepalive_slot = slot
        self._slots[slot].add(conn)

    def discard(self, conn: LocalConn) -> None:
        if conn.keepalive_slot >= 0:
            self._slots[conn.keepalive_slot].discard(conn)
            conn.keepalive_slot = -1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            next_tick += self.tick_seconds
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            now = loop.time()
            if now - next_tick > self.interval:  # the loop was blocked for a long while: do not catch up
                next_tick = now
            self.tick(now)

    def tick(self, now: float) -> None:
        """Fail connections whose ping is overdue, then ping the connections of the next slot."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, conn, ping = deadlines.popleft()
            if conn.ws.awaiting_pong(ping) and not conn.closing and conn.ws.state is State.OPEN:
                log.info("%s: no pong within %.1fs; closing", conn.conn_id, self.timeout)
                self._on_timeout(conn)
        slot = self._slots[self._cursor]
        self._cursor = (self._cursor + 1) % len(self._slots)
        for conn in slot:
            self._ping(conn, now)

    def _ping(self, conn: LocalConn, now: float) -> None:
        if conn.closing:
            return
        try:
            ping = conn.ws.ping()
        except Exception as exc:  # a transport closing under us: the read side will notice
            log.debug("ping to %s failed: %s", conn.conn_id, exc)
            return
        if ping is not None and self.timeout > 0:
            self._deadlines.append((now + self.timeout, conn, ping))
