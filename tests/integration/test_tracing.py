"""Traces across NATS: a backend's trace continues through the gateway's delivery, a client event's span
reaches the backend in the message headers, and with tracing off nothing is recorded or added."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, StatusCode

from shared import tracing
from shared.client import PrismClient
from shared.errors import RequestFailed
from shared.nats_connection import flush_all
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.integration.http_backend_support import RecordingBackend, reply, routes_file
from tests.integration.test_client_to_backend import collect
from tests.tracing_support import Traces, traces

__all__ = ["traces"]  # the fixture, imported for the tests below


def _trace_id(traceparent: str) -> int:
    return int(traceparent.split("-")[1], 16)


async def test_a_backend_trace_continues_as_the_gateway_delivery_span(
    make_node: NodeFactory, nc: NatsClient, traces: Traces
) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node), user="alice") as client:
        await client.join("lobby")
        backend = traces.provider.get_tracer("backend")
        with backend.start_as_current_span("backend publish", kind=SpanKind.PRODUCER) as parent:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            await nc.publish("room.lobby", b"hello", headers=headers)
        assert await client.receive(timeout=5) == "hello"
        spans = await eventually(lambda: traces.spans("prism.deliver room"), what="the delivery span")
    span = spans[0]
    assert span.context is not None
    assert span.parent is not None
    assert span.context.trace_id == parent.get_span_context().trace_id
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.kind is SpanKind.CONSUMER
    assert span.attributes is not None
    assert span.attributes["prism.target"] == "room"
    assert span.attributes["messaging.destination.name"] == "room.lobby"
    assert span.attributes["prism.recipients"] == 1
    assert span.attributes["prism.node"] == "node1"


async def test_a_traced_request_to_a_conn_gets_its_receipt_inside_the_delivery_span(
    make_node: NodeFactory, nc: NatsClient, traces: Traces
) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node), user="bob") as client:
        backend = traces.provider.get_tracer("backend")
        with backend.start_as_current_span("backend request") as parent:
            headers = tracing.inject()
            receipt = await nc.request(f"conn.{client.conn_id}", b"hi", timeout=5, headers=headers)
        assert orjson.loads(receipt.data) == {"node": "node1", "delivered": 1}
        assert await client.receive(timeout=5) == "hi"
        spans = await eventually(lambda: traces.spans("prism.deliver conn"), what="the delivery span")
    assert spans[0].context is not None
    assert spans[0].context.trace_id == parent.get_span_context().trace_id
    assert spans[0].attributes is not None
    assert spans[0].attributes["prism.receipt"] is True


async def test_messages_without_trace_context_get_no_span(
    make_node: NodeFactory, nc: NatsClient, traces: Traces
) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node), user="carol") as client:
        await nc.publish("user.carol", b"plain")
        assert await client.receive(timeout=5) == "plain"
    assert traces.spans() == []


async def test_a_client_event_span_reaches_the_backend_in_the_headers(
    make_node: NodeFactory, nc: NatsClient, traces: Traces
) -> None:
    node = await make_node()
    events = await collect(nc, "client.event.chat.>")

    async def echo(msg: Msg) -> None:
        assert msg.headers is not None
        await msg.respond(msg.headers.get("traceparent", "").encode())

    await nc.subscribe("client.event.echo", cb=echo)
    await flush_all(nc)
    async with await PrismClient.connect(ws_url(node), user="dave") as client:
        await client.send_event("chat.send", {"text": "hi"})
        msg = await asyncio.wait_for(events.get(), 5)
        answer = await client.request("echo", {})
    assert msg.headers is not None
    assert msg.headers["Prism-Event"] == "chat.send"  # the identity headers are all still there
    assert msg.headers["Prism-User"] == "dave"
    event_spans = traces.spans("prism.client_event chat.send")
    assert len(event_spans) == 1
    span = event_spans[0]
    assert span.context is not None
    assert _trace_id(msg.headers["traceparent"]) == span.context.trace_id
    assert msg.headers["traceparent"].split("-")[2] == format(span.context.span_id, "016x")
    assert span.kind is SpanKind.PRODUCER
    assert span.attributes is not None
    assert span.attributes["prism.event"] == "chat.send"
    request_spans = traces.spans("prism.client_event echo")
    assert len(request_spans) == 1
    assert request_spans[0].context is not None
    assert _trace_id(answer) == request_spans[0].context.trace_id
    assert request_spans[0].kind is SpanKind.CLIENT  # ended when the reply came in


async def test_a_request_nobody_answers_ends_its_span_with_the_error(
    make_node: NodeFactory, traces: Traces
) -> None:
    node = await make_node()
    async with await PrismClient.connect(ws_url(node)) as client:
        with pytest.raises(RequestFailed):
            await client.request("nobody.home", {})
    (span,) = traces.spans("prism.client_event nobody.home")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["prism.error"] == "no_responders"


async def test_with_tracing_off_nothing_is_recorded_or_added(make_node: NodeFactory, nc: NatsClient) -> None:
    assert tracing.tracer is None
    watcher = Traces()  # a provider that nobody installed: it must stay empty
    node = await make_node()
    events = await collect(nc, "client.event.>")
    async with await PrismClient.connect(ws_url(node), user="erin") as client:
        await client.join("lobby")
        with watcher.provider.get_tracer("backend").start_as_current_span("backend publish"):
            await nc.publish("room.lobby", b"traced upstream", headers=tracing.inject())
        assert await client.receive(timeout=5) == "traced upstream"
        await client.send_event("chat.send", {"text": "hi"})
        msg = await asyncio.wait_for(events.get(), 5)
    assert msg.headers is not None
    assert "traceparent" not in msg.headers
    assert [s.name for s in watcher.spans()] == ["backend publish"]


async def test_a_request_to_an_http_backend_carries_its_span_and_ends_it_with_the_outcome(
    make_node: NodeFactory, traces: Traces, tmp_path: Path
) -> None:
    http = await RecordingBackend().start()
    try:
        backend = {"name": "app", "event_url": http.url("event"), "events": ["app.*"], "unsigned": True}
        node = await make_node(http_backends_file=routes_file(tmp_path, backend))
        http.then("event", reply(200, b"{}"), reply(500))
        async with await PrismClient.connect(ws_url(node)) as client:
            await client.request("app.ok", {})
            with pytest.raises(RequestFailed):
                await client.request("app.fail", {})
    finally:
        await http.stop()
    (ok,) = traces.spans("prism.client_event app.ok")
    assert ok.context is not None
    assert _trace_id(http.of("event")[0].headers["traceparent"]) == ok.context.trace_id
    assert ok.status.status_code is not StatusCode.ERROR
    (failed,) = traces.spans("prism.client_event app.fail")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None
    assert failed.attributes["prism.error"] == "backend_error"
