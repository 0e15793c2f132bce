"""How the node closes a client's connection: after what is already queued for it has been written, and
within ``close_timeout`` seconds even against a client that never reads.

Everything that may end a connection (a control message, an expired token, a missed pong, a drain, a
client over its rate, a recovery that cannot go on) closes it through one :class:`Closer`, which needs
nothing of the session layer: so each of them is built whole, before the sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.io.outbox import LocalConn
from shared.close_codes import CloseCode


class Closer:
    """``flush`` writes everything queued for every connection now (the node's :class:`Flusher`, which in
    turn reports slow consumers here); ``on_slow`` counts a slow consumer."""

    def __init__(
        self,
        flush: Callable[[], None],
        max_outbound_bytes: int,
        on_slow: Callable[[], None],
    ) -> None:
        self._flush = flush
        self.max_outbound_bytes = max_outbound_bytes
        self._on_slow = on_slow
        self.tasks: set[asyncio.Task[Any]] = set()  # closes under way (a drain waits for them)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def close(self, conn: LocalConn, code: int, reason: str) -> None:
        """Close ``conn`` with ``code`` once whatever is already queued for it has been written."""
        if conn.closing:
            return
        self._flush()
        self.close_now(conn, code, reason)

    def slow_consumer(self, conn: LocalConn) -> None:
        """Close ``conn`` at once (1008): it left more than ``max_outbound_bytes`` unread."""
        self._on_slow()
        limit = self.max_outbound_bytes
        self.close_now(conn, CloseCode.SLOW_CONSUMER, f"slow consumer: over {limit} bytes unread")

    def close_now(self, conn: LocalConn, code: int, reason: str) -> None:
        conn.closing = True
        conn.close_code = code
        self.spawn(self.bounded_close(conn, code, reason))

    async def bounded_close(self, conn: LocalConn, code: int, reason: str) -> None:
        """Send the close frame and wait until the connection is closed: the connection layer drops the TCP
        connection ``close_timeout`` seconds after its close frame (gateway/io/websocket.py), even against
        a client that never reads, so this wait is bounded."""
        conn.ws.close(code, reason)
        await conn.ws.wait_closed()
