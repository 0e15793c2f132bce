"""Deliveries with receipts over one wildcard reply subscription (instead of one subscription per request).

A delivery is a publish to ``user.<id>``, ``room.<name>``, ``broadcast`` or ``conn.<id>`` with a reply
subject ``<inbox>.<n>``; every gateway node that wrote it answers ``{"node","delivered"}``, and nats-server
answers "no responders" (status 503) when nobody holds the target. :meth:`Receipts.deliver` returns as soon
as one receipt says a socket was written; receipts that wrote nothing are waited past for ``window``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from notification_service.core import DeliveryResult, Outcome
from shared import headers as h
from shared import tracing


class _Pending:
    __slots__ = ("replies", "waiter")

    def __init__(self) -> None:
        self.replies: list[Msg] = []
        self.waiter: asyncio.Future[None] | None = None


class Receipts:
    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self._prefix = ""
        self._waiting: dict[str, _Pending] = {}
        self._tokens = itertools.count()
        self._sub: Any = None

    async def start(self) -> None:
        self._prefix = str(self.nc.new_inbox())
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    async def stop(self) -> None:
        if self._sub is not None and not self.nc.is_closed:
            await self._sub.unsubscribe()
        self._sub = None

    async def _on_reply(self, msg: Msg) -> None:
        pending = self._waiting.get(msg.subject)
        if pending is not None:
            pending.replies.append(msg)
            if pending.waiter is not None and not pending.waiter.done():
                pending.waiter.set_result(None)

    async def deliver(self, subject: str, data: bytes, timeout: float, window: float = 0.1) -> DeliveryResult:
        reply = f"{self._prefix}.{next(self._tokens)}"
        pending = self._waiting[reply] = _Pending()
        loop = asyncio.get_running_loop()
        try:
            try:
                # With tracing on, the gateways' delivery spans continue the current one.
                headers = tracing.inject() if tracing.tracer is not None else None
                await self.nc.publish(subject, data, reply=reply, headers=headers)
            except (nats.errors.Error, OSError) as exc:
                return DeliveryResult(Outcome.ERROR, error=str(exc) or type(exc).__name__)
            deadline = loop.time() + timeout
            delivered = 0
            answered = False
            while (msg := await _next(pending, deadline, loop)) is not None:
                if msg.headers and msg.headers.get(h.STATUS) == "503":
                    if not answered:
                        return DeliveryResult(Outcome.NO_RESPONDERS)
                    continue
                if not answered:
                    answered = True
                    deadline = min(deadline, loop.time() + window)
                delivered += _written(msg.data)
                if delivered > 0:
                    break
            if not answered:
                return DeliveryResult(Outcome.TIMEOUT)
            return DeliveryResult(Outcome.RECEIPTS, delivered)
        finally:
            del self._waiting[reply]


async def _next(pending: _Pending, deadline: float, loop: asyncio.AbstractEventLoop) -> Msg | None:
    """The next reply, or None once ``deadline`` (loop time) has passed."""
    if not pending.replies:
        if loop.time() >= deadline:
            return None
        pending.waiter = loop.create_future()
        try:
            async with asyncio.timeout_at(deadline):
                await pending.waiter
        except TimeoutError:
            return None
        finally:
            pending.waiter = None
    return pending.replies.pop(0)


def _written(data: bytes) -> int:
    try:
        receipt = orjson.loads(data)
    except orjson.JSONDecodeError:
        return 0
    count = receipt.get("delivered") if isinstance(receipt, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0
