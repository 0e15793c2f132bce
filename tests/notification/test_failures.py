"""What the service does when a notification cannot be delivered: retries with a delay, dead letters with
a reason, and no retries at all for a malformed one."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from notification_service import core
from notification_service.publisher import Notifier
from shared.client import PrismClient
from shared.nats_connection import flush_all
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.notification.conftest import ServiceFactory
from tests.notification.support import holds, metric, next_notification

DEAD = "NOTIFICATIONS_DEAD"


async def dead_letters(nc: NatsClient, count: int) -> list[Msg]:
    """The first ``count`` dead letters, read with an ephemeral ordered consumer."""
    js = nc.jetstream()
    sub = await js.subscribe("notify.dead.>", ordered_consumer=True)
    try:
        return [await sub.next_msg(timeout=10) for _ in range(count)]
    finally:
        await sub.unsubscribe()


async def test_malformed_notifications_are_dead_lettered_at_once_with_a_reason(
    make_node: NodeFactory, make_service: ServiceFactory, nc: NatsClient
) -> None:
    node = await make_node()
    service = await make_service()
    js = nc.jetstream()
    bad: list[tuple[str, bytes, str]] = [
        ("notify.user.vic", b"not json", "invalid_json"),
        ("notify.user.vic", b'["a list"]', "not_an_object"),
        ("notify.user.vic", b'{"payload": 1}', "invalid_id"),
        ("notify.user.vic", b'{"id": "has space", "payload": 1}', "invalid_id"),
        ("notify.user.vic", b'{"id": "x-1"}', "missing_payload"),
        ("notify.user.vic", b'{"id": "x-2", "payload": 1, "ttl": -5}', "invalid_ttl"),
        ("notify.user.vic", b'{"id": "x-3", "payload": 1, "ttl": "soon"}', "invalid_ttl"),
        ("notify.user.v@c", b'{"id": "x-4", "payload": 1}', "invalid_user"),
        ("notify.room.l!bby", b'{"id": "x-5", "payload": 1}', "invalid_room"),
    ]
    for i, (subject, data, _) in enumerate(bad):
        await js.publish(subject, data, headers={core.MSG_ID: f"bad-{i}", "Trace": f"t{i}"})
    await eventually(lambda: metric(service, "prism_notify_received_total", kind="user") >= 7)
    letters = sorted(await dead_letters(nc, len(bad)), key=lambda m: int((m.headers or {})[core.H_SEQUENCE]))
    for letter, (subject, data, problem) in zip(letters, bad, strict=True):
        headers: dict[str, str] = letter.headers or {}
        assert headers[core.H_ERROR] == problem
        assert headers[core.H_SUBJECT] == subject
        assert headers[core.H_DELIVERIES] == "1"  # never retried
        assert headers[core.H_REASON]
        assert headers["Trace"].startswith("t")  # the publisher's own headers are kept
        # Not the publisher's Nats-Msg-Id: one per original message, so a repeat is stored once.
        assert headers[core.MSG_ID] == f"dead:NOTIFICATIONS:{headers[core.H_SEQUENCE]}"
        assert letter.subject == "notify.dead." + subject.removeprefix("notify.")
        assert letter.data == data
    assert "printable ASCII" in (letters[3].headers or {})[core.H_REASON]
    await eventually(lambda: holds(js, "NOTIFICATIONS", 0), what="the stream to let them go")
    assert metric(service, "prism_notify_retries_total", reason="no_receipt") == 0
    assert metric(service, "prism_notify_redelivered_total") == 0
    await eventually(lambda: metric(service, "prism_notify_dead_lettered_total", reason="invalid_ttl") == 2)
    # The service goes on.
    vic = await PrismClient.connect(ws_url(node), user="vic")
    await Notifier(js).to_user("vic", "ok-1", "fine")
    assert (await next_notification(vic))["id"] == "ok-1"
    await vic.close()


async def test_no_receipt_is_retried_with_a_delay_then_dead_lettered(
    make_service: ServiceFactory, notifier: Notifier, nc: NatsClient
) -> None:
    """A subscriber that swallows user.wendy without answering (a wedged node): every try times out."""
    seen: list[float] = []

    async def swallow(msg: Msg) -> None:
        seen.append(asyncio.get_running_loop().time())

    await nc.subscribe("user.wendy", cb=swallow)
    await flush_all(nc)
    service = await make_service(
        max_deliveries=3, receipt_timeout=0.2, retry_delay=0.3, retry_max_delay=5.0, ack_wait=2.0
    )
    await notifier.to_user("wendy", "w-1", "never confirmed")
    await eventually(lambda: metric(service, "prism_notify_backlog") == 1, what="a backlog of one")
    (letter,) = await dead_letters(nc, 1)
    headers: dict[str, Any] = letter.headers or {}
    assert headers[core.H_ERROR] == "no_receipt"
    assert headers[core.H_DELIVERIES] == "3"
    assert "no delivery receipt within 0.2s" in headers[core.H_REASON]
    assert len(seen) == 3
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert gaps[0] >= 0.2 + 0.3 - 0.05  # receipt timeout, then the retry delay
    assert gaps[1] >= 0.2 + 0.6 - 0.05  # and it doubles
    assert metric(service, "prism_notify_retries_total", reason="no_receipt") == 2
    assert metric(service, "prism_notify_redelivered_total") == 2
    await eventually(lambda: metric(service, "prism_notify_dead_lettered_total", reason="no_receipt") == 1)
    await eventually(lambda: holds(nc.jetstream(), "NOTIFICATIONS", 0), what="the stream to let it go")
    await eventually(lambda: metric(service, "prism_notify_backlog") == 0, what="no backlog")
    assert await holds(nc.jetstream(), "NOTIFICATIONS_INBOX", 0)  # not stored: it was not "offline"


async def test_a_deleted_consumer_and_streams_are_put_back(
    make_node: NodeFactory, make_service: ServiceFactory, notifier: Notifier, nc: NatsClient
) -> None:
    """As after a NATS with in-memory storage restarts empty, or an operator's mistake."""
    node = await make_node()
    await make_service()
    js = nc.jetstream()
    for stream in ("NOTIFICATIONS", "NOTIFICATIONS_INBOX", "NOTIFICATIONS_DEAD"):
        await js.delete_stream(stream)

    async def streams_back() -> bool:
        try:
            await js.consumer_info("NOTIFICATIONS", "prism-notify")
            await js.stream_info("NOTIFICATIONS_INBOX")
        except Exception:
            return False
        return True

    await eventually(streams_back, what="the streams and the consumer to be created again")
    xena = await PrismClient.connect(ws_url(node), user="xena")
    await notifier.to_user("xena", "x-1", "after the repair")
    assert (await next_notification(xena))["id"] == "x-1"
    await xena.close()
