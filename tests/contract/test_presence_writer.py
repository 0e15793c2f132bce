"""The one presence writer of a node, over each PresenceStore: order, retries, failures, and repairs run
against concurrent connects, joins, leaves and closes (the race that must not exist)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from gateway.core import presence_writes as pw
from gateway.core.presence_writes import ConnRecord, LocalState
from gateway.io.presence_store import MemoryPresenceStore, PresenceStore
from gateway.io.presence_writer import PresenceUnavailable, PresenceWriter
from shared import presence_keys as keys
from shared.backoff import Backoff
from tests.contract.test_presence_store import everything


def record(i: int, node: str = "n1") -> ConnRecord:
    return ConnRecord(f"{node}.c{i}", node, f"u{i % 7}" if i % 3 else None, "/ws", "127.0.0.1:1", "t")


@pytest.fixture
async def writer(store: PresenceStore) -> AsyncIterator[PresenceWriter]:
    writer = PresenceWriter(store, "n1", retry_for=2.0, backoff=Backoff(base=0.001, cap=0.01))
    writer.start()
    yield writer
    await writer.stop()


class Hub:
    """What a node's sessions know, changed synchronously right before each presence operation, as
    gateway.session does."""

    def __init__(self) -> None:
        self.conns: dict[str, tuple[ConnRecord, set[str]]] = {}

    def state(self) -> list[LocalState]:
        return [LocalState(r, frozenset(rooms)) for r, rooms in self.conns.values()]


async def expected_keys(store: PresenceStore, hub: Hub) -> set[str]:
    return {key for _, key in pw.expected_writes(store.layout, hub.state(), "t")}


async def test_changes_are_stored_in_the_order_they_were_handed_over(
    store: PresenceStore, writer: PresenceWriter
) -> None:
    alice = record(1)
    done = [
        writer.register(alice),
        writer.joined(alice, "lobby"),
        writer.left(alice, "lobby"),
        writer.joined(alice, "vip"),
    ]
    await asyncio.gather(*done)
    assert set(await everything(store)) == {
        keys.conn_key(alice.conn),
        keys.user_key("u1", alice.conn),
        keys.room_key("vip", alice.conn),
    }
    await writer.unregister(alice, {"vip"})
    assert await everything(store) == {}


async def test_a_failed_batch_is_sent_again_whole() -> None:
    store = MemoryPresenceStore()
    writer = PresenceWriter(store, "n1", retry_for=5.0, backoff=Backoff(base=0.001, cap=0.01))
    writer.start()
    store.fail_next = 3  # each attempt lands half its writes, then fails
    alice = record(1)
    await asyncio.gather(writer.register(alice), writer.joined(alice, "a"), writer.left(alice, "a"))
    assert set(await everything(store)) == {keys.conn_key(alice.conn), keys.user_key("u1", alice.conn)}
    assert not writer.dirty
    await writer.stop()


async def test_writes_that_keep_failing_fail_the_change_and_ask_for_a_repair() -> None:
    store = MemoryPresenceStore()
    asked: list[bool] = []
    writer = PresenceWriter(
        store,
        "n1",
        retry_for=0.05,
        on_failure=lambda: asked.append(True),
        backoff=Backoff(base=0.001, cap=0.01),
    )
    writer.start()
    store.fail_next = 1_000_000
    with pytest.raises(PresenceUnavailable):
        await writer.register(record(1))
    assert asked == [True]
    assert writer.dirty
    store.fail_next = 0
    # The repair makes the store match what is open now: the connection that failed never opened.
    assert await writer.repair(list) == (0, 1)
    assert await everything(store) == {}
    assert not writer.dirty
    await writer.stop()


async def test_a_repair_rewrites_what_is_missing_and_purges_what_is_gone(
    store: PresenceStore, writer: PresenceWriter
) -> None:
    hub = Hub()
    kept, gone = record(1), record(2)
    await writer.register(kept)
    await writer.register(gone)
    hub.conns[kept.conn] = (kept, {"lobby"})  # joined while the store was unreachable; gone closed meanwhile
    assert await writer.repair(hub.state) == (1, 1 if gone.user is None else 2)
    assert set(await everything(store)) == await expected_keys(store, hub)
    # After a sweep that removed them all, every key is written back.
    await writer.change([pw.Write(b, k) for b, k in (await _all(store))])
    assert await writer.repair(hub.state, rewrite_all=True) == (1, 0)
    assert set(await everything(store)) == await expected_keys(store, hub)


async def _all(store: PresenceStore) -> list[tuple[str, str]]:
    return [(store.layout.bucket_of_key(k), k) for k in await everything(store)]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_repairs_racing_connects_joins_leaves_and_closes_leave_the_store_exact(
    store: PresenceStore, seed: int
) -> None:
    """Many sessions churn while repairs run among them; after every change is acknowledged, the store
    holds exactly the keys of what is open. A repair that snapshotted the open connections before
    reading the store, or ran beside the writes, would resurrect closed ones or purge live ones."""
    rng = random.Random(seed)
    if isinstance(store, MemoryPresenceStore):
        store = MemoryPresenceStore(store.layout, shuffle=random.Random(seed))
    writer = PresenceWriter(store, "n1", retry_for=2.0, backoff=Backoff(base=0.001, cap=0.01))
    writer.start()
    hub = Hub()
    rooms = ["lobby", "vip", "r1", "r2"]
    pending: list[asyncio.Future[object]] = []

    async def session(i: int) -> None:
        for _ in range(rng.randrange(0, 30)):
            await asyncio.sleep(0)  # sessions start spread over the repairs
        rec = record(i)
        hub.conns[rec.conn] = (rec, set())
        await writer.register(rec)
        for _ in range(rng.randrange(1, 6)):
            room = rng.choice(rooms)
            joined = hub.conns[rec.conn][1]
            if room in joined:
                joined.discard(room)
                await writer.left(rec, room)
            else:
                joined.add(room)
                await writer.joined(rec, room)
            await asyncio.sleep(0)
        if rng.random() < 0.6:
            _, joined = hub.conns.pop(rec.conn)
            await writer.unregister(rec, joined)

    async def repairs() -> None:
        for _ in range(30):
            pending.append(asyncio.ensure_future(writer.repair(hub.state)))
            for _ in range(rng.randrange(1, 5)):
                await asyncio.sleep(0)

    await asyncio.gather(repairs(), *(session(i) for i in range(100)))
    await asyncio.gather(*pending)
    await writer.stop()
    assert set(await everything(store)) == await expected_keys(store, hub)
    assert len(hub.conns) > 10  # the test kept live connections, not only closed ones
