"""Delivery spans: a backend's publish carrying ``traceparent`` continues as ``prism.deliver <kind>``.

The node wraps :class:`gateway.delivery.Delivery`'s handlers in :class:`TracedDelivery` only when tracing
is on, so with it off the hot path is exactly what it was. With it on, a message without trace context
costs one header lookup; only messages that carry one get a span (the gateway continues traces, it does
not start one per delivery).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from opentelemetry.trace import Span, SpanKind, use_span
from opentelemetry.util.types import AttributeValue

from gateway.core.hub import Hub, Scope
from gateway.delivery import Delivery
from gateway.io.bus import Handler, Headers
from gateway.io.outbox import LocalConn
from shared import tracing


class TracedDelivery:
    """The handlers of a :class:`Delivery`, each wrapped in a span when the message has trace context.
    Each wrapper is made once, so the bus's per-handler dispatch cache still works."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        hub = delivery.hub
        offset = delivery.subjects.tail_offset
        self.on_conn = self._wrap("conn", delivery.on_conn, _count_conn(hub, offset("conn.")))
        self.on_user = self._wrap("user", delivery.on_user, _count_of(hub.users, offset("user.")))
        self.on_room = self._wrap("room", delivery.on_room, _count_of(hub.rooms, offset("room.")))
        self.on_broadcast = self._wrap("broadcast", delivery.on_broadcast, lambda _: len(hub.conns))

    def handler_for(self, scope: Scope) -> Handler:
        return self.on_room if scope is Scope.ROOM else self.on_user

    def _wrap(self, kind: str, handler: Handler, recipients: Callable[[str], int]) -> Handler:
        name = f"prism.deliver {kind}"
        node = self.delivery.node_id

        def traced(subject: str, reply: str, data: bytes, headers: Headers | None) -> Awaitable[None] | None:
            tracer = tracing.tracer
            parent = tracing.extract(headers) if tracer is not None else None
            if tracer is None or parent is None:
                return handler(subject, reply, data, headers)
            attributes: dict[str, AttributeValue] = {
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": subject,
                "prism.target": kind,
                "prism.recipients": recipients(subject),
                "prism.node": node,
                "prism.receipt": bool(reply),
            }
            span = tracer.start_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes)
            try:
                with use_span(span, end_on_exit=False):
                    pending = handler(subject, reply, data, headers)
            except BaseException as exc:
                span.record_exception(exc)
                span.end()
                raise
            if pending is None:
                span.end()
                return None
            return _end_after(span, pending)

        return traced


async def _end_after(span: Span, pending: Awaitable[None]) -> None:
    """The span of a delivery with a receipt ends once the receipt is published."""
    with use_span(span, end_on_exit=True):
        await pending


def _count_conn(hub: Hub[LocalConn], offset: int) -> Callable[[str], int]:
    return lambda subject: 1 if hub.get(subject[offset:]) is not None else 0


def _count_of(index: dict[str, dict[str, LocalConn]], offset: int) -> Callable[[str], int]:
    return lambda subject: len(index.get(subject[offset:], ()))
