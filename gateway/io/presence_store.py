"""Where the presence registry's keys are stored: JetStream KV buckets of the layout in
:mod:`shared.presence_keys`, or memory (for tests of what sits above).

A :class:`PresenceStore` does three things, each tested by one contract suite against both
implementations (``tests/contract/test_presence_store.py``):

- ``apply(writes)``: store a batch of puts and purges, in order, and return once every one is
  acknowledged (or raise :class:`PresenceWriteError`; some may have landed, and applying the same batch
  again is safe);
- ``read(bucket, filter)``: the current value of every key matching a server-side filter;
- ``drop(bucket, filter)``: remove every key matching a filter at once (a sweep of a dead node's keys).
  Unlike a purge per key, this leaves no marker, so a live KV watch does not see those keys go.

Removal purges a key with a short TTL on the purge marker, so watchers see it go but the bucket does not
keep a marker for every connection that ever existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from gateway.core.presence_writes import Write
from gateway.io.bus import Bus, Headers
from shared import presence_keys as keys
from shared.presence import read_values
from shared.presence_keys import Layout
from shared.startup import is_transient

log = logging.getLogger("prism.presence")

PURGE_MARKER_TTL = 60.0
# How long the server keeps the marker it leaves when a key's TTL runs out (a node's KV heartbeat).
MARKER_TTL = 60.0
# Seconds one batch waits for its acknowledgements before it counts as failed (and is sent again).
ACK_TIMEOUT = 2.0
# Writes in flight at once, over every shard: enough to keep the stream leaders busy, few enough that
# a sweep or a reconnect storm never overflows a stream's intake.
WINDOW = 1000
# A read's consumer is removed after it; if that fails, the server drops it after this many idle seconds.
READ_INACTIVE = 30.0
# A read fails if no key arrives for this long (it may take longer as a whole).
READ_PROGRESS_TIMEOUT = 5.0
# What nats-py's KeyValue.purge(key, msg_ttl=...) sends.
_PURGE_HEADERS = {"KV-Operation": "PURGE", "Nats-Rollup": "sub", "Nats-TTL": str(int(PURGE_MARKER_TTL))}
# The JetStream errors that mean "not now": no leader yet, no quorum, a timeout, no stream responding.
TRANSIENT_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


class PresenceWriteError(Exception):
    """Some writes of a batch were not acknowledged; the batch may be applied again."""


class PresenceStore(Protocol):
    layout: Layout

    async def apply(self, writes: Sequence[Write]) -> None: ...

    async def read(self, bucket: str, key_filter: str) -> dict[str, bytes]: ...

    async def drop(self, bucket: str, key_filter: str) -> None: ...


@dataclass(frozen=True, slots=True)
class BucketOptions:
    name: str = keys.BUCKET
    replicas: int = 1
    storage: str = "file"
    shards: int = keys.DEFAULT_SHARDS


class KvPresenceStore:
    """:class:`PresenceStore` over JetStream: writes are KV puts and purges sent without waiting one by
    one (``publish_async``), at most :data:`WINDOW` in flight, then awaited together.

    With a :class:`~gateway.io.bus.Bus`, reads go through it: one push consumer per read, delivering the
    last message of each matching key to an inbox the bus hands straight to a handler. That costs a few
    microseconds a key instead of nats-py's message objects and ordered-consumer bookkeeping, which is
    what lets a sweep read a node of 50,000 connections in well under its time budget."""

    def __init__(
        self, js: JetStreamContext, layout: Layout, bus: Bus | None = None, ack_timeout: float = ACK_TIMEOUT
    ) -> None:
        self.js = js
        self.layout = layout
        self.bus = bus
        self.ack_timeout = ack_timeout

    async def apply(self, writes: Sequence[Write]) -> None:
        for start in range(0, len(writes), WINDOW):
            await self._apply_window(writes[start : start + WINDOW], len(writes))

    async def _apply_window(self, writes: Sequence[Write], total: int) -> None:
        """Send ``writes`` (at most :data:`WINDOW`) back to back, then wait for their acknowledgements.

        No await in between can yield: the semaphore of ``publish_async`` always has room (the window
        before this one is settled) and nats-py only buffers, so they leave in one socket write."""
        pending: list[asyncio.Future[Any]] = []
        try:
            for write in writes:
                subject = keys.kv_subject(write.bucket, write.key)
                if write.value is None:
                    pending.append(await self.js.publish_async(subject, b"", headers=_PURGE_HEADERS))
                else:
                    pending.append(await self.js.publish_async(subject, write.value))
        except TRANSIENT_ERRORS as exc:
            _cancel(pending)
            raise PresenceWriteError(f"could not send presence writes: {exc!r}") from None
        done, late = await asyncio.wait(pending, timeout=self.ack_timeout)
        _cancel(late)
        failed = [f.exception() for f in done if f.exception() is not None]
        if late or failed:
            why = repr(failed[0]) if failed else f"{len(late)} not acknowledged within {self.ack_timeout}s"
            raise PresenceWriteError(f"presence writes failed ({len(late) + len(failed)} of {total}): {why}")

    async def read(self, bucket: str, key_filter: str) -> dict[str, bytes]:
        if self.bus is None:
            return await read_values(self.js, bucket, key_filter)
        return await self._read_through_bus(self.bus, bucket, key_filter)

    async def _read_through_bus(self, bus: Bus, bucket: str, key_filter: str) -> dict[str, bytes]:
        prefix = f"$KV.{bucket}."
        found: dict[str, bytes] = {}
        seen = 0
        expected: int | None = None
        complete = asyncio.Event()

        def on_msg(subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
            nonlocal seen
            seen += 1
            key = subject[len(prefix) :]
            if data:  # a value is never empty; a purge, a delete and a server's TTL marker are
                found[key] = bytes(data)
            else:
                found.pop(key, None)
            if expected is not None and seen >= expected:
                complete.set()

        inbox = bus.new_inbox()
        sub = await bus.subscribe(inbox, on_msg)  # before the consumer, which starts pushing at once
        name = f"prism-read-{secrets.token_hex(8)}"
        try:
            # The consumer is made on nats-py's connection, the subscription is on the bus's: the server
            # must have the SUB before it has the consumer.
            await bus.flush()
            info = await self.js.add_consumer(
                keys.kv_stream(bucket),
                ConsumerConfig(
                    name=name,
                    deliver_subject=inbox,
                    filter_subject=prefix + key_filter,
                    deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=READ_INACTIVE,
                    mem_storage=True,
                    num_replicas=1,
                ),
            )
            expected = int(info.num_pending or 0) + int(info.delivered.consumer_seq if info.delivered else 0)
            if seen >= expected:
                return found
            # Progress, not the whole read, is bounded: a large read (a room of 100,000) takes a while.
            while not complete.is_set():
                before = seen
                try:
                    await asyncio.wait_for(complete.wait(), READ_PROGRESS_TIMEOUT)
                except TimeoutError:
                    if seen == before:
                        raise TimeoutError(
                            f"read of {bucket} {key_filter} stalled at {seen}/{expected}"
                        ) from None
            return found
        finally:
            await sub.unsubscribe()
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.js.delete_consumer(keys.kv_stream(bucket), name)

    async def drop(self, bucket: str, key_filter: str) -> None:
        await self.js.purge_stream(keys.kv_stream(bucket), subject=keys.kv_subject(bucket, key_filter))


def _cancel(futures: Sequence[asyncio.Future[Any]] | set[asyncio.Future[Any]]) -> None:
    for future in futures:
        future.cancel()  # nats-py forgets a cancelled publish and frees its window slot


class MemoryPresenceStore:
    """:class:`PresenceStore` in memory: the contract suite's reference, and a fake for core tests.
    ``fail_next`` makes that many following ``apply`` calls fail after applying half their writes, as a
    batch cut off by a NATS failover would. With ``shuffle`` (a seeded ``random.Random``), each call lets
    other tasks run a random number of times first, as a real store's varying latency would."""

    def __init__(self, layout: Layout | None = None, shuffle: random.Random | None = None) -> None:
        self.layout = layout or Layout()
        self.buckets: dict[str, dict[str, bytes]] = {}
        self.fail_next = 0
        self.applied = 0  # writes applied, failed batches included
        self._shuffle = shuffle

    async def _answer_later(self) -> None:
        for _ in range(1 + (self._shuffle.randrange(8) if self._shuffle else 0)):
            await asyncio.sleep(0)

    async def apply(self, writes: Sequence[Write]) -> None:
        await self._answer_later()
        cut = len(writes) // 2 if self.fail_next else len(writes)
        for write in writes[:cut]:
            bucket = self.buckets.setdefault(write.bucket, {})
            if write.value is None:
                bucket.pop(write.key, None)
            else:
                bucket[write.key] = write.value
            self.applied += 1
        if self.fail_next:
            self.fail_next -= 1
            raise PresenceWriteError(
                f"{len(writes) - cut} of {len(writes)} presence writes failed (injected)"
            )

    async def read(self, bucket: str, key_filter: str) -> dict[str, bytes]:
        await self._answer_later()
        match = _filter_regex(key_filter)
        return {k: v for k, v in self.buckets.get(bucket, {}).items() if match.fullmatch(k)}

    async def drop(self, bucket: str, key_filter: str) -> None:
        for key in await self.read(bucket, key_filter):
            self.buckets[bucket].pop(key, None)


