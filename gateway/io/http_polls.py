"""The first design's polling mode: each node polls an HTTP backend for messages to its own connections.

For every route a backend has a ``poll_url`` for, the node ``POST``s ``{"type":"poll","node",
"route","cursor","conns":[...]}`` (its open connections of that route; no poll while it has none) and
delivers what the answer lists to those connections. An answer with messages is followed by the next
poll at once; an empty one after ``poll_interval`` seconds (``0``: at once, for a backend that holds the
request open until it has something: long polling); a failure after a growing pause. The cursor of one
answer goes with the next poll, so a backend can keep messages until a later poll shows they arrived.
Each node polls only for its own connections, so no two nodes deliver the same message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.core.http_backends import BadAnswer, HttpBackend, poll_answer, poll_body
from gateway.io.http_backends import HttpBackends
from shared.backoff import Backoff

log = logging.getLogger("prism.http_polls")

IDLE_CHECK = 0.25  # seconds between looks for a first connection while the node has none on the route
FAILURE_BACKOFF = Backoff(base=0.5, cap=30.0)
MIN_PAUSE = 0.01  # after an empty answer, even with poll_interval 0: at most 100 empty polls a second

# The node's open connections of a route; deliver one message to one of its connections (False: gone).
ConnsOf = Callable[[str], list[str]]
Deliver = Callable[[str, bytes, bool], bool]


class HttpPolls:
    def __init__(self, backends: HttpBackends, node_id: str, conns_of: ConnsOf, deliver: Deliver) -> None:
        self.backends = backends
        self.node_id = node_id
        self.conns_of = conns_of
        self.deliver = deliver
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for backend, route in self.backends.routing.polls():
            name = f"poll {backend.name} {route}"
            self._tasks.append(asyncio.create_task(self._poll(backend, route), name=name))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _poll(self, backend: HttpBackend, route: str) -> None:
        cursor: str | None = None
        failures = FAILURE_BACKOFF.schedule()
        while True:
            conns = self.conns_of(route)
            if not conns:
                await asyncio.sleep(max(backend.poll_interval, IDLE_CHECK))
                continue
            body = poll_body(self.backends.call_id(), self.node_id, route, cursor, conns)
            result = await self.backends.call(backend, "poll", backend.poll_url, body, idempotent=True)
            try:
                if not result.ok:
                    attempt = result.attempt
                    raise BadAnswer(f"{attempt.outcome.value} {attempt.status or ''} {result.detail}".strip())
                answer = poll_answer(result.attempt.status, result.body, cursor)
            except BadAnswer as exc:
                log.warning("poll of %r for %s failed: %s", backend.name, route, exc)
                await asyncio.sleep(failures.next_delay() or FAILURE_BACKOFF.cap)
                continue
            failures.reset()
            cursor = answer.cursor
            gone = sum(
                1 for conn, payload, binary in answer.messages if not self.deliver(conn, payload, binary)
            )
            if gone:
                log.debug("poll of %r: %d message(s) for connections not open here", backend.name, gone)
            if not answer.messages:
                await asyncio.sleep(max(backend.poll_interval, MIN_PAUSE))
