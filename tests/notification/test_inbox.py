"""Offline users: the inbox, its replay on the next connection (on any node), its limits, and ttl expiry."""

from __future__ import annotations

import time

from nats.aio.client import Client as NatsClient

from notification_service import core
from notification_service.publisher import Notifier
from shared.client import PrismClient
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.notification.conftest import FakeClock, ServiceFactory
from tests.notification.support import holds, metric, next_notification, notifications, stream_messages

INBOX = "NOTIFICATIONS_INBOX"


async def test_offline_user_gets_the_inbox_in_order_on_the_next_connection_once(
    make_node: NodeFactory, make_service: ServiceFactory, notifier: Notifier, nc: NatsClient
) -> None:
    node1, node2 = await make_node(), await make_node()
    service = await make_service()
    ids = [f"o-{i}" for i in range(20)]
    for i, notification_id in enumerate(ids):
        await notifier.to_user("olga", notification_id, {"n": i})
    await eventually(lambda: metric(service, "prism_notify_stored_total") == 20, what="20 stored")
    js = nc.jetstream()
    await eventually(lambda: holds(js, "NOTIFICATIONS", 0), what="acked once stored")
    assert await stream_messages(js, INBOX) == 20
    client = await PrismClient.connect(ws_url(node2), user="olga")  # any node
    got = await notifications(client, 20)
    assert [f["id"] for f in got] == ids
    assert [f["payload"] for f in got] == [{"n": i} for i in range(20)]
    await eventually(lambda: metric(service, "prism_notify_replayed_total") == 20)
    await eventually(lambda: holds(js, INBOX, 0), what="an empty inbox")  # removed once delivered
    await client.close()
    # A later connection finds an empty inbox; new notifications come live.
    again = await PrismClient.connect(ws_url(node1), user="olga")
    await notifier.to_user("olga", "o-live", "now")
    assert (await next_notification(again))["id"] == "o-live"
    await again.close()


async def test_the_inbox_keeps_the_newest_per_user_up_to_the_limit(
    make_node: NodeFactory, make_service: ServiceFactory, notifier: Notifier
) -> None:
    node = await make_node()
    service = await make_service(inbox_max_per_user=3)
    for i in range(5):
        await notifier.to_user("pia", f"p-{i}", i)
    await notifier.to_user("quinn", "q-0", "another user's inbox is separate")
    await eventually(lambda: metric(service, "prism_notify_stored_total") == 6)
    pia = await PrismClient.connect(ws_url(node), user="pia")
    assert [f["id"] for f in await notifications(pia, 3)] == ["p-2", "p-3", "p-4"]
    quinn = await PrismClient.connect(ws_url(node), user="quinn")
    assert (await next_notification(quinn))["id"] == "q-0"
    await notifier.to_user("pia", "p-live", None)  # nothing older is left before it
    assert (await next_notification(pia))["id"] == "p-live"
    await pia.close()
    await quinn.close()


async def test_the_inbox_forgets_notifications_older_than_its_max_age(
    make_node: NodeFactory, make_service: ServiceFactory, notifier: Notifier, nc: NatsClient
) -> None:
    node = await make_node()
    service = await make_service(inbox_max_age=1.0, duplicate_window=1.0)
    await notifier.to_user("rita", "r-old", "too old by the time she connects")
    await eventually(lambda: metric(service, "prism_notify_stored_total") == 1)
    js = nc.jetstream()
    await eventually(lambda: stream_messages(js, INBOX), what="the stored copy")
    # The server removes it once it is older than max_age (real time passes: this is the limit under test).
    await eventually(lambda: holds(js, INBOX, 0), timeout=10, what="max_age expiry")
    rita = await PrismClient.connect(ws_url(node), user="rita")
    await notifier.to_user("rita", "r-new", "live")
    assert (await next_notification(rita))["id"] == "r-new"
    await rita.close()


async def test_an_expired_notification_is_dropped_not_delivered_late(
    make_node: NodeFactory, make_service: ServiceFactory, notifier: Notifier, nc: NatsClient
) -> None:
    node = await make_node()
    clock = FakeClock()
    service = await make_service(clock=clock)
    sam = await PrismClient.connect(ws_url(node), user="sam")
    # In the stream: by the service's clock its ttl passed before it was taken.
    clock.offset = 120.0
    await notifier.to_user("sam", "s-expired", "stale", ttl=60)
    await notifier.to_user("sam", "s-fresh", "fresh", ttl=600)
    assert (await next_notification(sam))["id"] == "s-fresh"
    assert metric(service, "prism_notify_expired_total", where="stream") == 1
    await sam.close()
    # In the inbox: stored while offline with a ttl, expired by the time the user connects.
    clock.offset = 0.0
    await notifier.to_user("tom", "t-expiring", "soon stale", ttl=30)
    await notifier.to_user("tom", "t-keeps", "no ttl")
    await eventually(lambda: metric(service, "prism_notify_stored_total") == 2)
    raw = await nc.jetstream().get_msg(INBOX, subject="notify.inbox.tom", seq=1, direct=True, next=True)
    assert raw.headers is not None
    assert raw.headers[core.MSG_TTL] == "30s"  # the server drops it by itself too
    assert abs(float(raw.headers[core.H_EXPIRES]) - (time.time() + 30)) < 5
    clock.offset = 60.0
    tom = await PrismClient.connect(ws_url(node), user="tom")
    assert (await next_notification(tom))["id"] == "t-keeps"
    await eventually(lambda: metric(service, "prism_notify_expired_total", where="inbox") == 1)
    await eventually(lambda: holds(nc.jetstream(), INBOX, 0), what="an empty inbox")
    await tom.close()


async def test_a_store_that_races_the_users_connect_is_delivered_at_once(
    make_node: NodeFactory, make_service: ServiceFactory, nc: NatsClient
) -> None:
    """The delivery found the user offline, the user connected and got an empty replay, then the store
    landed: the service offers it to user.<id> right after storing, and removes the copy."""
    node = await make_node()
    service = await make_service()
    uma = await PrismClient.connect(ws_url(node), user="uma")
    notification = core.Notification(
        "late-1", {"x": 1}, core.Target(core.Kind.USER, "uma"), time.time(), None
    )
    assert service.worker is not None
    await service.worker.inbox.store(notification, notification.frame())
    assert (await next_notification(uma))["id"] == "late-1"
    assert metric(service, "prism_notify_replayed_total") == 1
    assert await stream_messages(nc.jetstream(), INBOX) == 0
    await uma.close()
