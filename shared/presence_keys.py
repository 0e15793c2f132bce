"""The presence registry's layout in JetStream KV, version 2: one entry bucket and hash-sharded buckets.

One KV bucket is one stream with one leader, and that leader is the ceiling of a one-bucket registry. So
connection, user and room keys are spread over ``shards`` buckets by a documented hash of the name that
a reader looks up, and only low-rate keys stay in the entry bucket:

- entry bucket ``presence`` (any NATS client starts here):

  - ``layout``               -> ``{"version":2,"shards":16,"hash":"fnv1a32",
                                   "shard_bucket":"presence-{shard}"}``
  - ``node.<node>.alive``    -> ``{"node","started_at","connections","users","rooms"}`` with a TTL
  - ``node.<node>.info``     -> ``{"node","started_at"}``: the node has (or had) keys in the shards
  - ``node.<node>.sweep``    -> ``{"by","at"}``: held (with a TTL) by the one survivor sweeping ``<node>``

- shard buckets ``presence-0`` .. ``presence-<shards-1>``:

  - ``conn.<node>.<id>``        in shard ``h(conn id)``
    -> ``{"conn","node","user","route","remote","connected_at"}``
  - ``user.<user>.<node>.<id>`` in shard ``h(user)``     -> ``{"conn","node","connected_at"}``
  - ``room.<room>.<node>.<id>`` in shard ``h(room)``     -> ``{"conn","node","user","joined_at"}``

``h(name)`` is 32-bit FNV-1a of the name's UTF-8 bytes, modulo ``shards``. So a user's connections are
one filtered read of one bucket (``user.<user>.>``), and so are a room's members. A node's own keys are
the filters of :func:`node_filters` in every shard (a conn id starts with its node id).

Because user ids and room names are single tokens (no dots, see :mod:`shared.subjects`), ``user.alice.>``
can never match user ``alice.x``: the filters are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

BUCKET = "presence"
LAYOUT_VERSION = 2
DEFAULT_SHARDS = 16
MAX_SHARDS = 256
LAYOUT_KEY = "layout"
HASH = "fnv1a32"

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(name: str) -> int:
    """32-bit FNV-1a of ``name``'s UTF-8 bytes: the hash every reader must use to find a shard."""
    value = _FNV_OFFSET
    for byte in name.encode():
        value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return value


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each key lives: the entry bucket's name and the number of shard buckets."""

    bucket: str = BUCKET
    shards: int = DEFAULT_SHARDS
    version: int = LAYOUT_VERSION

    def shard_bucket(self, shard: int) -> str:
        return f"{self.bucket}-{shard}"

    @property
    def shard_buckets(self) -> tuple[str, ...]:
        return tuple(self.shard_bucket(i) for i in range(self.shards))

    def bucket_of(self, name: str) -> str:
        """The shard bucket of a conn id, a user id or a room name."""
        return self.shard_bucket(fnv1a32(name) % self.shards)

    def bucket_of_key(self, key: str) -> str:
        """The bucket that holds ``key`` (any key of this layout)."""
        kind, rest = key.split(".", 1)
        if kind == "conn":
            return self.bucket_of(rest)
        if kind in ("user", "room"):
            return self.bucket_of(rest.split(".", 1)[0])
        return self.bucket

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": self.version,
                "shards": self.shards,
                "hash": HASH,
                "shard_bucket": f"{self.bucket}-{{shard}}",
            }
        )

    @classmethod
    def from_json(cls, bucket: str, data: bytes) -> Layout:
        """The layout that the ``layout`` key of entry bucket ``bucket`` describes."""
        value: Any = orjson.loads(data)
        if not isinstance(value, dict) or value.get("hash") != HASH:
            raise ValueError(f"presence layout in {bucket!r} is not one this version reads: {value!r:.200}")
        version, shards = value.get("version"), value.get("shards")
        if version != LAYOUT_VERSION or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"presence layout in {bucket!r} is not one this version reads: {value!r:.200}")
        return cls(bucket, shards, version)


def conn_key(conn_id: str) -> str:
    return f"conn.{conn_id}"


def user_key(user_id: str, conn_id: str) -> str:
    return f"user.{user_id}.{conn_id}"


def room_key(room: str, conn_id: str) -> str:
    return f"room.{room}.{conn_id}"


def user_filter(user_id: str) -> str:
    return f"user.{user_id}.>"


def room_filter(room: str) -> str:
    return f"room.{room}.>"


def node_alive_key(node_id: str) -> str:
    return f"node.{node_id}.alive"


def node_info_key(node_id: str) -> str:
    return f"node.{node_id}.info"


def node_sweep_key(node_id: str) -> str:
    return f"node.{node_id}.sweep"


NODES_ALIVE_FILTER = "node.*.alive"
NODES_INFO_FILTER = "node.*.info"


def node_of_node_key(key: str) -> str:
    """``node.<node>.<kind>`` -> ``<node>``."""
    return key.split(".", 2)[1]


def node_conns_filter(node_id: str) -> str:
    return f"conn.{node_id}.*"


def node_rooms_filter(node_id: str) -> str:
    return f"room.*.{node_id}.*"


def node_users_filter(node_id: str) -> str:
    return f"user.*.{node_id}.*"


def node_filters(node_id: str) -> tuple[str, str, str]:
    """Server-side filters matching exactly the ``conn.``, ``user.`` and ``room.`` keys of one node (in
    every shard bucket)."""
    return (node_conns_filter(node_id), node_users_filter(node_id), node_rooms_filter(node_id))


def conn_id_from_key(key: str) -> str:
    """The conn id at the end of any connection, user or room key (its last two tokens)."""
    parts = key.rsplit(".", 2)
    return f"{parts[-2]}.{parts[-1]}"


def kv_subject(bucket: str, key: str) -> str:
    """The stream subject of ``key`` in ``bucket``: what a KV put publishes to."""
    return f"$KV.{bucket}.{key}"


def kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"
