"""Reading the whole presence registry in tests: every shard, every key (a scan, which services never do)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient

from shared import presence_keys as keys
from shared.presence import PresenceReader, read_values


async def reader(nc: NatsClient, bucket: str = keys.BUCKET) -> PresenceReader:
    return await PresenceReader.open(nc, bucket)


async def registry(nc: NatsClient, key_filter: str = ">", bucket: str = keys.BUCKET) -> dict[str, Any]:
    """key -> decoded value of every connection, user and room key matching ``key_filter``, in every shard."""
    layout = (await reader(nc, bucket)).layout
    js = nc.jetstream()
    found = await asyncio.gather(*(read_values(js, b, key_filter) for b in layout.shard_buckets))
    return {k: orjson.loads(v) for values in found for k, v in values.items()}


async def entry(nc: NatsClient, key_filter: str = ">", bucket: str = keys.BUCKET) -> dict[str, Any]:
    """key -> decoded value of the entry bucket's keys (``node.*``, ``layout``) matching ``key_filter``."""
    values = await read_values(nc.jetstream(), bucket, key_filter)
    return {k: orjson.loads(v) for k, v in values.items()}


async def node_keys(nc: NatsClient, node: str, bucket: str = keys.BUCKET) -> dict[str, Any]:
    """Every key of ``node``: its connections', users' and rooms' in the shards, and its own
    ``node.<node>.*`` keys in the entry bucket."""
    found: dict[str, Any] = {}
    for key_filter in keys.node_filters(node):
        found.update(await registry(nc, key_filter, bucket))
    found.update(await entry(nc, f"node.{node}.*", bucket))
    return found


def expected_keys(conns: Iterable[tuple[str, str | None, Iterable[str]]]) -> set[str]:
    """The connection, user and room keys that open connections (conn id, user, rooms) must have."""
    found: set[str] = set()
    for conn, user, rooms in conns:
        found.add(keys.conn_key(conn))
        if user is not None:
            found.add(keys.user_key(user, conn))
        found.update(keys.room_key(room, conn) for room in rooms)
    return found


async def put_keys(nc: NatsClient, values: dict[str, bytes], bucket: str = keys.BUCKET) -> None:
    """Write keys straight into the bucket that holds each (a dead node's leftovers, a forged entry)."""
    layout = (await reader(nc, bucket)).layout
    js = nc.jetstream()
    for key, value in values.items():
        await js.publish(keys.kv_subject(layout.bucket_of_key(key), key), value)
