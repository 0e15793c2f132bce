"""The presence registry's key layout in the JetStream KV bucket ``presence``.

Keys (all readable by any NATS client; values are JSON):

- ``conn.<node>.<id>``         -> ``{"conn","node","user","route","remote","connected_at"}`` while open
- ``user.<user>.<node>.<id>``  -> ``{"conn","node","connected_at"}``: list a user's connections with a
  watch filtered on ``user.<user>.>``
- ``room.<room>.<node>.<id>``  -> ``{"conn","node","user","joined_at"}``: list a room with ``room.<room>.>``
- ``node.<node>.alive``        -> ``{"node","started_at","connections","users","rooms"}``: the node's
  heartbeat, rewritten every ``node_ttl / 3`` seconds with a per-message TTL of ``node_ttl``. When it
  expires the server leaves a delete marker, which is how the survivors learn that the node died.
- ``node.<node>.info``         -> ``{"node","started_at"}``: the node has (or had) entries in the bucket.
  Written when the node starts, removed last by the sweep that purges a dead node's entries, so an
  ``info`` without an ``alive`` is a dead node whose leftovers still need sweeping.
- ``node.<node>.sweep``        -> ``{"by","at"}``: held (with a TTL) by the one survivor sweeping ``<node>``.

A node's own entries are listed by the filters of :func:`node_filters` (``conn.<node>.*``,
``user.*.<node>.*``, ``room.*.<node>.*``), because a conn id starts with its node id.

Because user ids and room names are single tokens (no dots, see :mod:`shared.subjects`), ``user.alice.>``
can never match user ``alice.x``: the filters are exact.
"""

from __future__ import annotations

BUCKET = "presence"


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


def node_conns_filter(node_id: str) -> str:
    return f"conn.{node_id}.*"


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


def node_filters(node_id: str) -> tuple[str, str, str]:
    """Server-side filters matching exactly the ``conn.``, ``user.`` and ``room.`` keys of one node."""
    return (f"conn.{node_id}.*", f"user.*.{node_id}.*", f"room.*.{node_id}.*")


def conn_id_from_key(key: str) -> str:
    """The conn id at the end of any presence key (its last two tokens)."""
    parts = key.rsplit(".", 2)
    return f"{parts[-2]}.{parts[-1]}"