def _filter_regex(key_filter: str) -> re.Pattern[str]:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more tokens."""
    parts = ["[^.]+" if t == "*" else ".+" if t == ">" else re.escape(t) for t in key_filter.split(".")]
    return re.compile(r"\.".join(parts))


async def drop_node(store: PresenceStore, node: str) -> None:
    """Remove every connection, user and room key of ``node`` from every shard, a request per filter."""
    await asyncio.gather(
        *(store.drop(bucket, f) for bucket in store.layout.shard_buckets for f in keys.node_filters(node))
    )


async def read_node(store: PresenceStore, node: str, filters: Sequence[str]) -> dict[tuple[str, str], bytes]:
    """(bucket, key) -> value of every key of ``node`` matching ``filters`` (of :func:`keys.node_filters`),
    read from every shard at once."""
    buckets = store.layout.shard_buckets
    reads = [(bucket, f) for bucket in buckets for f in filters]
    found = await asyncio.gather(*(store.read(bucket, f) for bucket, f in reads))
    return {
        (bucket, key): value
        for (bucket, _), values in zip(reads, found, strict=True)
        for key, value in values.items()
    }


# -- opening the buckets ---------------------------------------------------------------------------------
async def open_layout(js: JetStreamContext, options: BucketOptions) -> tuple[Layout, dict[str, KeyValue]]:
    """Bind to the entry bucket and every shard bucket, creating what no node has yet (safe when many
    nodes race), and return the layout the entry bucket's ``layout`` key holds with a KeyValue per bucket.

    The first node writes the layout (``options.shards`` shards); every later node takes it from there,
    whatever its own setting says, so a cluster always agrees on where keys live."""
    entry = await _open_bucket(js, options.name, options)
    layout = await _agree_layout(js, entry, options)
    if layout.shards != options.shards:
        log.warning(
            "the presence bucket %s has %d shards; using them (PRISM_PRESENCE_SHARDS=%d applies only to a "
            "new registry)",
            options.name,
            layout.shards,
            options.shards,
        )
    opened = {options.name: entry}
    for bucket in layout.shard_buckets:
        opened[bucket] = await _open_bucket(js, bucket, options)
    return layout, opened


async def _agree_layout(js: JetStreamContext, entry: KeyValue, options: BucketOptions) -> Layout:
    proposed = Layout(options.name, options.shards)
    try:
        await entry.create(keys.LAYOUT_KEY, proposed.to_json())
    except nats.js.errors.KeyWrongLastSequenceError:
        found = await entry.get(keys.LAYOUT_KEY)
        return Layout.from_json(options.name, found.value or b"")
    log.info(
        "created presence layout %d with %d shards in bucket %s",
        proposed.version,
        proposed.shards,
        options.name,
    )
    await _drop_layout_1_keys(js, options.name)
    return proposed


async def _drop_layout_1_keys(js: JetStreamContext, bucket: str) -> None:
    """Layout 1 kept connection, user and room keys in the entry bucket itself. They belong to nodes of an
    older Prism that a layout-2 cluster does not sweep, so the node that creates layout 2 removes them."""
    for key_filter in ("conn.>", "user.>", "room.>"):
        await js.purge_stream(keys.kv_stream(bucket), subject=keys.kv_subject(bucket, key_filter))


async def _open_bucket(js: JetStreamContext, name: str, options: BucketOptions) -> KeyValue:
    try:
        kv = await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        return await _create_bucket(js, name, options)
    info = await js.stream_info(keys.kv_stream(name))
    if not info.config.subject_delete_marker_ttl or not info.config.allow_msg_ttl:
        log.info("switching on TTL expiry markers for the existing presence bucket %s", name)
        await js.update_stream(replace(info.config, subject_delete_marker_ttl=MARKER_TTL, allow_msg_ttl=True))
    return kv


async def _create_bucket(js: JetStreamContext, name: str, options: BucketOptions) -> KeyValue:
    config = KeyValueConfig(
        bucket=name,
        history=1,
        # The server leaves a marker when a key's TTL runs out (a node's KV heartbeat), so watchers see it go.
        limit_marker_ttl=MARKER_TTL,
        replicas=options.replicas,
        storage=StorageType.MEMORY if options.storage == "memory" else StorageType.FILE,
        description="Prism presence registry (layout: the entry bucket's 'layout' key, docs/protocol.md)",
    )
    try:
        return await js.create_key_value(config=config)
    except nats.js.errors.BadRequestError as exc:
        if is_transient(exc):  # a cluster still forming ("no suitable peers for placement"): wait
            raise
        # Another node created it first with the same or a compatible config (not found yet: still
        # being created, which the caller waits for).
        return await js.key_value(name)
