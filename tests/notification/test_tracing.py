"""The notification service continues a trace from the notification's headers to the gateway's delivery."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from notification_service.core import MSG_ID
from notification_service.publisher import encode
from shared import tracing
from shared.client import PrismClient
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.notification.conftest import ServiceFactory
from tests.notification.support import next_notification
from tests.tracing_support import Traces, traces

__all__ = ["traces"]  # the fixture, imported for the test below


async def test_a_notification_trace_reaches_the_gateway_delivery(
    make_node: NodeFactory, make_service: ServiceFactory, nc: NatsClient, traces: Traces
) -> None:
    node = await make_node()
    await make_service()
    client = await PrismClient.connect(ws_url(node), user="alice")
    with traces.provider.get_tracer("backend").start_as_current_span("order shipped") as origin:
        headers = tracing.inject({MSG_ID: "n-1"})
        await nc.jetstream().publish("notify.user.alice", encode("n-1", {"title": "hi"}), headers=headers)
    assert (await next_notification(client))["id"] == "n-1"
    await client.close()
    trace_id = origin.get_span_context().trace_id
    notify = (await eventually(lambda: traces.spans("prism.notify"), what="the service's span"))[0]
    deliver = (await eventually(lambda: traces.spans("prism.deliver user"), what="the delivery span"))[0]
    assert notify.context is not None
    assert notify.context.trace_id == trace_id
    assert notify.parent is not None
    assert notify.parent.span_id == origin.get_span_context().span_id
    assert notify.attributes is not None
    assert notify.attributes["prism.outcome"] == "delivered"
    assert deliver.context is not None
    assert deliver.context.trace_id == trace_id
    assert deliver.parent is not None
    assert deliver.parent.span_id == notify.context.span_id
