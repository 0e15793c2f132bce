"""One contract for every PresenceStore (memory and JetStream KV): batches, filters, drops."""

from __future__ import annotations

import asyncio

from gateway.core.presence_writes import Write
from gateway.io.presence_store import PresenceStore, drop_node, read_node
from shared import presence_keys as keys


def put(store: PresenceStore, key: str, value: bytes = b"{}") -> Write:
    return Write(store.layout.bucket_of_key(key), key, value)


def purge(store: PresenceStore, key: str) -> Write:
    return Write(store.layout.bucket_of_key(key), key)


async def everything(store: PresenceStore) -> dict[str, bytes]:
    found = await asyncio.gather(*(store.read(b, ">") for b in store.layout.shard_buckets))
    return {k: v for values in found for k, v in values.items()}


async def test_puts_are_read_back_by_filter_in_their_bucket(store: PresenceStore) -> None:
    a, b = keys.user_key("alice", "n1.a"), keys.user_key("alice", "n2.b")
    other = keys.user_key("alice2", "n1.c")
    await store.apply([put(store, a, b'{"n":1}'), put(store, b), put(store, other)])
    assert await store.read(store.layout.bucket_of("alice"), keys.user_filter("alice")) == {
        a: b'{"n":1}',
        b: b"{}",
    }
    assert await store.read(store.layout.bucket_of("nobody"), keys.user_filter("nobody")) == {}


async def test_a_purge_removes_the_key_and_purging_nothing_is_fine(store: PresenceStore) -> None:
    key = keys.conn_key("n1.a")
    await store.apply([put(store, key)])
    await store.apply([purge(store, key), purge(store, keys.conn_key("n1.never"))])
    assert await everything(store) == {}


async def test_writes_of_a_batch_apply_in_order(store: PresenceStore) -> None:
    first, second = keys.room_key("lobby", "n1.a"), keys.room_key("lobby", "n1.b")
    await store.apply(
        [put(store, first), purge(store, first), purge(store, second), put(store, second, b"2")]
    )
    assert await everything(store) == {second: b"2"}


async def test_a_batch_applied_twice_ends_in_the_same_state(store: PresenceStore) -> None:
    key, gone = keys.conn_key("n1.a"), keys.conn_key("n1.b")
    batch = [put(store, gone), put(store, key, b"1"), purge(store, gone)]
    await store.apply(batch)
    once = await everything(store)
    await store.apply(batch)
    assert await everything(store) == once == {key: b"1"}


async def test_a_large_batch_is_stored_whole(store: PresenceStore) -> None:
    batch = [put(store, keys.conn_key(f"n1.c{i}"), b'{"i":%d}' % i) for i in range(3000)]
    await store.apply(batch)
    assert len(await everything(store)) == 3000


async def test_node_filters_select_exactly_one_nodes_keys(store: PresenceStore) -> None:
    mine = [keys.conn_key("n1.a"), keys.user_key("bob", "n1.a"), keys.room_key("lobby", "n1.a")]
    theirs = [keys.conn_key("n10.a"), keys.user_key("n1", "n10.a"), keys.room_key("n1", "n2.b")]
    await store.apply([put(store, k) for k in mine + theirs])
    found = await read_node(store, "n1", keys.node_filters("n1"))
    assert {key for _, key in found} == set(mine)
    assert all(bucket == store.layout.bucket_of_key(key) for bucket, key in found)


async def test_dropping_a_node_removes_its_keys_in_every_shard_and_nothing_else(store: PresenceStore) -> None:
    mine = [keys.conn_key(f"n1.c{i}") for i in range(50)] + [
        keys.room_key(f"r{i}", f"n1.c{i}") for i in range(50)
    ]
    mine += [keys.user_key(f"u{i}", f"n1.c{i}") for i in range(50)]
    theirs = [keys.conn_key("n2.a"), keys.room_key("r1", "n2.a"), keys.user_key("u1", "n2.a")]
    await store.apply([put(store, k) for k in mine + theirs])
    await drop_node(store, "n1")
    assert set(await everything(store)) == set(theirs)


async def test_a_dropped_key_can_be_written_again(store: PresenceStore) -> None:
    key = keys.conn_key("n1.a")
    await store.apply([put(store, key)])
    await drop_node(store, "n1")
    await store.apply([put(store, key, b"back")])
    assert await everything(store) == {key: b"back"}
