"""The presence registry's key layout in the JetStream KV bucket ``presence``.

Keys (all readable by any NATS client; values are JSON):

- ``conn.<node>.<id>``         -> ``{"conn","node","user","route","remote","connected_at"}`` while open
- ``user.<user>.<node>.<id>``  -> ``{"conn","node","connected_at"}``: list a user's connections with a
  watch filtered on ``user.<user>.>``
- ``room.<room>.<node>.<id>``  -> ``{"conn","node","user","joined_at"}``: list a room with ``room.<room>.>``

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


def conn_id_from_key(key: str) -> str:
    """The conn id at the end of any presence key (its last two tokens)."""
    parts = key.rsplit(".", 2)
    return f"{parts[-2]}.{parts[-1]}"
