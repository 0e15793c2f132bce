"""Client requests to backends, all answered on one inbox subscription per node.

A request is a publish whose reply subject is ``<inbox>.<token>``, an entry in a pending table and one
timer. The answer (or the server's 503 "no responders") arrives on the node's single inbox
subscription and is handed to the connection synchronously; a timer that fires first answers
``timeout``. No task, future or per-request subscription: nats-py's ``request()`` costs several of
each, which made request/reply five times slower than the raw websockets ceiling.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.trace import Span, Status, StatusCode

from gateway.io.bus import Bus, Headers
from shared import headers as h
from shared.frames import ErrorCode, Ref

# (connection, ref, event name, reply payload or None, error code or None)
Answer = Callable[[object, Ref, str, bytes | None, ErrorCode | None], None]


@dataclass(slots=True)
class _Pending:
    conn: object
    ref: Ref
    event: str
    timer: asyncio.TimerHandle
    span: Span | None = None  # the request's span when tracing is on: ended with the answer


class RequestMux:
    def __init__(self, bus: Bus, timeout: float, answer: Answer) -> None:
        self._bus = bus
        self._timeout = timeout
        self._answer = answer
        self._pending: dict[str, _Pending] = {}
        self._tokens = itertools.count(1)
        self._prefix = ""

    async def start(self) -> None:
        self._prefix = self._bus.new_inbox() + "."
        await self._bus.subscribe(self._prefix + "*", self._on_reply)

    async def send(
        self,
        conn: object,
        subject: str,
        header_block: bytes,
        payload: bytes,
        ref: Ref,
        event: str,
        span: Span | None = None,
    ) -> None:
        """Publish the request; its answer (or error) reaches ``answer`` exactly once. ``span`` (tracing
        on) is ended with the answer, once the publish succeeded; if it fails, the caller ends it."""
        token = str(next(self._tokens))
        timer = asyncio.get_running_loop().call_later(self._timeout, self._expire, token)
        self._pending[token] = _Pending(conn, ref, event, timer, span)
        try:
            await self._bus.publish_encoded(subject, self._prefix + token, header_block, payload)
        except BaseException:
            self._pending.pop(token, None)
            timer.cancel()
            raise

    def _on_reply(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        pending = self._pending.pop(subject[len(self._prefix) :], None)
        if pending is None:
            return  # answered already: it timed out
        pending.timer.cancel()
        if headers is not None and headers.get(h.STATUS) == "503":
            end_span(pending.span, ErrorCode.NO_RESPONDERS)
            self._answer(pending.conn, pending.ref, pending.event, None, ErrorCode.NO_RESPONDERS)
        else:
            end_span(pending.span, None)
            self._answer(pending.conn, pending.ref, pending.event, data, None)

    def _expire(self, token: str) -> None:
        pending = self._pending.pop(token, None)
        if pending is not None:
            end_span(pending.span, ErrorCode.TIMEOUT)
            self._answer(pending.conn, pending.ref, pending.event, None, ErrorCode.TIMEOUT)


def end_span(span: Span | None, error: ErrorCode | None) -> None:
    """End a client request's span (tracing on), marked as failed with ``error`` if there is one."""
    if span is None:
        return
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error.value))
        span.set_attribute("prism.error", error.value)
    span.end()
