"""Online delivery through real gateway nodes: users, rooms, broadcast, with a real client per device."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient

from notification_service.core import Kind, Problem, SelfRefusal
from notification_service.metrics import (
    EXPIRED_WHERE,
    NAMES,
    PROCESSING_OUTCOMES,
    RECEIVED_KINDS,
    RETRY_REASONS,
)
from notification_service.publisher import Notifier
from shared.client import PrismClient
from shared.subjects import Subjects
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually, scrape
from tests.notification.conftest import ServiceFactory
from tests.notification.support import holds, metric, next_notification, stream_messages


async def test_a_user_on_two_nodes_gets_it_on_both_and_it_is_acked_once(
    make_node: NodeFactory, make_service: ServiceFactory, notifier: Notifier, nc: NatsClient
) -> None:
    node1, node2 = await make_node(), await make_node()
    service = await make_service()
    phone = await PrismClient.connect(ws_url(node1), user="alice")
    laptop = await PrismClient.connect(ws_url(node2), user="alice")
    await notifier.to_user("alice", "n-1", {"title": "hello"})
    for client in (phone, laptop):
        frame = await next_notification(client)
        assert frame["type"] == "notification"
        assert frame["id"] == "n-1"
        assert frame["payload"] == {"title": "hello"}
        assert frame["sent_at"].endswith("Z")
    js = nc.jetstream()
    await eventually(lambda: metric(service, "prism_notify_delivered_total", kind="user") == 1)
    # Acked: the work queue lets it go (the ack may land just after the delivery is counted).
    await eventually(lambda: holds(js, "NOTIFICATIONS", 0), what="the work queue emptied")
    assert await stream_messages(js, "NOTIFICATIONS_INBOX") == 0
    assert metric(service, "prism_notify_received_total", kind="user") == 1
    assert metric(service, "prism_notify_redelivered_total") == 0
    await phone.close()
    await laptop.close()


async def test_room_members_on_every_node_get_it_and_nothing_is_kept_for_others(
    make_node: NodeFactory, make_service: ServiceFactory, notifier: Notifier, nc: NatsClient
) -> None:
    node1, node2 = await make_node(), await make_node()
    service = await make_service()
    ann = await PrismClient.connect(ws_url(node1), user="ann")
    bob = await PrismClient.connect(ws_url(node2), user="bob")
    outsider = await PrismClient.connect(ws_url(node2), user="carl")
    await ann.join("lobby")
    await bob.join("lobby")
    await notifier.to_room("lobby", "r-1", "game starts")
    for client in (ann, bob):
        frame = await next_notification(client)
        assert (frame["id"], frame["payload"], frame["room"]) == ("r-1", "game starts", "lobby")
    await notifier.to_room("empty", "r-2", "nobody here")
    await eventually(lambda: metric(service, "prism_notify_no_recipients_total", kind="room") == 1)
    await notifier.to_user("carl", "u-1", None)  # carl's next notification is this one, not a room's
    assert (await next_notification(outsider))["id"] == "u-1"
    js = nc.jetstream()
    assert await stream_messages(js, "NOTIFICATIONS_INBOX") == 0
    await eventually(lambda: metric(service, "prism_notify_delivered_total", kind="room") == 1)
    for client in (ann, bob, outsider):
        await client.close()


async def test_broadcast_reaches_every_connection_on_every_node(
    make_node: NodeFactory, make_service: ServiceFactory, notifier: Notifier
) -> None:
    node1, node2 = await make_node(), await make_node()
    service = await make_service()
    await notifier.broadcast("b-0", "nobody is connected")
    await eventually(lambda: metric(service, "prism_notify_no_recipients_total", kind="broadcast") == 1)
    clients = [
        await PrismClient.connect(ws_url(node1), user="ann"),
        await PrismClient.connect(ws_url(node2), user="bob"),
        await PrismClient.connect(ws_url(node2)),  # anonymous connections too
    ]
    await notifier.broadcast("b-1", {"maintenance": "at 22:00"})
    for client in clients:
        frame = await next_notification(client)
        assert (frame["id"], frame["payload"]) == ("b-1", {"maintenance": "at 22:00"})
        await client.close()
    await eventually(lambda: metric(service, "prism_notify_delivered_total", kind="broadcast") == 1)


async def test_every_subject_carries_the_deployment_prefix(
    make_node: NodeFactory, make_service: ServiceFactory, nc: NatsClient
) -> None:
    node = await make_node(subject_prefix="acme.")
    service = await make_service(subject_prefix="acme.", stream="ACME_NOTIFICATIONS")
    notifier = Notifier(nc.jetstream(), Subjects("acme."), stream="ACME_NOTIFICATIONS")
    await notifier.to_user("dora", "p-1", "stored while offline")
    await eventually(lambda: metric(service, "prism_notify_stored_total") == 1)
    js = nc.jetstream()
    info = await js.stream_info("ACME_NOTIFICATIONS_INBOX")
    assert info.config.subjects == ["acme.notify.inbox.*"]
    client = await PrismClient.connect(ws_url(node), user="dora")
    assert (await next_notification(client))["id"] == "p-1"
    await notifier.to_user("dora", "p-2", "online")
    assert (await next_notification(client))["id"] == "p-2"
    await client.close()


async def test_a_fresh_service_serves_every_known_labelled_series_at_0(make_service: ServiceFactory) -> None:
    service = await make_service()
    series = await asyncio.to_thread(scrape, f"http://127.0.0.1:{service.metrics_port}/metrics")
    expected = [(NAMES["received"], "kind", kind) for kind in RECEIVED_KINDS]
    expected += [(NAMES[m], "kind", kind.value) for m in ("delivered", "no_recipients") for kind in Kind]
    expected += [(NAMES["retries"], "reason", reason) for reason in RETRY_REASONS]
    expected += [(NAMES["dead_lettered"], "reason", problem.value) for problem in Problem]
    expected += [(NAMES["expired"], "where", where) for where in EXPIRED_WHERE]
    expected += [(NAMES["processing"] + "_count", "outcome", outcome) for outcome in PROCESSING_OUTCOMES]
    outcomes = ("accepted", *(refusal.value for refusal in SelfRefusal))
    expected += [(NAMES["client_requests"], "outcome", outcome) for outcome in outcomes]
    missing = [e for e in expected if series.get((e[0], frozenset({(e[1], e[2])}))) != 0]
    assert not missing, missing
    assert series[("prism_notify_received_total", frozenset({("kind", "invalid")}))] == 0
    assert series[("prism_notify_processing_seconds_count", frozenset({("outcome", "retry")}))] == 0
