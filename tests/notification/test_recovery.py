"""Instances as real processes: a SIGKILL mid-burst loses nothing, several instances share the work, and
SIGTERM drains and exits cleanly."""

from __future__ import annotations

import asyncio
import signal
import time

from nats.aio.client import Client as NatsClient

from notification_service.publisher import Notifier
from shared.client import PrismClient
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.notification.conftest import ProcessFactory, ServiceFactory
from tests.notification.support import Collector, holds, metric

BURST = 1000
ONLINE = [f"on{i}" for i in range(5)]
OFFLINE = [f"off{i}" for i in range(3)]
USERS = ONLINE + OFFLINE


def expected(user: str) -> set[str]:
    return {f"n-{i}" for i in range(BURST) if USERS[i % len(USERS)] == user}


async def test_sigkill_mid_burst_then_restart_delivers_every_notification(
    make_node: NodeFactory, notify_process: ProcessFactory, nc: NatsClient
) -> None:
    nodes = [await make_node(), await make_node()]
    online = {
        user: Collector(await PrismClient.connect(ws_url(nodes[i % 2]), user=user))
        for i, user in enumerate(ONLINE)
    }
    first = await notify_process(ack_wait=2.0, inbox_max_per_user=200)
    notifier = Notifier(nc.jetstream())

    async def burst() -> None:
        for i in range(BURST):
            await notifier.to_user(USERS[i % len(USERS)], f"n-{i}", {"i": i})

    publishing = asyncio.ensure_future(burst())
    await eventually(lambda: sum(len(c.unique) for c in online.values()) >= 100, what="100 delivered")
    first.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await first.wait()
    delivered_before = sum(len(c.unique) for c in online.values())
    assert delivered_before < len(ONLINE) * BURST // len(USERS)  # it died mid-burst
    await publishing
    second = await notify_process(ack_wait=2.0, inbox_max_per_user=200)
    for user, collector in online.items():
        await eventually(
            lambda c=collector, u=user: c.unique == expected(u), timeout=20, what=f"all of {user}'s"
        )
    recovered = time.monotonic() - killed_at
    js = nc.jetstream()
    await eventually(lambda: holds(js, "NOTIFICATIONS", 0), what="every notification settled")
    offline: dict[str, Collector] = {}
    for i, user in enumerate(OFFLINE):
        offline[user] = Collector(await PrismClient.connect(ws_url(nodes[i % 2]), user=user))
    for user, collector in offline.items():
        await eventually(lambda c=collector, u=user: c.unique == expected(u), what=f"{user}'s inbox")
    duplicates = sum(c.duplicates for c in [*online.values(), *offline.values()])
    print(
        f"\n{BURST} notifications, SIGKILL after {delivered_before} online deliveries: all delivered "
        f"{recovered:.1f}s after the kill (ack_wait 2s), {duplicates} duplicate(s) on the wire"
    )
    assert await holds(js, "NOTIFICATIONS_DEAD", 0)
    second.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(second.wait(), 15) == 0
    for collector in [*online.values(), *offline.values()]:
        await collector.close()


async def test_two_instances_share_the_work(
    make_node: NodeFactory, make_service: ServiceFactory, notifier: Notifier
) -> None:
    node = await make_node()
    services = [await make_service(concurrency=4), await make_service(concurrency=4)]
    users = [f"s{i}" for i in range(8)]
    collectors = [Collector(await PrismClient.connect(ws_url(node), user=u)) for u in users]
    for i in range(200):
        await notifier.to_user(users[i % len(users)], f"s-{i}", i)
    for k, collector in enumerate(collectors):
        ids = {f"s-{i}" for i in range(200) if i % len(users) == k}
        await eventually(lambda c=collector, want=ids: c.unique == want, what=f"{users[k]}'s notifications")
    shares = [metric(s, "prism_notify_delivered_total", kind="user") for s in services]
    assert sum(shares) == 200
    assert all(share > 0 for share in shares), shares
    for collector in collectors:
        await collector.close()
